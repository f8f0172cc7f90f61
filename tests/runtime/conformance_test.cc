/*
 * The runtime conformance suite: the same tests against every runtime, in
 * a real PostgreSQL cluster, through SQL. A runtime author adds a line to
 * setups() and runs it. What a runtime must do (runtime.h):
 *
 *   echo byte-exact from 0 B to 16 MiB; fail with the caller's message;
 *   survive an exception or panic (a call error); refuse an unknown
 *   function by name; let a cancel or statement_timeout end a call and
 *   give the slot back; not hold up other sessions while a call is slow;
 *   hold 64 slow calls at once (v2) or as many as it has threads (v1);
 *   fail callers, never hang them, when the worker is stopped (SIGTERM),
 *   killed (SIGKILL) or the server shuts down with calls open.
 *
 * Concurrency is read off courier.slots() (how many calls a server holds:
 * state 'serving') while the calls run, and order off which call ended
 * while another was still held — never off elapsed time.
 */
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "cluster.h"

using namespace courier::test;

namespace {

struct Setup {
    std::string label;
    std::string runtimes;  // courier.runtimes
    std::string prefix;    // how calls name the runtime ("" or "name.")
    std::string panic_fn;  // the function that throws or panics
    int parallel;          // slow calls it holds at once out of 64
};

constexpr int threads = 4;

std::vector<Setup> setups() {
    std::vector<Setup> s = {
        {"cpp_v1", "courier_echo", "", "throw", threads},
        {"cpp_v2_async", "async=courier_echo_async", "async.", "throw", 64},
        {"cpp_v2_driven", "courier_echo_driven", "courier_echo_driven.", "throw", 64},
    };
#ifdef COURIER_GO_RUNTIME
    s.push_back({"go", std::string("go=") + COURIER_GO_RUNTIME, "go.", "panic", 64});
#endif
#ifdef COURIER_RUST_RUNTIME
    s.push_back({"rust", std::string("rust=") + COURIER_RUST_RUNTIME, "rust.", "panic", 64});
#endif
    return s;
}

[[maybe_unused]] void PrintTo(const Setup &s, std::ostream *os) { *os << s.label; }

/* Threads besides the worker's main one that a runtime brings at least (pool, watcher, its own). */
int threads_min_for(const Setup &) { return 1 + 1; }

std::vector<std::string> settings(const Setup &s) {
    return {"courier.runtimes = '" + s.runtimes + "'", "courier.slots = 80", "max_connections = 100",
            "courier.worker_threads = " + std::to_string(threads)};
}

std::string random_string(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string out(n, '\0');
    for (auto &c : out)
        c = static_cast<char>(rng() & 0xff);
    return out;
}

int slots_in(Conn &c, const std::string &state) {
    return std::stoi(c.value("SELECT count(*) FROM courier.slots() WHERE state = '" + state + "'"));
}

void send(Conn &c, const std::string &sql) { ASSERT_EQ(PQsendQuery(c.raw(), sql.c_str()), 1); }

/* One cluster per runtime, kept for the fast tests of that runtime. */
std::map<std::string, std::unique_ptr<Cluster>> &clusters() {
    static std::map<std::string, std::unique_ptr<Cluster>> all;
    return all;
}

class Conformance : public ::testing::TestWithParam<Setup> {
protected:
    Cluster &cluster() {
        auto &slot = clusters()[GetParam().label];
        if (!slot) {
            slot = std::make_unique<Cluster>(settings(GetParam()));
            Conn c = slot->connect();
            EXPECT_TRUE(c.exec("CREATE EXTENSION courier"));
        }
        return *slot;
    }
    std::string call(const std::string &fn) const { return "courier.call('" + GetParam().prefix + fn + "', "; }
};

/* Fresh clusters for the tests that stop or kill the worker. */
class Lifecycle : public Conformance {};

}  // namespace

TEST_P(Conformance, EchoesEverySizeByteExact) {
    Cluster &cl = cluster();
    ASSERT_TRUE(cl.running()) << cl.log();
    Conn c = cl.connect();
    for (std::size_t n : {0ul, 1ul, 100ul, 16352ul, 100ul * 1024, 1ul << 20, 16ul << 20, 3ul}) {
        const std::string payload = random_string(n, static_cast<unsigned>(n));
        std::string error;
        auto out = c.bytea("SELECT " + call("echo") + "$1)", payload, &error);
        ASSERT_TRUE(out) << n << ": " << error;
        EXPECT_EQ(out->size(), n);
        EXPECT_TRUE(*out == payload) << n << " bytes came back different";
    }
}

TEST_P(Conformance, ErrorsExceptionsAndUnknownFunctionsAreCallErrors) {
    Conn c = cluster().connect();
    std::string error;
    EXPECT_FALSE(c.exec("SELECT " + call("fail") + "'it broke')", &error));
    EXPECT_NE(error.find("courier runtime error in \"" + GetParam().prefix + "fail\": it broke"), std::string::npos)
        << error;
    EXPECT_FALSE(c.exec("SELECT " + call(GetParam().panic_fn) + "'kaboom')", &error));
    EXPECT_NE(error.find("kaboom"), std::string::npos) << error;
    EXPECT_FALSE(c.exec("SELECT " + call("no_such_fn") + "'')", &error));
    EXPECT_NE(error.find("no_such_fn"), std::string::npos) << error;
    EXPECT_EQ(c.value("SELECT convert_from(" + call("echo") + "'still here'), 'UTF8')"), "still here");
}

TEST_P(Conformance, CancelAndStatementTimeoutEndACallAndGiveTheSlotBack) {
    Conn admin = cluster().connect();
    for (const std::string setup : {"", "SET statement_timeout = 200"}) {
        Conn c = cluster().connect();
        if (!setup.empty()) {
            ASSERT_TRUE(c.exec(setup));
        }
        send(c, "SELECT " + call("sleep") + "'60000')");
        ASSERT_TRUE(eventually([&] { return slots_in(admin, "serving") == 1; }, 10)) << setup;
        if (setup.empty())
            admin.value("SELECT pg_cancel_backend(" + std::to_string(c.backend_pid()) + ")");
        const std::string err = outcome(c);
        EXPECT_NE(err.find("canceling statement"), std::string::npos) << err;
        /* The runtime lets go of the abandoned call (v2: on_cancel; v1: cancelled()). */
        EXPECT_TRUE(eventually([&] { return slots_in(admin, "serving") == 0 && slots_in(admin, "abandoned") == 0; }, 10))
            << setup;
        EXPECT_EQ(c.value("SELECT convert_from(" + call("echo") + "'next'), 'UTF8')"), "next");
    }
}

TEST_P(Conformance, ASlowCallDoesNotHoldUpOtherSessions) {
    Conn admin = cluster().connect();
    Conn slow = cluster().connect();
    send(slow, "SELECT convert_from(" + call("sleep") + "'4000'), 'UTF8')");
    ASSERT_TRUE(eventually([&] { return slots_in(admin, "serving") == 1; }, 10));
    Conn quick = cluster().connect();
    for (int i = 0; i < 100; ++i)
        ASSERT_EQ(quick.value("SELECT convert_from(" + call("echo") + "'q" + std::to_string(i) + "'), 'UTF8')"),
                  "q" + std::to_string(i));
    EXPECT_EQ(admin.value("SELECT state FROM courier.slots() WHERE owner_pid = " + std::to_string(slow.backend_pid())),
              "serving")
        << "the slow call ended first: the quick ones waited for it";
    EXPECT_EQ(outcome(slow), "4000");
}

TEST_P(Conformance, SixtyFourSlowCallsAreHeldAtOnce) {
    Conn admin = cluster().connect();
    std::vector<Conn> sessions;
    for (int i = 0; i < 64; ++i)
        sessions.push_back(cluster().connect());
    /* A runtime that holds them all needs one window long enough for 64 sessions to send on a busy
     * machine; one that runs them in waves, short waves. */
    const std::string ms = GetParam().parallel == 64 ? "5000" : "400";
    for (int i = 0; i < 64; ++i)
        send(sessions[i], "SELECT convert_from(" + call("sleep") + "'" + ms + "'), 'UTF8')");
    int peak = 0;
    eventually([&] {
        peak = std::max(peak, slots_in(admin, "serving"));
        return peak >= 64;
    }, 10);
    EXPECT_EQ(peak, GetParam().parallel);
    for (auto &s : sessions)
        EXPECT_EQ(outcome(s), ms);
}

TEST_P(Lifecycle, WorkerStoppedOrKilledMidCallFailsTheCallerAndComesBack) {
    for (const int sig : {SIGTERM, SIGKILL}) {
        Cluster cl(settings(GetParam()));
        ASSERT_TRUE(cl.running()) << cl.log();
        Conn admin = cl.connect();
        ASSERT_TRUE(admin.exec("CREATE EXTENSION courier"));
        const pid_t worker = std::stoi(admin.value("SELECT value FROM courier.stats() WHERE name = 'server_pid'"));
        Conn c = cl.connect();
        send(c, "SELECT " + call("sleep") + "'60000')");
        ASSERT_TRUE(eventually([&] { return slots_in(admin, "serving") == 1; }, 10));
        ASSERT_EQ(kill(worker, sig), 0);
        const std::string err = outcome(c);
        EXPECT_NE(err.find("ERROR"), std::string::npos) << err;
        if (sig == SIGTERM) {
            EXPECT_TRUE(err.find("cancelled") != std::string::npos || err.find("courier worker") != std::string::npos)
                << err;
        }
        ASSERT_TRUE(eventually([&] {
            Conn again = cl.connect();
            std::string e;
            return again.ok() && again.exec("SELECT " + call("echo") + "'back')", &e).has_value();
        }, 30)) << cl.log();
        if (sig == SIGTERM) {
            EXPECT_NE(cl.log().find("courier worker shutting down"), std::string::npos);
        }
        EXPECT_EQ(cl.log().find("courier runtime not shut down"), std::string::npos) << cl.log();
    }
}

TEST_P(Lifecycle, ServerShutdownWithOpenCallsFailsThemAndStops) {
    Cluster cl(settings(GetParam()));
    ASSERT_TRUE(cl.running()) << cl.log();
    Conn admin = cl.connect();
    ASSERT_TRUE(admin.exec("CREATE EXTENSION courier"));
    std::vector<Conn> sessions;
    for (int i = 0; i < 8; ++i) {
        sessions.push_back(cl.connect());
        send(sessions.back(), "SELECT " + call("sleep") + "'60000')");
    }
    ASSERT_TRUE(eventually([&] { return slots_in(admin, "serving") == std::min(8, GetParam().parallel); }, 10));
    cl.stop();  // pg_ctl stop -m fast: terminates the sessions, then the worker
    for (auto &s : sessions)
        EXPECT_NE(outcome(s), "60000");
    EXPECT_NE(cl.log().find("courier worker shutting down"), std::string::npos) << cl.log();
    EXPECT_EQ(cl.log().find("courier runtime not shut down"), std::string::npos) << cl.log();
}

/*
 * Runtimes in languages with a runtime of their own (Go, Rust): the
 * signal rules of runtime.h hold with them loaded, and their extra
 * function, sha256, agrees with PostgreSQL's.
 */
class ForeignRuntime : public Conformance {};

std::vector<Setup> foreign_setups() {
    std::vector<Setup> s;
    for (const Setup &setup : setups())
        if (setup.label == "go" || setup.label == "rust")
            s.push_back(setup);
    return s;
}

TEST_P(ForeignRuntime, Sha256AgreesWithPostgres) {
    Conn c = cluster().connect();
    EXPECT_EQ(c.value("SELECT bool_and(" + call("sha256") + "b) = sha256(b)) FROM (SELECT decode(repeat(md5(i::text), i), "
                      "'hex') b FROM generate_series(0, 200) i) s"),
              "t");
}

TEST_P(ForeignRuntime, SignalsStayWithPostgres) {
    Cluster cl(settings(GetParam()));
    ASSERT_TRUE(cl.running()) << cl.log();
    Conn c = cl.connect();
    ASSERT_TRUE(c.exec("CREATE EXTENSION courier"));
    EXPECT_EQ(c.value("SELECT convert_from(" + call("echo") + "'loaded'), 'UTF8')"), "loaded");
    EXPECT_EQ(thread_count(cl.postmaster_pid()), 1) << "the postmaster stays single-threaded";
    const pid_t worker = std::stoi(c.value("SELECT value FROM courier.stats() WHERE name = 'server_pid'"));
    /* No thread but the worker's main one may take a signal PostgreSQL sends it. */
    int threads = 0;
    for (const std::string &thread : threads_taking_postgres_signals(worker, &threads))
        ADD_FAILURE() << thread;
    EXPECT_GT(threads, threads_min_for(GetParam()));
    EXPECT_EQ(cl.log().find("started threads that take"), std::string::npos) << cl.log();
    /* SIGHUP reloads; a ProcSignal barrier (DROP DATABASE waits for every process's latch) completes. */
    ASSERT_TRUE(c.exec("ALTER SYSTEM SET courier.spin_us = 7"));
    ASSERT_TRUE(c.exec("SELECT pg_reload_conf()"));
    EXPECT_TRUE(eventually([&] { return cl.log().find("courier.spin_us is now 7") != std::string::npos; }, 10));
    ASSERT_TRUE(c.exec("SET statement_timeout = '20s'"));
    std::string error;
    EXPECT_TRUE(c.exec("CREATE DATABASE barrier_test", &error)) << error;
    EXPECT_TRUE(c.exec("DROP DATABASE barrier_test", &error)) << error;
    /* SIGTERM stops it, again and again, and it comes back each time. */
    for (int i = 0; i < 3; ++i) {
        const pid_t before = std::stoi(c.value("SELECT value FROM courier.stats() WHERE name = 'server_pid'"));
        ASSERT_EQ(kill(before, SIGTERM), 0);
        EXPECT_TRUE(eventually([&] {
            return std::stoi(c.value("SELECT value FROM courier.stats() WHERE name = 'server_pid'")) != before &&
                   c.value("SELECT value FROM courier.stats() WHERE name = 'server_up'") == "1";
        }, 15)) << "SIGTERM " << i << "\n" << cl.log();
    }
    EXPECT_EQ(c.value("SELECT convert_from(" + call("echo") + "'still'), 'UTF8')"), "still");
}

INSTANTIATE_TEST_SUITE_P(Runtimes, ForeignRuntime, ::testing::ValuesIn(foreign_setups()),
                         [](const auto &info) { return info.param.label; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ForeignRuntime);

INSTANTIATE_TEST_SUITE_P(Runtimes, Conformance, ::testing::ValuesIn(setups()),
                         [](const auto &info) { return info.param.label; });
INSTANTIATE_TEST_SUITE_P(Runtimes, Lifecycle, ::testing::ValuesIn(setups()),
                         [](const auto &info) { return info.param.label; });

int main(int argc, char **argv) {
    ::testing::InitGoogleTest(&argc, argv);
    const int rc = RUN_ALL_TESTS();
    clusters().clear();
    return rc;
}
