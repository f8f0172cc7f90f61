/*
 * The worker library without PostgreSQL: a courier::worker::Worker over a
 * plain shared-memory segment with the futex waker, serving the real
 * runtime libraries (echo v1, echo v2 in callback and driven mode, the
 * probe) to client threads. Runs in the plain, ASan+UBSan and TSan builds.
 *
 * Concurrency is asserted on overlap and order: how many calls a server
 * held at once (the slots' accepted bits, sampled while calls run), which
 * call finished while another was still held, what the probe runtime saw.
 */
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "harness.h"
#include "courier/worker/placement.h"
#include "courier/worker/worker.h"

using namespace courier;
using namespace courier::ipc;
using namespace courier::test;
using namespace std::chrono_literals;

namespace {

struct Served {
    Served(std::vector<worker::RuntimeSpec> specs, int threads, std::uint32_t slots = 48,
           std::chrono::milliseconds grace = 2000ms, std::uint64_t max_message = 32 << 20)
        : seg(RegionParams{slots, 65536, max_message, static_cast<std::uint32_t>(specs.size())}) {
        std::vector<std::string> names;
        for (const auto &s : specs)
            names.push_back(s.name);
        seg.stats().set_runtimes(names);
        w = std::make_unique<worker::Worker>(seg.region(), waker,
                                             worker::Config{specs, "", threads, 20us, grace});
        w->start();
    }
    ~Served() {
        if (w)
            w->stop();
    }
    Region &region() { return seg.region(); }

    TestSegment seg;
    FutexWaker waker;
    std::unique_ptr<worker::Worker> w;
};

struct Reply {
    Status status = Status::ok;
    FrameKind kind = FrameKind::pad;
    std::string text;
};

/* One call on a session of its own, or on `session` (a lease kept across calls, as a backend does). */
Reply call(Region &r, std::uint32_t runtime, const std::string &fn, const std::string &payload,
           std::chrono::milliseconds timeout = 60s, Client *session = nullptr) {
    FutexWaker waker;
    Client own(r, waker, 1);
    Client &c = session != nullptr ? *session : own;
    Reply reply;
    const auto until = std::chrono::steady_clock::now() + 30s;
    while ((reply.status = c.open()) == Status::no_slot && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    if (reply.status != Status::ok)
        return reply;
    WaitPolicy p;
    p.spin = 10us;
    p.deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<std::byte> out;
    reply.status = c.call(runtime, fn, std::as_bytes(std::span(payload.data(), payload.size())), &out, &reply.kind, p);
    reply.text.assign(reinterpret_cast<const char *>(out.data()), out.size());
    if (session == nullptr)
        c.close();
    return reply;
}

std::uint32_t serving(Region &r) {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < r.slots(); ++i)
        n += (r.slot(i)->state.load() & accepted_by_server) != 0;
    return n;
}

/* Waits until a server holds a call; returns its slot (in a test that made no call before). */
std::uint32_t first_served(Region &r) {
    for (;;) {
        for (std::uint32_t i = 0; i < r.slots(); ++i)
            if (r.slot(i)->state.load() & accepted_by_server)
                return i;
        std::this_thread::sleep_for(1ms);
    }
}

bool still_served(Region &r, std::uint32_t slot) { return (r.slot(slot)->state.load() & accepted_by_server) != 0; }

/* Runs fn on `n` threads at once; samples how many calls a server held at once meanwhile. */
std::uint32_t peak_serving_while(Region &r, int n, const std::function<void(int)> &fn) {
    std::atomic<int> done{0};
    std::atomic<std::uint32_t> peak{0};
    std::thread sampler([&] {
        while (done.load() < n) {
            peak.store(std::max(peak.load(), serving(r)));
            std::this_thread::sleep_for(200us);
        }
    });
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
        threads.emplace_back([&, i] {
            fn(i);
            done.fetch_add(1);
        });
    for (auto &t : threads)
        t.join();
    sampler.join();
    return peak.load();
}

worker::RuntimeSpec spec(const char *name, const char *path) { return {name, path}; }
const worker::RuntimeSpec echo_v1 = spec("echo", COURIER_ECHO_V1);
const worker::RuntimeSpec echo_async = spec("async", COURIER_ECHO_ASYNC);
const worker::RuntimeSpec echo_driven = spec("driven", COURIER_ECHO_DRIVEN);

std::string lifecycle(const std::string &name) {
    std::ifstream f("/tmp/courier-probe-" + name + ".log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/* A probe with a name of its own (its lifecycle file), removed first. */
worker::RuntimeSpec probe(const std::string &tag) {
    const std::string name = "probe_" + tag + "_" + std::to_string(getpid());
    std::remove(("/tmp/courier-probe-" + name + ".log").c_str());
    return {name, COURIER_PROBE};
}

std::string events(Region &r, std::uint32_t runtime) { return call(r, runtime, "events", "").text; }

}  // namespace

/* ------------------------------------------------------------- dispatch */

/* The lost-wakeup bug: with one shared "sleeping" flag the 2nd..4th calls waited for the 1st. */
TEST(Dispatch, FourSlowCallsOnFourThreadsAreHeldAtOnce) {
    Served s({echo_v1}, 4);
    const std::uint32_t peak = peak_serving_while(s.region(), 4, [&](int) {
        EXPECT_EQ(call(s.region(), 0, "sleep", "1500").text, "1500");
    });
    EXPECT_EQ(peak, 4u);
}

TEST(Dispatch, ShortCallsAreServedWhileALongOneIsHeld) {
    Served s({echo_v1}, 2);
    std::thread long_call([&] { EXPECT_EQ(call(s.region(), 0, "sleep", "3000").status, Status::ok); });
    const std::uint32_t slow = first_served(s.region());
    for (int i = 0; i < 200; ++i)
        ASSERT_EQ(call(s.region(), 0, "echo", "short " + std::to_string(i)).text, "short " + std::to_string(i));
    EXPECT_TRUE(still_served(s.region(), slow)) << "the long call ended before the short ones: they waited for it";
    long_call.join();
}

TEST(Dispatch, MoreClientsThanThreadsAllGetServed) {
    Served s({echo_v1}, 2, 40);
    std::atomic<int> ok{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < 32; ++c)
        clients.emplace_back([&, c] {
            for (int i = 0; i < 50; ++i)
                ok += call(s.region(), 0, "echo", std::to_string(c * 1000 + i)).text == std::to_string(c * 1000 + i);
        });
    for (auto &t : clients)
        t.join();
    EXPECT_EQ(ok.load(), 32 * 50);
}

/*
 * The kept call on the real pool (ipc/region.h): a pool thread that answered a v1 call keeps it and
 * spins on it. Six sessions (more than the machine's cores, more than the threads) each make calls
 * on one lease: most to runtime 0, some to runtime 1 (the same library again) and to a v2 runtime,
 * some too long for one frame, some slow, so that kept calls are taken, recalled, let go unread and
 * ended by the bell in every order. Every answer must be the session's own, byte for byte; some
 * requests must have been taken by their keeper, and never more than the sessions sent to one.
 */
TEST(Keep, SessionsMixingRuntimesSizesAndSlowCallsGetTheirOwnAnswers) {
    Served s({echo_v1, spec("echo_again", COURIER_ECHO_V1), echo_async}, 2);
    constexpr int sessions = 6, calls = 300;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < sessions; ++c)
        threads.emplace_back([&, c] {
            FutexWaker waker;
            Client session(s.region(), waker, 1);
            for (int i = 0; i < calls; ++i) {
                const std::uint32_t runtime = i % 7 == 3 ? 1 : i % 11 == 5 ? 2 : 0;
                std::string payload = std::to_string(c) + "/" + std::to_string(i);
                if (i % 13 == 6)
                    payload.resize(70000, static_cast<char>('a' + c));  // more than one frame
                const bool slow = c == 0 && i % 50 == 25;
                const Reply r = call(s.region(), runtime, slow ? "sleep" : "echo", slow ? "30" : payload, 60s,
                                     &session);
                wrong += r.status != Status::ok || r.text != (slow ? "30" : payload);
            }
            session.close();
        });
    for (auto &t : threads)
        t.join();
    EXPECT_EQ(wrong.load(), 0);
    const StatsSnapshot snap = read_stats(s.seg.stats());
    const std::uint64_t sent = snap.client[static_cast<int>(Counter::kept_calls)];
    const std::uint64_t taken = snap.server[static_cast<int>(Counter::kept_calls)];
    EXPECT_GT(taken, 0u) << "no pool thread kept a call";
    EXPECT_LE(taken, sent);
    std::printf("kept calls: %llu sent to a keeper, %llu taken by it, of %d\n",
                static_cast<unsigned long long>(sent), static_cast<unsigned long long>(taken), sessions * calls);
    /* A keeper lets go of a call whose session left at its next look (every 64th poll). */
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (s.region().slots_in_use() != 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    for (std::uint32_t i = 0; i < s.region().slots(); ++i)
        EXPECT_EQ(s.region().slot(i)->state.load(), 0u) << "slot " << i << " did not come back";
}

/* ------------------------------------------------------------- ABI v2 */

TEST(AbiV2, AsyncCallsInFlightAreBoundedBySlotsNotThreads) {
    Served s({echo_async}, 1);
    const std::uint32_t peak = peak_serving_while(s.region(), 32, [&](int i) {
        EXPECT_EQ(call(s.region(), 0, "sleep", std::to_string(1500 + i)).text, std::to_string(1500 + i));
    });
    EXPECT_EQ(peak, 32u) << "one pool thread, yet every sleep must be open at once";
}

TEST(AbiV2, DrivenRuntimeTakesCallsOnItsOwnThreads) {
    Served s({echo_driven}, 2);
    const std::uint32_t peak = peak_serving_while(s.region(), 32, [&](int i) {
        EXPECT_EQ(call(s.region(), 0, "sleep", std::to_string(1500 + i)).text, std::to_string(1500 + i));
    });
    EXPECT_EQ(peak, 32u);
    const Reply thrown = call(s.region(), 0, "throw", "caught by the runtime");
    EXPECT_EQ(thrown.kind, FrameKind::error);
    EXPECT_NE(thrown.text.find("caught by the runtime"), std::string::npos);
}

class EveryRuntime : public ::testing::TestWithParam<worker::RuntimeSpec> {};

TEST_P(EveryRuntime, EchoesEverySizeByteExactOnOneSession) {
    Served s({GetParam()}, 2);
    FutexWaker waker;
    Client session(s.region(), waker, 1);
    for (std::size_t n : {0ul, 1ul, 2ul, 0ul, 16351ul, 16352ul, 65536ul, 1ul << 20, 3ul, 16ul << 20, 1ul}) {
        const auto bytes = random_bytes(n, n);
        const std::string payload(reinterpret_cast<const char *>(bytes.data()), n);
        const Reply r = call(s.region(), 0, "echo", payload, 60s, &session);
        ASSERT_EQ(r.status, Status::ok) << n;
        ASSERT_EQ(r.kind, FrameKind::response) << n;
        EXPECT_TRUE(r.text == payload) << n << " bytes came back different";
    }
}

TEST_P(EveryRuntime, ErrorsAreCallErrorsAndTheWorkerGoesOn) {
    Served s({GetParam()}, 2);
    const Reply failed = call(s.region(), 0, "fail", "it broke");
    EXPECT_EQ(failed.kind, FrameKind::error);
    EXPECT_EQ(failed.text, "it broke");
    const Reply unknown = call(s.region(), 0, "no_such_fn", "");
    EXPECT_EQ(unknown.kind, FrameKind::error);
    EXPECT_NE(unknown.text.find("unknown function \"no_such_fn\""), std::string::npos);
    const Reply thrown = call(s.region(), 0, "throw", "kaboom");
    EXPECT_EQ(thrown.kind, FrameKind::error);
    EXPECT_NE(thrown.text.find("kaboom"), std::string::npos);
    EXPECT_EQ(call(s.region(), 0, "echo", "still here").text, "still here");
}

INSTANTIATE_TEST_SUITE_P(Runtimes, EveryRuntime, ::testing::Values(echo_v1, echo_async, echo_driven),
                         [](const auto &info) { return info.param.name; });

TEST(AbiV2, SeveralRuntimesEachServeTheirOwnCalls) {
    Served s({echo_v1, echo_async, echo_driven}, 1);
    for (std::uint32_t r = 0; r < 3; ++r)
        EXPECT_EQ(call(s.region(), r, "echo", "to " + std::to_string(r)).text, "to " + std::to_string(r));
    /* A v1 runtime whose only thread is busy does not hold up the others. */
    FutexWaker waker;
    Client long_session(s.region(), waker, 2);
    ASSERT_EQ(long_session.open(), Status::ok);
    const std::uint32_t slow = long_session.handle().index;
    std::thread busy([&] { EXPECT_EQ(call(s.region(), 0, "sleep", "2000", 60s, &long_session).status, Status::ok); });
    while (!still_served(s.region(), slow))
        std::this_thread::sleep_for(1ms);
    EXPECT_EQ(call(s.region(), 1, "echo", "async").text, "async");
    EXPECT_EQ(call(s.region(), 2, "echo", "driven").text, "driven");
    EXPECT_TRUE(still_served(s.region(), slow));
    busy.join();
    const StatsSnapshot snap = read_stats(s.seg.stats());
    ASSERT_EQ(snap.runtimes.size(), 3u);
    EXPECT_EQ(snap.runtimes[0].calls, 2u);
    EXPECT_EQ(snap.runtimes[2].calls, 2u);
    EXPECT_EQ(snap.runtimes[1].state, RuntimeState::loaded);
}

TEST(AbiV2, MisuseIsAnErrorCodeNeverACrash) {
    Served s({probe("misuse")}, 1);
    const Reply r = call(s.region(), 0, "misuse", "");
    EXPECT_EQ(r.kind, FrameKind::response);
    const std::string log = events(s.region(), 0);
    for (const char *expected :
         {"request_null=0", "write_null=8", "read_null_n=8", "on_cancel_null=8", "write_id0=3", "finish_id0=3", "write_bogus=3",
          "write_future=3", "next_call_bad_runtime=8", "write=0", "read_after_whole=0", "finish=0",
          "finish_again=2", "write_after_finish=2", "fail_after_finish=2", "cancelled_after_finish=1"})
        EXPECT_NE(log.find(std::string(expected) + "\n"), std::string::npos) << expected << " in\n" << log;
}

TEST(AbiV2, FailAfterWriteReplacesThePartialResponse) {
    Served s({probe("failwrite"), echo_v1}, 1);
    const Reply r = call(s.region(), 0, "write_then_fail", "the real reason");
    EXPECT_EQ(r.status, Status::ok);
    EXPECT_EQ(r.kind, FrameKind::error);
    EXPECT_EQ(r.text, "the real reason");
    const Reply nul = call(s.region(), 0, "fail_nul", "");
    EXPECT_EQ(nul.text, std::string("before\0after", 12));
}

TEST(AbiV2, ATooLargeResponseFailsWithThatReason) {
    Served s({probe("big")}, 1, 8, 2000ms, 1 << 20);
    const Reply r = call(s.region(), 0, "big", std::to_string(3 << 20));
    EXPECT_EQ(r.kind, FrameKind::error);
    EXPECT_NE(r.text.find("exceeds courier.max_message_size"), std::string::npos) << r.text;
    EXPECT_NE(events(s.region(), 0).find("big rc=4"), std::string::npos);
}

/* ------------------------------------------------------- cancellation */

TEST(Cancel, TheRuntimeLearnsThatItsCallerLeftWithoutPolling) {
    Served s({probe("cancel")}, 1);
    const Reply r = call(s.region(), 0, "hold", "60000 left", 300ms);
    EXPECT_EQ(r.status, Status::timeout);  // the client gave up and abandoned
    std::string log;
    for (int i = 0; i < 3000 && log.find("cancel left") == std::string::npos; ++i) {
        log += events(s.region(), 0);
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_NE(log.find("run left\n"), std::string::npos) << log;
    EXPECT_NE(log.find("cancel left\n"), std::string::npos) << log;
    EXPECT_EQ(log.find("done left"), std::string::npos) << log;
    for (int i = 0; i < 3000 && s.region().slots_in_use() != 0; ++i)
        std::this_thread::sleep_for(1ms);
    EXPECT_EQ(s.region().slots_in_use(), 0u) << "the cancelled call's slot came back";
}

TEST(Cancel, ACallGivenUpWhileQueuedNeverRuns) {
    Served s({probe("queued")}, 1);
    std::thread busy([&] { EXPECT_EQ(call(s.region(), 0, "stuck", "1500").text, "1500"); });
    (void)first_served(s.region());
    EXPECT_EQ(call(s.region(), 0, "hold", "0 queued", 200ms).status, Status::timeout);
    busy.join();
    EXPECT_EQ(call(s.region(), 0, "echo", "after").text, "after");
    EXPECT_EQ(events(s.region(), 0).find("queued"), std::string::npos) << "the abandoned call ran";
    EXPECT_EQ(read_stats(s.seg.stats()).global[static_cast<int>(GlobalCounter::calls_dropped_unstarted)], 1u);
}

/* A server parked on a full response ring is woken by the abandon; one thread serves on. */
TEST(Cancel, AbandonWakesAServerParkedOnAFullRing) {
    Served s({echo_v1}, 1);
    FutexWaker waker;
    Client c(s.region(), waker, 7);
    ASSERT_EQ(c.open(), Status::ok);
    WaitPolicy p;
    p.deadline = std::chrono::steady_clock::now() + 30s;
    const std::string big(4 << 20, 'x');  // 64 ring-fulls: the server parks until we read
    ASSERT_EQ(c.start(0, "echo", big.size(), p), Status::ok);
    ASSERT_EQ(c.request().write(std::as_bytes(std::span(big.data(), big.size()))), Status::ok);
    ASSERT_EQ(c.finish_request(), Status::ok);
    while (s.region().slot(c.handle().index)->server.sleeping.load() == 0)
        std::this_thread::sleep_for(1ms);
    c.abandon();
    EXPECT_EQ(call(s.region(), 0, "echo", "next").text, "next");
}

/* --------------------------------------------------------------- stop */

TEST(Stop, OpenCallsAreCancelledAndShutdownComesAfterTheLast) {
    const worker::RuntimeSpec p = probe("stop");
    auto s = std::make_unique<Served>(std::vector<worker::RuntimeSpec>{p}, 2);
    std::vector<std::thread> clients;
    std::vector<Reply> replies(8);
    for (int i = 0; i < 8; ++i)
        clients.emplace_back([&, i] { replies[i] = call(s->region(), 0, "hold", "60000 h" + std::to_string(i)); });
    while (serving(s->region()) < 8)
        std::this_thread::sleep_for(1ms);
    const worker::StopReport report = s->w->stop();
    for (auto &t : clients)
        t.join();
    for (const Reply &r : replies) {
        EXPECT_EQ(r.kind, FrameKind::error);
        EXPECT_EQ(r.text, "cancelled");
    }
    EXPECT_TRUE(report.not_shut_down.empty());
    EXPECT_NE(lifecycle(p.name).find("stop\nshutdown in_handle=0 held=0\n"), std::string::npos) << lifecycle(p.name);
}

TEST(Stop, ShutdownIsSkippedWhileAThreadIsStillInsideTheRuntime) {
    const worker::RuntimeSpec p = probe("stuck");
    /* Kept on purpose (reachable, so not a leak): the stuck thread outlives the Worker and uses both. */
    static Served *s = nullptr;
    s = new Served({p}, 1, 8, 200ms);
    std::thread client([] { (void)call(s->region(), 0, "stuck", "3000"); });
    while (serving(s->region()) == 0)
        std::this_thread::sleep_for(1ms);
    const worker::StopReport report = s->w->stop();
    ASSERT_EQ(report.not_shut_down.size(), 1u);
    EXPECT_NE(report.not_shut_down[0].find(p.name), std::string::npos);
    EXPECT_EQ(lifecycle(p.name).find("shutdown"), std::string::npos) << "shutdown ran under a thread";
    client.detach();
}

TEST(Load, AMissingLibraryFailsEveryCallWithTheReason) {
    Served s({spec("gone", "/nonexistent/courier_gone.so"), echo_v1}, 1);
    ASSERT_EQ(s.w->runtimes().size(), 2u);
    EXPECT_NE(s.w->runtimes()[0].error.find("could not load courier runtime"), std::string::npos);
    const Reply r = call(s.region(), 0, "echo", "x");
    EXPECT_EQ(r.kind, FrameKind::error);
    EXPECT_NE(r.text.find("/nonexistent/courier_gone.so"), std::string::npos);
    EXPECT_EQ(call(s.region(), 1, "echo", "x").text, "x");
    EXPECT_EQ(read_stats(s.seg.stats()).runtimes[0].state, RuntimeState::failed);
}

namespace courier::worker {
void PrintTo(const RuntimeSpec &s, std::ostream *os) { *os << s.name; }
}  // namespace courier::worker

/* ---- courier.worker_cpus: the lists an operator writes, and the split of the server's CPUs ---- */

namespace {

worker::CpuSet cpus_of(std::initializer_list<unsigned> list) {
    worker::CpuSet set;
    for (unsigned cpu : list)
        set.set(cpu);
    return set;
}

TEST(Placement, CpuListsParseAsLinuxWritesThemAndFormatBack) {
    worker::CpuSet set;
    std::string error;
    ASSERT_TRUE(worker::parse_cpu_list("0", &set, &error)) << error;
    EXPECT_EQ(set, cpus_of({0}));
    ASSERT_TRUE(worker::parse_cpu_list("0-3,8, 10-11", &set, &error)) << error;
    EXPECT_EQ(set, cpus_of({0, 1, 2, 3, 8, 10, 11}));
    EXPECT_EQ(worker::format_cpu_list(set), "0-3,8,10-11");
    ASSERT_TRUE(worker::parse_cpu_list("1023", &set, &error)) << error;
    EXPECT_EQ(worker::format_cpu_list(set), "1023");
    EXPECT_EQ(worker::format_cpu_list(worker::CpuSet{}), "");
}

TEST(Placement, AWrongListIsRefusedWithWhatIsWrongAndHowToWriteIt) {
    for (const char *bad : {"", " ", "x", "0-", "3-1", "0,,1", "1024", "0 1", "0-3;4", "-1"}) {
        worker::CpuSet set;
        std::string error;
        EXPECT_FALSE(worker::parse_cpu_list(bad, &set, &error)) << "\"" << bad << "\" was taken";
        EXPECT_NE(error.find("as Linux does"), std::string::npos) << bad << ": " << error;
    }
}

TEST(Placement, TheWorkerTakesItsCpusOutOfTheServersAndLeavesTheRest) {
    worker::CpuSet rest;
    std::string error;
    ASSERT_TRUE(worker::split_cpus(cpus_of({0, 1, 2, 3}), cpus_of({0}), &rest, &error)) << error;
    EXPECT_EQ(rest, cpus_of({1, 2, 3}));
    EXPECT_FALSE(worker::split_cpus(cpus_of({0, 1}), cpus_of({0, 1}), &rest, &error));
    EXPECT_NE(error.find("leave at least one"), std::string::npos) << error;
    EXPECT_FALSE(worker::split_cpus(cpus_of({2, 3}), cpus_of({1, 2}), &rest, &error));
    EXPECT_NE(error.find("CPUs 1 are not among"), std::string::npos) << error;
}

/* The mask run_on() sets is the calling thread's, and threads it starts afterwards inherit it. */
TEST(Placement, AThreadStartedAfterRunOnInheritsItsCpus) {
    worker::CpuSet allowed, seen;
    std::string error;
    ASSERT_TRUE(worker::allowed_cpus(&allowed, &error)) << error;
    worker::CpuSet one;
    for (unsigned cpu = 0; cpu < worker::max_cpus; ++cpu)
        if (allowed.test(cpu)) {
            one.set(cpu);
            break;
        }
    std::thread t([&] {
        ASSERT_TRUE(worker::run_on(one, &error)) << error;
        std::thread child([&] { ASSERT_TRUE(worker::allowed_cpus(&seen, &error)) << error; });
        child.join();
        ASSERT_TRUE(worker::run_on(allowed, &error)) << error;
    });
    t.join();
    EXPECT_EQ(seen, one);
}

}  // namespace
