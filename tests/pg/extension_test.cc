/*
 * courier in a real PostgreSQL 15 cluster: SQL functions, the worker, slot
 * lifecycle under cancel/timeouts/termination, exhaustion, worker restarts
 * and the clear errors for bad setups.
 */
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <filesystem>
#include <thread>

#include "cluster.h"
#include "courier/ipc/stats.h"
#include "courier/worker/placement.h"

using namespace courier::test;

namespace {

std::string random_string(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto &c : s)
        c = static_cast<char>(rng() & 0xff);
    return s;
}

int count_slots(Conn &c, const std::string &state) {
    return std::stoi(c.value("SELECT count(*) FROM courier.slots() WHERE state = '" + state + "'"));
}

pid_t worker_pid(Conn &c) {
    const std::string v = c.value("SELECT value FROM courier.stats() WHERE name = 'server_pid'");
    return static_cast<pid_t>(std::stol(v));
}

/* Starts a query without waiting for it. */
void send(Conn &c, const std::string &sql) { ASSERT_EQ(PQsendQuery(c.raw(), sql.c_str()), 1); }

/* Cancels what `target` runs, from the `admin` connection. */
void admin_cancel(Conn &admin, const Conn &target) {
    admin.value("SELECT pg_cancel_backend(" + std::to_string(target.backend_pid()) + ")");
}

/* Collects the outcome of a sent query: "" on success, else the error. */
std::string sent_error(Conn &c) {
    std::string error;
    while (PGresult *r = PQgetResult(c.raw())) {
        const auto st = PQresultStatus(r);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            error = PQresultErrorMessage(r);
        PQclear(r);
    }
    return error;
}

/* tests/pg's probe library, built for this server's major (scripts/test names another major's build). */
std::string probe_library() {
    const char *env = std::getenv("COURIER_PG_PROBE");
    return env != nullptr && env[0] != '\0' ? env : COURIER_PG_PROBE;
}

class Courier : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        cluster = new Cluster({"courier.slots = 8", "courier.worker_threads = 3"});
        ASSERT_TRUE(cluster->running()) << cluster->log();
        Conn c = cluster->connect();
        ASSERT_TRUE(c.ok());
        ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    }
    static void TearDownTestSuite() {
        delete cluster;
        cluster = nullptr;
    }
    static Cluster *cluster;
};
Cluster *Courier::cluster = nullptr;

}  // namespace

TEST_F(Courier, EchoesEverySizeIntactIncludingLargerThanTheRing) {
    Conn c = cluster->connect();
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{100 * 1024}, std::size_t{16 * 1024 * 1024}}) {
        const std::string payload = random_string(n, static_cast<unsigned>(n));
        std::string error;
        auto out = c.bytea("SELECT courier.echo($1)", payload, &error);
        ASSERT_TRUE(out) << n << ": " << error;
        EXPECT_EQ(out->size(), n);
        EXPECT_TRUE(*out == payload) << "payload of " << n << " bytes came back different";
    }
    /* md5 computed by the server on both sides, for a streamed message. */
    EXPECT_EQ(c.value("SELECT md5(courier.echo(b)) = md5(b) FROM (SELECT decode(repeat('c0ffee', 1000000), 'hex') b) s"), "t");
}

TEST_F(Courier, RuntimeErrorsBecomeSqlErrorsAndTheWorkerSurvives) {
    Conn c = cluster->connect();
    const pid_t before = worker_pid(c);
    ASSERT_GT(before, 0);
    std::string error;
    EXPECT_FALSE(c.exec("SELECT courier.call('no_such_fn', '')", &error));
    EXPECT_NE(error.find("unknown function \"no_such_fn\""), std::string::npos) << error;
    EXPECT_FALSE(c.exec("SELECT courier.call('fail', 'it broke')", &error));
    EXPECT_NE(error.find("courier runtime error in \"fail\": it broke"), std::string::npos) << error;
    EXPECT_FALSE(c.exec("SELECT courier.call('throw', 'kaboom')", &error));
    EXPECT_NE(error.find("exception: kaboom"), std::string::npos) << error;
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('still here'), 'UTF8')"), "still here");
    EXPECT_EQ(worker_pid(c), before);
}

TEST_F(Courier, PostmasterHasOneThreadAndTheWorkerHasItsPool) {
    Conn c = cluster->connect();
    EXPECT_EQ(thread_count(cluster->postmaster_pid()), 1);
    EXPECT_EQ(thread_count(worker_pid(c)), 1 + 3 + 1);  // main, the pool, the cancel watcher
    EXPECT_EQ(thread_count(c.backend_pid()), 1);  // backends never start threads
}

/* A polling timer would show as voluntary context switches while idle. */
TEST_F(Courier, AnIdleWorkerSleepsOnItsLatch) {
    Conn c = cluster->connect();
    c.value("SELECT courier.echo('wake up')");
    const pid_t worker = worker_pid(c);
    auto switches = [&] {
        std::ifstream f("/proc/" + std::to_string(worker) + "/status");
        std::string line;
        long total = 0;
        while (std::getline(f, line))
            if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
                total += std::stol(line.substr(24));
        return total;
    };
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the spin budget run out
    const long before = switches();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    EXPECT_LE(switches() - before, 1) << "the worker woke up with no traffic";
}

TEST_F(Courier, SharedMemoryAndStatsSegmentAreVisible) {
    Conn c = cluster->connect();
    EXPECT_EQ(c.value("SELECT count(*) FROM pg_shmem_allocations WHERE name = 'courier'"), "1");
    struct stat st{};
    const std::string seg = courier::ipc::stats_segment_path(cluster->port());
    ASSERT_EQ(stat(seg.c_str(), &st), 0) << seg;
    EXPECT_EQ(st.st_mode & 0777, 0640u);
    EXPECT_EQ(c.value("SELECT value FROM courier.stats() WHERE name = 'server_up'"), "1");
    EXPECT_EQ(c.value("SELECT value FROM courier.stats() WHERE name = 'slots'"), "8");
}

TEST_F(Courier, CancelTimeoutsAndTerminateGiveTheSlotBack) {
    Conn admin = cluster->connect();
    const std::vector<std::string> setups = {"", "SET statement_timeout = 100", "SET courier.call_timeout = 100", ""};
    for (std::size_t i = 0; i < setups.size(); ++i) {
        Conn c = cluster->connect();
        if (!setups[i].empty()) {
            ASSERT_TRUE(c.exec(setups[i]));
        }
        send(c, "SELECT courier.call('sleep', '5000')");
        ASSERT_TRUE(eventually([&] { return count_slots(admin, "serving") == 1; }, 5)) << "case " << i;
        if (i == 0)
            admin_cancel(admin, c);
        if (i == 3)
            admin.value("SELECT pg_terminate_backend(" + std::to_string(c.backend_pid()) + ")");
        const std::string err = sent_error(c);
        EXPECT_FALSE(err.empty()) << "case " << i;
        if (i == 3) {
            EXPECT_TRUE(eventually([&] { return count_slots(admin, "free") == 8; }, 5)) << "terminate";
        } else {
            /* The session keeps nothing of the abandoned call: its next call gets a fresh slot. */
            EXPECT_TRUE(eventually([&] { return count_slots(admin, "free") == 8; }, 5)) << "case " << i << ": " << err;
            EXPECT_EQ(c.value("SELECT convert_from(courier.echo('ok'), 'UTF8')"), "ok");
            EXPECT_TRUE(eventually([&] { return count_slots(admin, "leased") == 1; }, 5));  // the server lets go just after its last frame
        }
    }
    EXPECT_EQ(admin.value("SELECT value > 0 FROM courier.stats() WHERE name = 'abandons'"), "t");
}

TEST_F(Courier, FiveHundredTimeoutsLeakNoSlot) {
    Conn admin = cluster->connect();
    Conn c = cluster->connect();
    ASSERT_TRUE(c.exec("SET statement_timeout = 5"));
    int errors = 0;
    for (int i = 0; i < 500; ++i) {
        std::string error;
        if (!c.exec("SELECT courier.call('sleep', '1000')", &error))
            ++errors;
    }
    EXPECT_EQ(errors, 500);
    ASSERT_TRUE(c.exec("RESET statement_timeout"));
    EXPECT_TRUE(eventually([&] { return count_slots(admin, "free") == 8; }, 10));
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('after'), 'UTF8')"), "after");
}

TEST_F(Courier, DisablingOrLeavingGivesTheSlotBack) {
    Conn admin = cluster->connect();
    {
        Conn c = cluster->connect();
        c.value("SELECT courier.echo('x')");
        /* The thread that answered keeps the call for up to courier.spin_us (serving), then lets go. */
        EXPECT_TRUE(eventually([&] { return count_slots(admin, "leased") == 1; }, 5));
        EXPECT_EQ(admin.value("SELECT owner_pid FROM courier.slots() WHERE state = 'leased'"),
                  std::to_string(c.backend_pid()));
        ASSERT_TRUE(c.exec("SET courier.enabled = off"));
        EXPECT_EQ(count_slots(admin, "leased"), 0);
        std::string error;
        EXPECT_FALSE(c.exec("SELECT courier.echo('x')", &error));
        EXPECT_NE(error.find("courier is disabled in this session"), std::string::npos) << error;
        ASSERT_TRUE(c.exec("SET courier.enabled = on"));
        c.value("SELECT courier.echo('x')");
        EXPECT_TRUE(eventually([&] { return count_slots(admin, "leased") == 1; }, 5));
    }
    EXPECT_TRUE(eventually([&] { return count_slots(admin, "free") == 8; }, 5));
}

TEST_F(Courier, CallsRequireAGrantAndMonitoringRequiresPgMonitor) {
    Conn admin = cluster->connect();
    ASSERT_TRUE(admin.exec("CREATE ROLE app LOGIN; CREATE ROLE watcher LOGIN IN ROLE pg_monitor"));
    Conn app = cluster->connect("app");
    ASSERT_TRUE(app.ok());
    std::string error;
    EXPECT_FALSE(app.exec("SELECT courier.echo('x')", &error));
    EXPECT_NE(error.find("permission denied"), std::string::npos) << error;
    ASSERT_TRUE(admin.exec("GRANT USAGE ON SCHEMA courier TO app; GRANT EXECUTE ON FUNCTION courier.echo(bytea) TO app"));
    EXPECT_EQ(app.value("SELECT convert_from(courier.echo('x'), 'UTF8')"), "x");
    EXPECT_FALSE(app.exec("SELECT * FROM courier.stats()", &error));
    Conn watcher = cluster->connect("watcher");
    EXPECT_EQ(watcher.value("SELECT count(*) > 10 FROM courier.stats()"), "t");
}

TEST(CourierCluster, MoreSessionsThanSlotsFailAfterTheWaitWithAClearMessage) {
    Cluster cluster({"courier.slots = 2", "courier.slot_wait_timeout = 300"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn setup = cluster.connect();
    ASSERT_TRUE(setup.exec("CREATE EXTENSION courier"));
    std::vector<Conn> holders;
    for (int i = 0; i < 2; ++i) {
        holders.push_back(cluster.connect());
        holders.back().value("SELECT courier.echo('hold')");
    }
    std::vector<std::thread> extra;
    std::vector<std::string> errors(3);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
        extra.emplace_back([&, i] {
            Conn c = cluster.connect();
            std::string error;
            if (!c.exec("SELECT courier.echo('more')", &error))
                errors[static_cast<std::size_t>(i)] = error;
        });
    }
    for (auto &t : extra)
        t.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (const auto &e : errors) {
        EXPECT_NE(e.find("all 2 courier slots are in use"), std::string::npos) << e;
        EXPECT_NE(e.find("courier.slots"), std::string::npos) << e;
        EXPECT_NE(e.find("courier-config"), std::string::npos) << e;
    }
    EXPECT_LT(seconds, 30.0) << "nobody hangs";
    holders.clear();
    Conn c = cluster.connect();
    EXPECT_TRUE(eventually([&] {
        std::string error;
        return c.exec("SELECT courier.echo('now')", &error).has_value();
    }, 5));
}

TEST(CourierCluster, WorkerExitFailsWaitingCallersAndTheWorkerComesBack) {
    Cluster cluster({"courier.slots = 4"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn admin = cluster.connect();
    ASSERT_TRUE(admin.exec("CREATE EXTENSION courier"));
    const pid_t first = worker_pid(admin);
    Conn c = cluster.connect();
    send(c, "SELECT courier.call('sleep', '20000')");
    ASSERT_TRUE(eventually([&] { return count_slots(admin, "serving") == 1; }, 5));
    const auto start = std::chrono::steady_clock::now();
    ASSERT_EQ(kill(first, SIGTERM), 0);
    /* Down until the postmaster starts it again (courier's restart delay is 1 s). */
    EXPECT_TRUE(eventually([&] { return admin.value("SELECT value FROM courier.stats() WHERE name = 'server_up'") == "0"; }, 5));
    const std::string err = sent_error(c);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    /* Either the runtime saw cancelled() and the call failed at once, or the
     * new worker's epoch failed it: an ERROR in both cases, never a hang. */
    EXPECT_NE(err.find("courier worker"), std::string::npos) << err;
    EXPECT_LT(seconds, 5.0);
    ASSERT_TRUE(eventually([&] { return worker_pid(admin) > 0 && worker_pid(admin) != first; }, 10));
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('back'), 'UTF8')"), "back");
    EXPECT_EQ(admin.value("SELECT value FROM courier.stats() WHERE name = 'server_restarts'"), "1");
    EXPECT_NE(cluster.log().find("courier worker shutting down"), std::string::npos);
    EXPECT_TRUE(eventually([&] { return count_slots(admin, "free") == 3; }, 5));  // c holds one
}

/* Between a worker's exit and its successor's start, a new call waits for the successor: no server ever saw it. */
TEST(CourierCluster, ACallMadeWhileTheWorkerIsDownIsServedByItsSuccessor) {
    Cluster cluster({"courier.slots = 4"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn admin = cluster.connect();
    ASSERT_TRUE(admin.exec("CREATE EXTENSION courier"));
    Conn c = cluster.connect();
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('before'), 'UTF8')"), "before");  // c holds its slot
    const pid_t first = worker_pid(admin);
    ASSERT_EQ(kill(first, SIGTERM), 0);
    ASSERT_TRUE(eventually([&] { return kill(first, 0) != 0; }, 10));  // reaped; the successor starts 1 s later
    ASSERT_EQ(admin.value("SELECT value FROM courier.stats() WHERE name = 'server_up'"), "0");
    std::string error;
    const auto out = c.exec("SELECT convert_from(courier.echo('during'), 'UTF8')", &error);
    ASSERT_TRUE(out.has_value()) << error;
    EXPECT_STREQ(PQgetvalue(out->get(), 0, 0), "during");
    EXPECT_NE(worker_pid(admin), first);
    EXPECT_EQ(admin.value("SELECT value FROM courier.stats() WHERE name = 'server_restarts'"), "1");
}

/* courier/pg_guard.h: C++ exceptions become ERRORs, a PostgreSQL ERROR unwinds C++ frames, the session lives on. */
TEST(CourierCluster, TheGuardTurnsExceptionsIntoErrorsAndErrorsIntoUnwinding) {
    Cluster cluster(std::vector<std::string>{});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    const std::string lib = probe_library();
    ASSERT_TRUE(c.exec("CREATE FUNCTION guard_throw(text) RETURNS void AS '" + lib + "' LANGUAGE C STRICT"));
    ASSERT_TRUE(c.exec("CREATE FUNCTION guard_pg_error() RETURNS text AS '" + lib + "' LANGUAGE C"));
    ASSERT_TRUE(c.exec("CREATE FUNCTION guard_destructors() RETURNS int AS '" + lib + "' LANGUAGE C"));
    ASSERT_TRUE(c.exec("CREATE FUNCTION failure(q text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; "
                       "RETURN 'no error'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$"));
    EXPECT_EQ(c.value("SELECT failure('SELECT guard_throw(''runtime_error'')')"), "XX000 courier: thrown by C++");
    EXPECT_EQ(c.value("SELECT failure('SELECT guard_throw(''bad_alloc'')')"), "53200 courier: out of memory");
    EXPECT_EQ(c.value("SELECT failure('SELECT guard_throw(''int'')')"),
              "XX000 courier: an exception of unknown type");
    EXPECT_EQ(c.value("SELECT failure('SELECT guard_pg_error()')"), "22012 raised by PostgreSQL under C++");
    EXPECT_EQ(c.value("SELECT guard_destructors()"), "4") << "every C++ frame unwound, the longjmp's too";
    EXPECT_EQ(c.value("SELECT 1"), "1");
    EXPECT_EQ(cluster.log().find("terminating any other active server processes"), std::string::npos)
        << cluster.log();
}

/*
 * The Waker conformance suite (tests/waker) on the latch waker, in backends:
 * one checks the contract on its own latch, then two take 2000 turns each,
 * parking on their latches with no spinning, each woken by the other's SetLatch.
 */
TEST(CourierCluster, TheLatchWakerKeepsTheWakerContract) {
    Cluster cluster(std::vector<std::string>{});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn a = cluster.connect(), b = cluster.connect();
    const std::string lib = probe_library();
    ASSERT_TRUE(a.exec("CREATE FUNCTION waker_conformance() RETURNS text AS '" + lib + "' LANGUAGE C"));
    ASSERT_TRUE(a.exec("CREATE FUNCTION waker_turns_create(text) RETURNS void AS '" + lib + "' LANGUAGE C STRICT"));
    ASSERT_TRUE(a.exec("CREATE FUNCTION waker_take_turns(text, int, int) RETURNS text AS '" + lib +
                       "' LANGUAGE C STRICT"));
    ASSERT_TRUE(a.exec("CREATE FUNCTION waker_turns_drop(text) RETURNS void AS '" + lib + "' LANGUAGE C STRICT"));
    EXPECT_EQ(a.value("SELECT waker_conformance()"), "");

    const std::string table = "'/courier-turns-" + std::to_string(cluster.port()) + "'";
    a.exec("SELECT waker_turns_drop(" + table + ")");
    ASSERT_TRUE(a.exec("SELECT waker_turns_create(" + table + ")"));
    send(a, "SELECT waker_take_turns(" + table + ", 0, 2000)");
    send(b, "SELECT waker_take_turns(" + table + ", 1, 2000)");
    const std::string first = outcome(a), second = outcome(b);
    a.exec("SELECT waker_turns_drop(" + table + ")");
    EXPECT_EQ(first.rfind("ok, ", 0), 0u) << first;
    EXPECT_EQ(second.rfind("ok, ", 0), 0u) << second;
    EXPECT_NE(first, "ok, 0 parks") << "with no spin budget, the exchange must go through the latches";
    EXPECT_NE(second, "ok, 0 parks");
}

TEST(CourierCluster, WorkerSigkillRestartsPostgresAndCallsWorkAfterwards) {
    Cluster cluster({"courier.slots = 4"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    pid_t worker;
    {
        Conn admin = cluster.connect();
        ASSERT_TRUE(admin.exec("CREATE EXTENSION courier"));
        admin.value("SELECT courier.echo('before')");
        worker = worker_pid(admin);
    }
    ASSERT_EQ(kill(worker, SIGKILL), 0);
    ASSERT_TRUE(eventually([&] {
        Conn c = cluster.connect();
        if (!c.ok())
            return false;
        std::string error;
        auto r = c.exec("SELECT courier.echo('after')", &error);
        return r.has_value();
    }, 30)) << cluster.log();
    EXPECT_NE(cluster.log().find("terminating any other active server processes"), std::string::npos);
}

/* A library that is not there stops the server at once, naming it; one that fails to load fails every call. */
TEST(CourierCluster, AMissingRuntimeStopsTheServerAndABrokenOneFailsEveryCall) {
    {
        Cluster missing({"courier.runtimes = 'no_such_runtime'"});
        EXPECT_FALSE(missing.running());
        EXPECT_NE(missing.log().find("cannot read library"), std::string::npos) << missing.log();
        EXPECT_NE(missing.log().find("no_such_runtime.so"), std::string::npos) << missing.log();
    }
    /* Not a courier runtime at all: the server starts, the worker says why, every call fails with it. */
    Cluster broken({"courier.runtimes = 'broken=courier'"});  // courier.so itself: a library, not a runtime
    ASSERT_TRUE(broken.running()) << broken.log();
    Conn c = broken.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    std::string error;
    EXPECT_FALSE(c.exec("SELECT courier.echo('x')", &error));
    EXPECT_NE(error.find("courier worker failed the call"), std::string::npos) << error;
    EXPECT_NE(error.find("exports neither courier_runtime_v2 nor courier_runtime_v1"), std::string::npos) << error;
    EXPECT_EQ(c.value("SELECT value FROM courier.stats() WHERE name = 'runtime.broken.loaded'"), "0");
}

TEST(CourierCluster, TheObsoleteRuntimeSettingStillWorksWithAWarning) {
    Cluster cluster({"courier.runtime = 'courier_echo'"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    EXPECT_EQ(c.value("SELECT convert_from(courier.call('courier_echo.echo', 'old'), 'UTF8')"), "old");
    EXPECT_NE(cluster.log().find("courier.runtime is obsolete; use courier.runtimes = 'courier_echo'"),
              std::string::npos);
}

/* No worker slot left: the log names courier and the setting, and calls say so instead of hanging. */
TEST(CourierCluster, NoWorkerSlotIsNamedInTheLogAndFailsCalls) {
    Cluster cluster({"max_worker_processes = 0"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    EXPECT_NE(cluster.log().find("courier could not register its background worker: max_worker_processes (0)"),
              std::string::npos) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    std::string error;
    EXPECT_FALSE(c.exec("SELECT courier.echo('x')", &error));
    EXPECT_NE(error.find("the courier worker has not started"), std::string::npos) << error;
}

/* With a slot, the warning must not appear (the registered list is walked, not guessed). */
TEST(CourierCluster, ARegisteredWorkerIsNotReportedMissing) {
    Cluster cluster(std::vector<std::string>{});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    EXPECT_EQ(cluster.log().find("could not register its background worker"), std::string::npos) << cluster.log();
}

TEST(CourierCluster, MessageAboveTheMaximumIsRefused) {
    Cluster cluster({"courier.max_message_size = '1MB'"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    std::string error;
    EXPECT_FALSE(c.bytea("SELECT courier.echo($1)", std::string(2 << 20, 'x'), &error));
    EXPECT_NE(error.find("courier.max_message_size"), std::string::npos) << error;
    EXPECT_TRUE(c.bytea("SELECT courier.echo($1)", std::string(512 << 10, 'x'), &error)) << error;
}

TEST(CourierCluster, WithoutPreloadCreateExtensionSaysHowToFixIt) {
    Cluster cluster({}, /*preload=*/false);
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    std::string error;
    EXPECT_FALSE(c.exec("CREATE EXTENSION courier", &error));
    EXPECT_NE(error.find("courier must be loaded via shared_preload_libraries"), std::string::npos) << error;
}

/*
 * Another extension built against courier/courier.h, in a server where courier is not preloaded:
 * it loads, and its first call gets courier's own ERROR with what to do, not "undefined symbol".
 */
TEST(CourierCluster, AnotherExtensionWithoutCourierPreloadedGetsCouriersExplanation) {
    Cluster cluster({}, /*preload=*/false);
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    std::string error;
    ASSERT_TRUE(c.exec("CREATE FUNCTION rtt(text, int, int, OUT float8, OUT float8, OUT float8, OUT float8) "
                       "AS 'courier_bench', 'courier_bench_rtt' LANGUAGE C STRICT", &error)) << error;
    EXPECT_FALSE(c.exec("SELECT * FROM rtt('courier', 64, 1)", &error));
    EXPECT_NE(error.find("courier must be loaded via shared_preload_libraries"), std::string::npos) << error;
    EXPECT_EQ(error.find("undefined symbol"), std::string::npos) << error;
}

TEST(CourierCluster, StatsSegmentIsRemovedAtShutdown) {
    std::string seg;
    {
        Cluster cluster;
        ASSERT_TRUE(cluster.running()) << cluster.log();
        seg = courier::ipc::stats_segment_path(cluster.port());
        struct stat st{};
        EXPECT_EQ(stat(seg.c_str(), &st), 0);
        cluster.stop();
    }
    struct stat st{};
    EXPECT_NE(stat(seg.c_str(), &st), 0) << seg << " is still there";
}

/* Every released version updates to this one, and the SQL API and the counters work after it. */
TEST(CourierCluster, ReleasedVersionsUpdateToThisOne) {
    Cluster cluster;
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier VERSION '0.1.0'"));
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('old'), 'UTF8')"), "old");
    std::string error;
    ASSERT_TRUE(c.exec("ALTER EXTENSION courier UPDATE", &error)) << error;
    EXPECT_EQ(c.value("SELECT extversion FROM pg_extension WHERE extname = 'courier'"),
              c.value("SELECT default_version FROM pg_available_extensions WHERE name = 'courier'"));
    EXPECT_NE(c.value("SELECT extversion FROM pg_extension WHERE extname = 'courier'"), "0.1.0");
    EXPECT_EQ(c.value("SELECT convert_from(courier.call('sleep', '1'), 'UTF8')"), "1");
    EXPECT_EQ(c.value("SELECT value FROM courier.stats() WHERE name = 'calls'"), "2");
    EXPECT_EQ(c.value("SELECT value FROM courier.stats() WHERE name = 'runtime.courier_echo.calls'"), "2");
    EXPECT_TRUE(eventually([&] { return c.value("SELECT count(*) FROM courier.slots() WHERE state = 'leased'") == "1"; }, 5));
    EXPECT_NE(c.value("SELECT obj_description('courier.slots()'::regprocedure)").find("serving"), std::string::npos);
}

/* Every way a call can end early leaves the call counters and the latency histogram right. */
TEST(CourierCluster, EveryEarlyReturnKeepsTheMetricsRight) {
    Cluster cluster({"courier.max_message_size = '1MB'", "courier.slots = 2", "courier.slot_wait_timeout = 200"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    auto stat = [&](const std::string &name) { return std::stoll(c.value("SELECT value FROM courier.stats() WHERE name = '" + name + "'")); };
    struct Counts {
        long long calls, errors, latency_ns;
    };
    auto now = [&] { return Counts{stat("calls"), stat("call_errors"), stat("call_latency_sum_ns")}; };
    std::string error;
    /* Refused as too large before anything is sent: a failed call, of no time at all. */
    Counts before = now();
    EXPECT_FALSE(c.bytea("SELECT courier.echo($1)", std::string(2 << 20, 'x'), &error));
    Counts after = now();
    EXPECT_EQ(after.calls - before.calls, 1);
    EXPECT_EQ(after.errors - before.errors, 1);
    EXPECT_LT(after.latency_ns - before.latency_ns, 1'000'000'000) << "a refused call recorded a long duration";
    /* Refused before a call exists: no call recorded. */
    for (const std::string sql : {"SELECT courier.call('nope.fn', '')", "SELECT courier.call('', '')",
                                  "SELECT courier.call(repeat('f', 300), '')"}) {
        before = now();
        EXPECT_FALSE(c.exec(sql, &error)) << sql;
        after = now();
        EXPECT_EQ(after.calls, before.calls) << sql;
        EXPECT_EQ(after.latency_ns, before.latency_ns) << sql;
    }
    /* A disabled session, and a session that finds no free slot: no call, a slot-wait timeout counted. */
    ASSERT_TRUE(c.exec("SET courier.enabled = off"));
    before = now();
    EXPECT_FALSE(c.exec("SELECT courier.echo('x')", &error));
    EXPECT_EQ(now().calls, before.calls);
    ASSERT_TRUE(c.exec("SET courier.enabled = on"));
    Conn a = cluster.connect(), b = cluster.connect();
    a.value("SELECT courier.echo('hold')");
    b.value("SELECT courier.echo('hold')");
    const long long waits = stat("slot_wait_timeouts");
    before = now();
    Conn third = cluster.connect();
    EXPECT_FALSE(third.exec("SELECT courier.echo('x')", &error));
    EXPECT_NE(error.find("all 2 courier slots are in use"), std::string::npos) << error;
    EXPECT_EQ(now().calls, before.calls);
    EXPECT_EQ(stat("slot_wait_timeouts"), waits + 1);
    /* Cancelled by statement_timeout mid-call: a failed call of about that long. */
    ASSERT_TRUE(a.exec("SET statement_timeout = 300"));
    before = now();
    EXPECT_FALSE(a.exec("SELECT courier.call('sleep', '60000')", &error));
    after = now();
    EXPECT_EQ(after.calls - before.calls, 1);
    EXPECT_EQ(after.errors - before.errors, 1);
    /* The timer starts with the statement, the call a little later: a bit under 300 ms is right. */
    EXPECT_GE(after.latency_ns - before.latency_ns, 200'000'000);
    EXPECT_LT(after.latency_ns - before.latency_ns, 60'000'000'000);
}

namespace {

/* Cpus_allowed_list of every thread of `pid`, e.g. {"1", "1"}. */
std::vector<std::string> threads_cpus(pid_t pid) {
    std::vector<std::string> lists;
    const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
    for (const auto &task : std::filesystem::directory_iterator(tasks)) {
        std::ifstream status(task.path() / "status");
        for (std::string line; std::getline(status, line);)
            if (line.rfind("Cpus_allowed_list:", 0) == 0)
                lists.push_back(line.substr(line.find_first_not_of(" \t", 18)));
    }
    return lists;
}

}  // namespace

/*
 * courier.worker_cpus: the worker and every thread of its pool run on the CPU named, the postmaster and
 * the backends on the others, and sessions that outnumber the rest are all served.
 */
TEST(CourierCluster, WorkerCpusGiveTheWorkerItsOwnAndTheServerTheRest) {
    const std::vector<int> cpus = own_cpus();
    if (cpus.size() < 2)
        GTEST_SKIP() << "needs two CPUs, this process may use " << cpus.size();
    std::string rest;
    for (std::size_t i = 1; i < cpus.size(); ++i)
        rest += (rest.empty() ? "" : ",") + std::to_string(cpus[i]);
    const std::string mine = std::to_string(cpus[0]);
    Cluster cluster({"courier.worker_cpus = '" + mine + "'", "courier.worker_threads = 3"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('placed'), 'UTF8')"), "placed");

    const std::vector<std::string> worker = threads_cpus(worker_pid(c));
    EXPECT_GE(worker.size(), 5u);  // main, cancel watcher, three pool threads
    for (const std::string &list : worker)
        EXPECT_EQ(list, mine);
    for (pid_t pid : {cluster.postmaster_pid(), static_cast<pid_t>(c.backend_pid())})
        EXPECT_EQ(threads_cpus(pid), std::vector<std::string>{rest}) << "process " << pid;
    EXPECT_EQ(c.value("SHOW courier.worker_cpus"), mine);
    EXPECT_NE(cluster.log().find("courier worker runs on CPUs " + mine), std::string::npos) << cluster.log();

    /* One long call held by a pool thread while more sessions than the CPUs left to them call at once. */
    Conn slow = cluster.connect();
    send(slow, "SELECT courier.call('sleep', '20000')");
    ASSERT_TRUE(eventually([&] { return count_slots(c, "serving") == 1; }, 5));
    std::vector<Conn> sessions;
    for (int i = 0; i < 6; ++i) {
        sessions.push_back(cluster.connect());
        send(sessions.back(),
             "SELECT count(*) FROM generate_series(1, 3000) g WHERE courier.echo(g::text::bytea) = g::text::bytea");
    }
    for (Conn &s : sessions)
        EXPECT_EQ(outcome(s), "3000");
    /* Off the worker's CPU already: no session leaves it. */
    EXPECT_EQ(c.value("SELECT value FROM courier.stats() WHERE name = 'client_cpu_moves'"), "0");
    ASSERT_EQ(PQconsumeInput(slow.raw()), 1);
    EXPECT_EQ(PQisBusy(slow.raw()), 1) << "the short calls were served only after the long one";
    admin_cancel(c, slow);
    EXPECT_NE(sent_error(slow).find("canceling statement"), std::string::npos);

    /* With the spinner cap lifted, a statement_timeout still ends a waiting call and gives its slot back. */
    Conn timed = cluster.connect();
    ASSERT_TRUE(timed.exec("SET statement_timeout = 200"));
    std::string error;
    EXPECT_FALSE(timed.exec("SELECT courier.call('sleep', '5000')", &error));
    EXPECT_NE(error.find("statement timeout"), std::string::npos) << error;
    EXPECT_EQ(timed.value("SELECT convert_from(courier.echo('after'), 'UTF8')"), "after");

    /* The worker the postmaster starts again after an exit takes the CPU as its predecessor did. */
    const pid_t first = worker_pid(c);
    ASSERT_EQ(kill(first, SIGTERM), 0);
    ASSERT_TRUE(eventually([&] { return worker_pid(c) > 0 && worker_pid(c) != first; }, 10));
    EXPECT_EQ(c.value("SELECT convert_from(courier.echo('again'), 'UTF8')"), "again");
    for (const std::string &list : threads_cpus(worker_pid(c)))
        EXPECT_EQ(list, mine);
}

/*
 * Without courier.worker_cpus, a backend that calls back to back leaves
 * the CPU its worker thread runs on (courier/ipc/call.h): its mask loses
 * one CPU while it loops, while a backend that only waits keeps all of
 * them. Once a loop ends, PostgreSQL's timeout gives the idle backend its
 * whole mask back, and so does the abort of a cancelled loop (an error
 * cancels every timeout). A backend whose mask was narrowed to one CPU by
 * hand calls on that CPU, and one whose loop does more SQL between calls
 * than the calls take stays where it is: its own CPUs bound it, not the
 * worker.
 */
TEST(CourierCluster, ABackendCallingBackToBackLeavesTheWorkersCpuUntilItStops) {
    const std::vector<int> cpus = own_cpus();
    if (cpus.size() < 2)
        GTEST_SKIP() << "needs two CPUs, this process may use " << cpus.size();
    /* The worker spins 1 ms for its next call: the working session below, which calls every 60 µs, then
     * finds it running. With 50 µs it parked between calls, and waking it on an idle vCPU of a VM took
     * longer than the SQL now and then: time the session did wait on the worker. */
    Cluster cluster({"courier.spin_us = 1000"});
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    Conn looping = cluster.connect(), idle = cluster.connect();
    const pid_t backend = looping.backend_pid();
    const std::vector<std::string> whole = threads_cpus(backend);
    ASSERT_EQ(whole.size(), 1u);
    courier::worker::CpuSet all;
    std::string error;
    ASSERT_TRUE(courier::worker::parse_cpu_list(whole[0], &all, &error)) << error;
    const auto moves = [&] { return c.value("SELECT value FROM courier.stats() WHERE name = 'client_cpu_moves'"); };
    const auto loops = [&](const std::string &calls) {
        send(looping, "SELECT count(*) FROM (SELECT generate_series(1, " + calls + ")) g WHERE courier.echo('x') = 'x'");
        std::string narrowed;
        EXPECT_TRUE(eventually([&] { return (narrowed = threads_cpus(backend).at(0)) != whole[0]; }, 30))
            << "the looping backend's mask stayed " << whole[0];
        courier::worker::CpuSet during;
        EXPECT_TRUE(courier::worker::parse_cpu_list(narrowed, &during, &error)) << error;
        EXPECT_EQ(during.count(), all.count() - 1) << narrowed;
        EXPECT_EQ((during & ~all).count(), 0u) << narrowed;
        EXPECT_EQ(threads_cpus(idle.backend_pid()), whole);
    };
    const auto gets_its_mask_back = [&] {
        EXPECT_TRUE(eventually([&] { return threads_cpus(backend) == whole; }, 30))
            << "the idle backend's mask stayed " << threads_cpus(backend).at(0);
    };

    loops("1000000");
    EXPECT_EQ(outcome(looping), "1000000");
    gets_its_mask_back();
    loops("200000000");
    admin_cancel(c, looping);
    EXPECT_NE(sent_error(looping).find("canceling statement"), std::string::npos);
    gets_its_mask_back();
    EXPECT_NE(moves(), "0");
    EXPECT_EQ(c.value("SELECT value FROM courier.stats() WHERE name = 'server_cpu_moves'"), "0");

    Conn pinned = cluster.connect();
    cpu_set_t just_one;
    CPU_ZERO(&just_one);
    CPU_SET(cpus[0], &just_one);
    ASSERT_EQ(sched_setaffinity(pinned.backend_pid(), sizeof just_one, &just_one), 0) << std::strerror(errno);
    const std::string moves_before = moves();
    EXPECT_EQ(pinned.value("SELECT count(*) FROM generate_series(1, 200000) g WHERE courier.echo('x') = 'x'"),
              "200000");
    EXPECT_EQ(threads_cpus(pinned.backend_pid()), std::vector<std::string>{std::to_string(cpus[0])});
    EXPECT_EQ(moves(), moves_before);

    Conn working = cluster.connect();
    const auto turns = [&] { return c.value("SELECT value FROM courier.stats() WHERE name = 'client_turns_given'"); };
    const std::string turns_before = turns();
    send(working, "SELECT count(*) FROM generate_series(1, 12000) g WHERE courier.echo('x') = 'x' "
                  "AND (SELECT count(*) FROM generate_series(1, 1400 + g % 2)) > 0");
    int looks = 0, away = 0;
    while (PQconsumeInput(working.raw()) == 1 && PQisBusy(working.raw()) == 1) {
        ++looks;
        away += threads_cpus(working.backend_pid()) != whole;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(outcome(working), "12000");
    /* A stretch beside the worker's thread, which it cannot run while the session spins, is the worker's
     * time and may move the session for a look or two; the working loop as a whole stays. */
    EXPECT_GE(looks, 10);
    EXPECT_LT(away * 4, looks) << away << " of " << looks << " looks found the working session away";
    EXPECT_NE(turns(), turns_before) << "no two calls came within a turn: the session never looked";
}

/*
 * The rule in a crowd: six backends loop (more sessions than cores) beside
 * one long call that holds a pool thread, and each of them leaves a CPU
 * while the long call runs. Then the ways out while they loop: three
 * are cancelled, and the worker's stop fails the long call and the calls
 * in flight (a backend between calls waits for the successor and loops
 * on, so it is cancelled once the successor serves). Every backend gets
 * its whole mask back, and calls again.
 */
TEST(CourierCluster, ACrowdOfLoopingBackendsBesideALongCallLeavesAndGetsItsCpusBackOnEveryWayOut) {
    const std::vector<int> cpus = own_cpus();
    if (cpus.size() < 2)
        GTEST_SKIP() << "needs two CPUs, this process may use " << cpus.size();
    Cluster cluster;
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    Conn slow = cluster.connect();
    send(slow, "SELECT courier.call('sleep', '120000')");
    ASSERT_TRUE(eventually([&] { return count_slots(c, "serving") == 1; }, 5));

    std::vector<Conn> loops;
    for (int i = 0; i < 6; ++i)
        loops.push_back(cluster.connect());
    const std::vector<std::string> whole = threads_cpus(loops[0].backend_pid());
    const auto busy = [](Conn &l) { return PQconsumeInput(l.raw()) == 1 && PQisBusy(l.raw()) == 1; };
    /* generate_series in the select list yields row by row; in FROM it would store 200M rows first. */
    for (Conn &l : loops)
        send(l, "SELECT count(*) FROM (SELECT generate_series(1, 200000000)) g WHERE courier.echo('x') = 'x'");
    std::vector<bool> left(loops.size(), false);
    ASSERT_TRUE(eventually([&] {
        bool all = true;
        for (std::size_t i = 0; i < loops.size(); ++i)
            all = (left[i] = left[i] || threads_cpus(loops[i].backend_pid()) != whole) && all;
        return all;
    }, 60)) << "a looping backend never left a CPU: " << [&] {
        std::string who;
        for (std::size_t i = 0; i < loops.size(); ++i)
            who += std::to_string(i) + (left[i] ? " left, " : " stayed, ");
        return who + c.value("SELECT string_agg(name || '=' || value, ' ') FROM courier.stats() WHERE name IN "
                             "('client_cpu_moves', 'client_turns_given', 'client_sleeps')");
    }();
    for (Conn &l : loops)
        ASSERT_TRUE(busy(l)) << "a loop of 200M calls ended";
    ASSERT_TRUE(busy(slow)) << "the long call ended before the loops had all left";

    for (std::size_t i = 0; i < 3; ++i) {
        admin_cancel(c, loops[i]);
        EXPECT_NE(sent_error(loops[i]).find("canceling statement"), std::string::npos) << "session " << i;
    }
    const pid_t worker = worker_pid(c);
    ASSERT_EQ(kill(worker, SIGTERM), 0);
    EXPECT_NE(sent_error(slow).find("courier worker"), std::string::npos);
    ASSERT_TRUE(eventually([&] { return worker_pid(c) > 0 && worker_pid(c) != worker; }, 10));
    for (std::size_t i = 3; i < loops.size(); ++i) {
        if (busy(loops[i]))
            admin_cancel(c, loops[i]);
        EXPECT_NE(sent_error(loops[i]), "") << "session " << i << " ended its loop without an error";
    }
    for (std::size_t i = 0; i < loops.size(); ++i)
        EXPECT_TRUE(eventually([&] { return threads_cpus(loops[i].backend_pid()) == whole; }, 30))
            << "session " << i << " stayed on " << threads_cpus(loops[i].backend_pid()).at(0);
    for (Conn &l : loops)
        EXPECT_EQ(l.value("SELECT convert_from(courier.echo('again'), 'UTF8')"), "again");
}

TEST(CourierCluster, WorkerCpusThatCannotBeGivenStopTheServerWithTheReason) {
    const std::vector<int> cpus = own_cpus();
    std::string all;
    for (int cpu : cpus)
        all += (all.empty() ? "" : ",") + std::to_string(cpu);
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"'0-'", "is not a range of CPUs"},
        {"'first'", "does not start with a CPU number"},
        {"'" + all + "'", "leave at least one for its sessions"},
        {"'1000'", "CPUs 1000 are not among those this server may use"},
    };
    for (const auto &[value, why] : cases) {
        Cluster cluster({"courier.worker_cpus = " + value});
        EXPECT_FALSE(cluster.running()) << value;
        EXPECT_NE(cluster.log().find(why), std::string::npos) << value << ":\n" << cluster.log();
    }
}
