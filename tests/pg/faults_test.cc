/*
 * Faults and hostile input, in real PostgreSQL clusters: each test is one
 * way courier used to hang, crash or be subverted (issue 16), and asserts
 * on what happened — the call's error, the slot's state, what the probe
 * runtime saw (tests/runtime/probe_runtime.cc) — not on how long it took.
 */
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "cluster.h"
#include "courier/ipc/stats.h"

using namespace courier::test;

namespace {

/* A probe runtime with a name (and lifecycle file) of its own. */
std::string probe_name() {
    static int n = 0;
    return "probe_" + std::to_string(getpid()) + "_" + std::to_string(++n);
}

std::string probe_setting(const std::string &name) { return "courier.runtimes = '" + name + "=" COURIER_PROBE "'"; }

std::string lifecycle(const std::string &name) {
    std::ifstream f("/tmp/courier-probe-" + name + ".log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void send(Conn &c, const std::string &sql) { ASSERT_EQ(PQsendQuery(c.raw(), sql.c_str()), 1); }

std::string state_of(Conn &admin, const Conn &session) {
    return admin.value("SELECT coalesce(min(state), 'none') FROM courier.slots() WHERE owner_pid = " +
                       std::to_string(session.backend_pid()));
}

std::int64_t stat_value(Conn &c, const std::string &name) {
    return std::stoll(c.value("SELECT value FROM courier.stats() WHERE name = '" + name + "'"));
}

pid_t worker_pid(Conn &c) { return static_cast<pid_t>(stat_value(c, "server_pid")); }

/* A started cluster with the extension created. */
std::unique_ptr<Cluster> started(const std::vector<std::string> &settings) {
    auto cl = std::make_unique<Cluster>(settings);
    EXPECT_TRUE(cl->running()) << cl->log();
    Conn c = cl->connect();
    EXPECT_TRUE(c.exec("CREATE EXTENSION courier"));
    return cl;
}

std::string events(Conn &c, const std::string &probe) {
    return c.value("SELECT convert_from(courier.call('" + probe + ".events', ''), 'UTF8')");
}

long status_kb(pid_t pid, const std::string &field) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind(field + ":", 0) == 0)
            return std::stol(line.substr(field.size() + 1));
    return -1;
}

}  // namespace

/* 1. A cancel that lands while the backend spins (or just before it parks) must end the call. */
TEST(Faults, StatementTimeoutDuringALongSpinIsNotLost) {
    const std::string probe = probe_name();
    auto cl = started({probe_setting(probe), "courier.spin_us = 500000"});
    Conn c = cl->connect();
    ASSERT_TRUE(c.exec("SET statement_timeout = '200ms'"));
    std::string error;
    EXPECT_FALSE(c.exec("SELECT courier.call('" + probe + ".hold', '60000 spun')", &error));
    EXPECT_NE(error.find("canceling statement due to statement timeout"), std::string::npos) << error;
    ASSERT_TRUE(c.exec("RESET statement_timeout"));
    std::string seen;
    eventually([&] { return (seen += events(c, probe)).find("cancel spun") != std::string::npos; }, 10);
    EXPECT_NE(seen.find("cancel spun"), std::string::npos) << seen;
    EXPECT_EQ(seen.find("done spun"), std::string::npos) << "the backend waited for the call to finish";
}

/* 2. A call cancelled while it waited for a thread must not run (an INSERT-like call must not happen). */
TEST(Faults, ACallCancelledWhileQueuedNeverRuns) {
    const std::string probe = probe_name();
    auto cl = started({probe_setting(probe), "courier.worker_threads = 1"});
    Conn admin = cl->connect();
    Conn busy = cl->connect();
    send(busy, "SELECT courier.call('" + probe + ".stuck', '1500')");
    ASSERT_TRUE(eventually([&] { return state_of(admin, busy) == "serving"; }, 10));
    Conn queued = cl->connect();
    ASSERT_TRUE(queued.exec("SET statement_timeout = '200ms'"));
    std::string error;
    EXPECT_FALSE(queued.exec("SELECT courier.call('" + probe + ".hold', '0 queued')", &error));
    EXPECT_NE(error.find("statement timeout"), std::string::npos) << error;
    EXPECT_EQ(outcome(busy), "\\x31353030");  // '1500'
    EXPECT_EQ(events(admin, probe).find("queued"), std::string::npos) << "the cancelled call ran";
    EXPECT_EQ(stat_value(admin, "calls_dropped_unstarted"), 1);
}

/* 3. A runtime that fails a call and keeps working must not hold the session's next call. */
TEST(Faults, FailingEarlyAndWorkingOnDoesNotHoldTheSession) {
    const std::string probe = probe_name();
    auto cl = started({probe_setting(probe), "courier.worker_threads = 2"});
    Conn c = cl->connect();
    std::string error;
    EXPECT_FALSE(c.exec("SELECT courier.call('" + probe + ".fail_then_stuck', '3000')", &error));
    EXPECT_NE(error.find("failed early"), std::string::npos) << error;
    ASSERT_TRUE(c.exec("SET statement_timeout = '2000ms'"));
    EXPECT_EQ(c.value("SELECT convert_from(courier.call('" + probe + ".echo', 'next'), 'UTF8')"), "next");
    EXPECT_EQ(events(c, probe).find("stuck over"), std::string::npos) << "the next call waited for the handler";
}

/* 6. Restarts never show up as corruption: calls in flight fail with the restart, bytes are always intact. */
TEST(Faults, WorkerRestartsFailCallsCleanlyAndNeverCorruptOne) {
    auto cl = started({"courier.slots = 16", "courier.worker_threads = 2"});
    Conn admin = cl->connect();
    std::atomic<bool> done{false};
    std::atomic<int> ok{0}, restarted{0};
    std::vector<std::string> unexpected;
    std::mutex mu;
    std::vector<std::thread> sessions;
    for (int s = 0; s < 8; ++s)
        sessions.emplace_back([&, s] {
            std::mt19937 rng(static_cast<unsigned>(s));
            Conn c = cl->connect();
            while (!done.load()) {
                std::string payload(rng() % 70000, '\0');
                for (auto &ch : payload)
                    ch = static_cast<char>(rng());
                std::string error;
                const auto out = c.bytea("SELECT courier.echo($1)", payload, &error);
                if (out && *out == payload) {
                    ++ok;
                } else if (!out && (error.find("courier worker") != std::string::npos)) {
                    ++restarted;
                } else {
                    std::lock_guard<std::mutex> lock(mu);
                    unexpected.push_back(out ? "wrong bytes (" + std::to_string(out->size()) + ")" : error);
                }
            }
        });
    for (int r = 0; r < 20; ++r) {
        const pid_t before = worker_pid(admin);
        ASSERT_EQ(kill(before, SIGTERM), 0);
        ASSERT_TRUE(eventually([&] { return worker_pid(admin) != before && stat_value(admin, "server_up") == 1; }, 15));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let calls run on the new worker
    }
    done = true;
    for (auto &t : sessions)
        t.join();
    EXPECT_TRUE(unexpected.empty()) << unexpected.size() << " calls failed otherwise, first: " << unexpected[0];
    EXPECT_GT(ok.load(), 0);
    /* A restart fails the calls in flight when it begins, at most one per session; calls made
     * while no worker runs wait for the next one. */
    EXPECT_LE(restarted.load(), 20 * 8);
    EXPECT_EQ(stat_value(admin, "corrupt_frames"), 0);
    EXPECT_EQ(stat_value(admin, "server_restarts"), 20);
    EXPECT_TRUE(eventually([&] { return std::stoi(admin.value("SELECT count(*) FROM courier.slots() WHERE state "
                                                              "NOT IN ('free', 'leased')")) == 0; }, 10));
    std::printf("restart test: %d calls ok, %d failed with the restart\n", ok.load(), restarted.load());
}

/* 7. A thread still inside the runtime at stop: shutdown() is skipped, never run under it. */
TEST(Faults, StopWithAThreadInsideTheRuntimeSkipsShutdown) {
    const std::string probe = probe_name();
    auto cl = started({probe_setting(probe)});
    Conn admin = cl->connect();
    Conn c = cl->connect();
    send(c, "SELECT courier.call('" + probe + ".stuck', '5000')");
    ASSERT_TRUE(eventually([&] { return state_of(admin, c) == "serving"; }, 10));
    const pid_t worker = worker_pid(admin);
    ASSERT_EQ(kill(worker, SIGTERM), 0);
    EXPECT_NE(outcome(c).find("ERROR"), std::string::npos);
    ASSERT_TRUE(eventually([&] { return cl->log().find("courier runtime not shut down: " + probe) != std::string::npos; },
                           10))
        << cl->log();
    ASSERT_TRUE(eventually([&] { return lifecycle(probe).find("stop\ninit\n") != std::string::npos; }, 15))
        << lifecycle(probe);
    EXPECT_EQ(lifecycle(probe).find("shutdown"), std::string::npos) << lifecycle(probe);
}

/* 8. Out of memory in the worker is one call's ERROR; no crash restart; no buffer pins the largest message. */
TEST(Faults, OutOfMemoryInTheWorkerFailsOneCallAndMemoryIsGivenBack) {
    {
        auto cl = started({"courier.max_message_size = '512MB'"});
        Conn c = cl->connect();
        const pid_t worker = worker_pid(c);
        const long rss_before = status_kb(worker, "VmRSS");
        EXPECT_EQ(c.value("SELECT length(courier.echo(convert_to(repeat('x', 200 * 1024 * 1024), 'UTF8')))"),
                  "209715200");
        EXPECT_LT(status_kb(worker, "VmRSS"), rss_before + 64 * 1024) << "the worker kept the 200 MiB request";
    }
    /* courier_capped caps the worker's address space 160 MiB above what it uses at start. */
    auto cl = started({"courier.max_message_size = '512MB'", "courier.runtimes = 'capped=" COURIER_CAPPED "'"});
    Conn c = cl->connect();
    const pid_t worker = worker_pid(c);
    std::string error;
    EXPECT_FALSE(c.exec("SELECT length(courier.echo(convert_to(repeat('x', 300 * 1024 * 1024), 'UTF8')))", &error));
    EXPECT_NE(error.find("out of memory in the courier worker"), std::string::npos) << error;
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('after'), 'UTF8')"), "after");
    EXPECT_EQ(worker_pid(c), worker);
    EXPECT_EQ(cl->log().find("terminating any other active server processes"), std::string::npos) << cl->log();
}

/* 9. The largest setting is what a backend can hold, and a message that size goes through. */
TEST(Faults, MaxMessageSizeIsWhatABackendCanHold) {
    {
        Cluster too_big({"courier.max_message_size = '1GB'"});
        EXPECT_FALSE(too_big.running());
        EXPECT_NE(too_big.log().find("courier.max_message_size"), std::string::npos) << too_big.log();
    }
    auto cl = started({"courier.max_message_size = '1048575kB'"});
    Conn c = cl->connect();
    EXPECT_EQ(c.value("SELECT md5(courier.echo(b)) = md5(b) FROM (SELECT convert_to(repeat('y', 600 * 1024 * 1024), "
                      "'UTF8') b) s"),
              "t");
}

/* 10. A segment another user made under the cluster's name neither stops the server nor is trusted. */
TEST(Faults, ASquattedStatsSegmentDoesNotKeepTheServerDown) {
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to act as another user";
    auto cl = started({});
    cl->stop();
    const std::string path = courier::ipc::stats_segment_path(cl->port());
    ASSERT_EQ(std::system(("runuser -u nobody -- sh -c 'umask 077; : > " + path + "'").c_str()), 0);
    ASSERT_TRUE(cl->start()) << cl->log();
    Conn c = cl->connect();
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('up'), 'UTF8')"), "up");
    EXPECT_EQ(stat_value(c, "calls"), 1);
    EXPECT_NE(cl->log().find("belongs to user \"nobody\""), std::string::npos) << cl->log();
    struct stat st {};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 0) << "the foreign file was written";
    std::filesystem::remove(path);
}

/* The runtime contract, through SQL. */
TEST(Faults, RuntimeContractMessagesAndSignals) {
    const std::string probe = probe_name();
    auto cl = started({probe_setting(probe), "courier.max_message_size = '1MB'"});
    Conn c = cl->connect();
    std::string error;
    EXPECT_FALSE(c.exec("SELECT courier.call('" + probe + ".write_then_fail', 'the real reason')", &error));
    EXPECT_NE(error.find("courier runtime error in \"" + probe + ".write_then_fail\": the real reason"),
              std::string::npos)
        << error;
    EXPECT_FALSE(c.exec("SELECT courier.call('" + probe + ".fail_nul', '')", &error));
    EXPECT_NE(error.find("before\\0after"), std::string::npos) << error;
    EXPECT_FALSE(c.exec("SELECT courier.call('" + probe + ".big', '3000000')", &error));
    EXPECT_NE(error.find("response exceeds courier.max_message_size"), std::string::npos) << error;
    EXPECT_NE(events(c, probe).find("big rc=4"), std::string::npos);  // COURIER_TOO_LARGE, not "gone"
    /* A payload of exactly max_message_size: the function name does not count against it. */
    EXPECT_TRUE(c.bytea("SELECT courier.call('" + probe + ".echo', $1)", std::string(1 << 20, 'm'), &error)) << error;
    /* Every thread but the worker's main one (pools, watcher, the runtime's own from init) blocks the signals. */
    const pid_t worker = worker_pid(c);
    int others = 0;
    for (const std::string &thread : threads_taking_postgres_signals(worker, &others))
        ADD_FAILURE() << thread;
    EXPECT_GE(others, 4 + 1 + 1);  // the pool, the watcher, the probe's timer thread
}
