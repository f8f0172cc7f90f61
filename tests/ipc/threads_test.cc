/*
 * The ring, free list and call protocol driven by threads of one process,
 * so that ThreadSanitizer can check the memory ordering (it cannot follow
 * fork()). The same binary also runs in the plain and ASan builds.
 */
#include <gtest/gtest.h>

#include <thread>

#include "harness.h"

using namespace courier::ipc;
using namespace courier::test;
using namespace std::chrono_literals;

TEST(Threads, RingStreamsMessagesInOrder) {
    TestSegment seg(RegionParams{1, 4096, 1 << 20});
    FutexWaker waker;
    SlotHandle h;
    ASSERT_EQ(seg.region().lease(1, &h), Status::ok);
    std::uint64_t epoch = 0;
    ASSERT_EQ(seg.region().begin_call(h, 0, &epoch), Status::ok);
    WaitPolicy p;
    p.spin = 1us;
    p.deadline = std::chrono::steady_clock::now() + 60s;
    Endpoint server{&seg.region(), h.index, h.generation, epoch, false, &waker, p, nullptr};
    Endpoint client = server;
    client.is_client = true;
    constexpr int messages = 3000;
    std::thread producer([&] {
        for (int i = 0; i < messages; ++i) {
            const auto msg = random_bytes(static_cast<std::uint64_t>(i), static_cast<std::size_t>(i * 7 % 9000));
            MessageWriter w(server, FrameKind::response, i % 3 == 0 ? unknown_length : msg.size());
            ASSERT_EQ(w.write(msg), Status::ok);
            ASSERT_EQ(w.finish(), Status::ok);
        }
    });
    for (int i = 0; i < messages; ++i) {
        MessageReader r(client);
        std::vector<std::byte> out;
        ASSERT_EQ(r.read_all(&out), Status::ok) << i;
        ASSERT_EQ(out, random_bytes(static_cast<std::uint64_t>(i), static_cast<std::size_t>(i * 7 % 9000))) << i;
    }
    producer.join();
}

TEST(Threads, FreeListUnderContention) {
    TestSegment seg(RegionParams{8, 4096, 4096});
    std::vector<std::atomic<int>> owners(8);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 20000; ++i) {
                SlotHandle h;
                Status s;
                while ((s = seg.region().lease(t, &h)) == Status::no_slot)
                    std::this_thread::yield();
                ASSERT_EQ(s, Status::ok);
                ASSERT_EQ(owners[h.index].fetch_add(1), 0);
                owners[h.index].fetch_sub(1);
                ASSERT_EQ(seg.region().release(h), Status::ok);
            }
        });
    }
    for (auto &t : threads)
        t.join();
    EXPECT_EQ(seg.region().freelist().count_unsafe(), 8u);
}

TEST(Threads, CallsWithZeroSpinParkAndWake) {
    TestSegment seg(RegionParams{2, 4096, 65536});
    FutexWaker waker;
    std::thread server([&] { run_test_server(seg, waker, 0ns); });
    std::vector<std::thread> clients;
    for (int c = 0; c < 2; ++c) {
        clients.emplace_back([&, c] {
            wait_for_server(seg);
            Client client(seg.region(), waker, 100 + c);
            ASSERT_EQ(client.open(), Status::ok);
            for (int i = 0; i < 2000; ++i) {
                const auto req = random_bytes(static_cast<std::uint64_t>(c * 10000 + i), static_cast<std::size_t>(i % 9000));
                std::vector<std::byte> out;
                FrameKind kind{};
                WaitPolicy p;
                p.spin = 0ns;
                p.deadline = std::chrono::steady_clock::now() + 30s;
                ASSERT_EQ(client.call(0, "echo", req, &out, &kind, p), Status::ok);
                ASSERT_EQ(out, req);
            }
            client.close();
        });
    }
    for (auto &t : clients)
        t.join();
    stop_test_server(seg, waker);
    server.join();
    EXPECT_EQ(read_stats(seg.stats()).calls, 4000u);
}

namespace {

/*
 * Two runtimes of two serving threads each, with spins of their own. A call's answer is its request
 * with the runtime's number appended; "slow" is held until its session gives up (held, not slept
 * on: a session descheduled past a fixed sleep would get its answer instead). keep: the threads
 * keep the calls they answer (ServerCall::offer_keep) and spin on them.
 */
struct TwoRuntimes {
    TwoRuntimes(std::uint32_t slots, std::chrono::nanoseconds spin0, std::chrono::nanoseconds spin1, bool keep)
        : seg(RegionParams{slots, 4096, 65536, 2}) {
        seg.region().begin_server_epoch(waker);
        for (std::uint32_t runtime = 0; runtime < 2; ++runtime)
            for (int t = 0; t < 2; ++t)
                servers.emplace_back([this, runtime, keep, spin = runtime == 0 ? spin0 : spin1] { serve(runtime, spin, keep); });
    }
    ~TwoRuntimes() { stop_serving(); }
    void stop_serving() {
        stop.store(true);
        Dispatcher(seg.region(), 0).wake_all(waker);
        Dispatcher(seg.region(), 1).wake_all(waker);
        for (auto &t : servers)
            t.join();
        servers.clear();
    }
    void serve(std::uint32_t runtime, std::chrono::nanoseconds spin, bool keep) {
        WaitPolicy policy;
        policy.spin = spin;
        Dispatcher dispatcher(seg.region(), runtime);
        Accepted accepted;
        accepted.index = nil_index;
        bool kept = false;
        while (dispatcher.next(waker, spin, [&] { return stop.load(); }, std::chrono::steady_clock::time_point::max(),
                               &accepted, accepted.index, kept) == Status::ok) {
            ServerCall call(seg.region(), accepted, waker, policy);
            if (keep)
                call.offer_keep();
            serve_call(call, [&](ServerCall &c, std::string_view fn, std::span<const std::byte> payload) {
                while (fn == "slow" && c.endpoint().call_alive() == Status::ok)
                    std::this_thread::sleep_for(100us);
                std::vector<std::byte> out(payload.begin(), payload.end());
                out.push_back(static_cast<std::byte>(runtime));
                c.respond_all(FrameKind::response, out);
            });
            kept = call.kept();
        }
    }
    /*
     * Session s: `calls` calls on one lease (leased again after an abandon), switching runtime every
     * `switch_every` calls; every 97th is slow, abandoned at its 1 ms deadline; every 13th has
     * `long_bytes` bytes if not 0 (2500: three frames).
     */
    void session(int s, int calls, int switch_every, std::size_t long_bytes) {
        Client client(seg.region(), waker, 100 + s);
        for (int i = 0; i < calls; ++i) {
            Status opened;
            while ((opened = client.open()) == Status::no_slot)
                std::this_thread::yield();  // abandoned slots come back when their slow calls end
            ASSERT_EQ(opened, Status::ok);
            const std::uint32_t runtime = static_cast<std::uint32_t>((i / switch_every + s) % 2);
            const bool slow = i % 97 == 96;
            const std::size_t bytes = long_bytes > 0 && i % 13 == 12 ? long_bytes : static_cast<std::size_t>(i % 300);
            const auto req = random_bytes(static_cast<std::uint64_t>(s * 100000 + i), bytes);
            WaitPolicy p;
            p.spin = 20us;
            p.deadline = std::chrono::steady_clock::now() + (slow ? 1ms : 60s);  // 60 s: a hang, not a speed
            std::vector<std::byte> out;
            FrameKind kind{};
            const Status st = client.call(runtime, slow ? "slow" : "echo", req, &out, &kind, p);
            if (slow) {
                abandoned.fetch_add(1);
                ASSERT_EQ(st, Status::timeout) << "session " << s << " call " << i;  // abandoned: leases again
                continue;
            }
            ASSERT_EQ(st, Status::ok) << "session " << s << " call " << i;
            auto expected = req;
            expected.push_back(static_cast<std::byte>(runtime));
            ASSERT_EQ(out, expected) << "session " << s << " call " << i;
        }
        client.close();
    }
    /* `sessions` sessions at once, each as session() with these arguments. */
    void sessions_at_once(int sessions, int calls, int switch_every, std::size_t long_bytes) {
        std::vector<std::thread> threads;
        for (int s = 0; s < sessions; ++s)
            threads.emplace_back([=, this] { session(s, calls, switch_every, long_bytes); });
        for (auto &t : threads)
            t.join();
    }
    std::uint64_t count(Counter c, bool server) {
        const auto snap = read_stats(seg.stats());
        return (server ? snap.server : snap.client)[static_cast<int>(c)];
    }
    std::uint64_t abandons() { return read_stats(seg.stats()).global[static_cast<int>(GlobalCounter::abandons)]; }

    TestSegment seg;
    FutexWaker waker;
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> abandoned{0};
    std::vector<std::thread> servers;
};

}  // namespace

/*
 * The watched slot (dispatch.h) under threads: three sessions that switch runtime now and then (a
 * watch is for one runtime: a call for the other must ring and be taken by its own runtime), and
 * now and then a call held until the session abandons it, so that it leases again while a thread
 * may watch. Every call answers from the runtime it was for, and every call that skipped the bell
 * was taken by a watcher.
 */
TEST(Threads, WatchedSlotsAcrossTwoRuntimesWithAbandonedCalls) {
    TwoRuntimes w(4, 20us, 20us, false);
    w.session(9, 300, 5, 0);  // one session alone first: its calls are the watcher's
    w.sessions_at_once(3, 1500, 5, 0);
    w.stop_serving();
    const std::uint64_t skipped = w.count(Counter::watched_calls, false);
    EXPECT_GT(skipped, 0u) << "no call was watched: the test did not reach the watch";
    EXPECT_EQ(w.count(Counter::watched_calls, true), skipped) << "a call skipped the bell unseen";
    EXPECT_EQ(w.abandons(), w.abandoned.load());
    EXPECT_EQ(w.seg.region().slots_in_use(), 0u);
}

/*
 * Kept calls under threads: runtime 1's spin is so short that its keepers let go while requests
 * come (the race begin_after_let_go closes); four sessions, more than the CPUs, switch runtime now
 * and then and send now and then a request of several frames (both recall the kept call), now and
 * then a call held until its session gives up, and leave their slots at the end, kept or not.
 * Keepers that are not running (six threads on two CPUs) have their calls taken back. Every call
 * answers from its runtime with its own bytes, no keeper takes a request that was not sent to one or
 * that its session took back, and every slot comes back (the keepers see their sessions gone by the stop).
 */
TEST(Threads, KeptCallsWithRecallsLetGosAndAbandons) {
    TwoRuntimes k(6, 20us, 1us, true);
    k.sessions_at_once(4, 2000, 7, 2500);
    k.stop_serving();
    const std::uint64_t sent = k.count(Counter::kept_calls, false);
    const std::uint64_t taken = k.count(Counter::kept_calls, true);
    EXPECT_EQ(k.abandons(), k.abandoned.load());
    EXPECT_EQ(k.seg.region().slots_in_use(), 0u);
    const std::uint64_t taken_back =
        read_stats(k.seg.stats()).global[static_cast<int>(GlobalCounter::kept_calls_taken_back)];
    std::printf("kept calls: %llu sent to a keeper, %llu taken by it, %llu taken back by their sessions\n",
                static_cast<unsigned long long>(sent), static_cast<unsigned long long>(taken),
                static_cast<unsigned long long>(taken_back));
    EXPECT_GT(taken, 0u) << "no call was kept: the test did not reach the kept path";
    EXPECT_LE(taken, sent) << "a keeper took a request that was not sent to one";
    EXPECT_GT(taken_back, 0u) << "no session took its call back: the test did not reach the take-back";
    EXPECT_LE(taken + taken_back, sent) << "a request both taken by its keeper and taken back";
}

namespace {

/* Serving threads of runtime 0 until stop, none spinning: serve_inline on each, as the worker's pool runs. */
std::vector<std::thread> serve(TestSegment &seg, FutexWaker &waker, int threads, std::atomic<bool> &stop,
                               const CallHandler &handler) {
    std::vector<std::thread> servers;
    for (int t = 0; t < threads; ++t) {
        servers.emplace_back([&seg, &waker, &stop, handler] {
            WaitPolicy policy;
            policy.spin = 0ns;
            serve_inline(seg.region(), waker, policy, {}, [&] { return stop.load(); }, handler);
        });
    }
    return servers;
}

void stop_serving(TestSegment &seg, FutexWaker &waker, std::atomic<bool> &stop, std::vector<std::thread> &servers) {
    stop.store(true);
    Dispatcher(seg.region(), 0).wake_all(waker);
    for (auto &t : servers)
        t.join();
}

/* One serving thread of runtime 0 that echoes, on a region of its own. */
struct EchoServer {
    explicit EchoServer(std::uint32_t slots) : seg(RegionParams{slots, 4096, 65536}) {
        seg.region().begin_server_epoch(waker);
        servers = serve(seg, waker, 1, stop, [](ServerCall &c, std::string_view, std::span<const std::byte> payload) {
            c.respond_all(FrameKind::response, payload);
        });
    }
    void stop_serving() { ::stop_serving(seg, waker, stop, servers); }
    TestSegment seg;
    FutexWaker waker;
    std::atomic<bool> stop{false};
    std::vector<std::thread> servers;
};

Status call_sleeping(Client &client, std::string_view fn, std::vector<std::byte> *out) {
    WaitPolicy p;
    p.spin = 0ns;  // every wait for an answer parks: its wake is the worker's to make, or to owe
    p.deadline = std::chrono::steady_clock::now() + 60s;  // a hang, not a speed
    FrameKind kind{};
    const std::vector<std::byte> req = random_bytes(fn.size(), 16);
    const Status s = client.call(0, fn, req, out, &kind, p);
    if (s == Status::ok && *out != req)
        return Status::corrupt;
    return s;
}

/* `sessions` threads, each a session making `calls` echo calls that park for their answers; returns when all are done. */
void run_sleeping_sessions(TestSegment &seg, FutexWaker &waker, int sessions, int calls) {
    std::vector<std::thread> clients;
    for (int s = 0; s < sessions; ++s) {
        clients.emplace_back([&, s] {
            Client client(seg.region(), waker, 100 + s);
            ASSERT_EQ(client.open(), Status::ok);
            std::vector<std::byte> out;
            for (int i = 0; i < calls; ++i)
                ASSERT_EQ(call_sleeping(client, "echo", &out), Status::ok) << "session " << s << " call " << i;
            client.close();
        });
    }
    for (auto &t : clients)
        t.join();
}

}  // namespace

/*
 * More sessions than serving threads and cores, every one parking for its
 * answer: the one serving thread often lets go of a call with others in
 * the bell, so it owes those wakes, and the sessions pay them (region.h).
 * Every call ends with its own answer, and sessions paid owed wakes.
 */
TEST(Threads, SessionsPayTheWakesABusyServingThreadOwes) {
    EchoServer echo(8);
    TestSegment &seg = echo.seg;
    FutexWaker &waker = echo.waker;
    constexpr int sessions = 6, calls = 2000;
    run_sleeping_sessions(seg, waker, sessions, calls);
    echo.stop_serving();
    const auto snap = read_stats(seg.stats());
    EXPECT_EQ(snap.calls, static_cast<std::uint64_t>(sessions * calls));
    EXPECT_GT(snap.server[static_cast<int>(Counter::wakeups_owed)], 0u) << "no wake was owed: the test missed the crowd";
    EXPECT_GT(snap.client[static_cast<int>(Counter::owed_wakeups_paid)], 0u) << "no session paid a wake";
}

/*
 * The case the backstop is for (model/slots.pml, HOLD): one serving
 * thread lets go of session B's call while session A's waits in the bell,
 * so B's wake is owed; the thread then takes A's call, which holds it
 * until B has its answer. Nobody is left to pay the wake, and B's bounded
 * park finds its answer by itself (owed_wakeups_late). Without the
 * backstop B would sleep to its deadline and A's call with it. Repeated,
 * since B may be between two of its bounded parks at the let-go (then its
 * wake is neither made nor owed, and it finds its answer at once).
 */
TEST(Threads, AWakeOwedBehindACallThatWaitsForItsSessionIsFoundByTheBackstop) {
    TestSegment seg(RegionParams{2, 4096, 65536});
    FutexWaker waker;
    seg.region().begin_server_epoch(waker);
    std::atomic<bool> stop{false};
    std::atomic<bool> b_taken{false}, b_answered{false}, held_until_answered{true};
    std::atomic<std::uint32_t> b_slot{nil_index};
    auto servers = serve(seg, waker, 1, stop, [&](ServerCall &c, std::string_view fn, std::span<const std::byte> payload) {
        if (fn == "first") {  // B's: answered once A's call waits in the bell and B sleeps
            b_taken.store(true);
            while (!seg.region().doorbell(0).any() || seg.region().slot(b_slot.load())->client.sleeping.load() == 0)
                std::this_thread::yield();
        } else {  // A's: holds the only thread until B has its answer
            const auto give_up = std::chrono::steady_clock::now() + 30s;
            while (!b_answered.load() && std::chrono::steady_clock::now() < give_up)
                std::this_thread::sleep_for(100us);
            if (!b_answered.load())
                held_until_answered.store(false);
        }
        c.respond_all(FrameKind::response, payload);
    });
    std::uint64_t late = 0;
    for (int round = 0; round < 20 && late == 0; ++round) {
        b_taken.store(false);
        b_answered.store(false);
        Client b(seg.region(), waker, 100), a(seg.region(), waker, 101);
        ASSERT_EQ(b.open(), Status::ok);
        ASSERT_EQ(a.open(), Status::ok);
        b_slot.store(b.handle().index);
        std::thread session_b([&] {
            std::vector<std::byte> out;
            EXPECT_EQ(call_sleeping(b, "first", &out), Status::ok);
            b_answered.store(true);
        });
        while (!b_taken.load())
            std::this_thread::yield();
        std::vector<std::byte> out;
        EXPECT_EQ(call_sleeping(a, "hold", &out), Status::ok);
        session_b.join();
        a.close();
        b.close();
        ASSERT_TRUE(held_until_answered.load()) << "B never got its answer while A's call held the thread";
        late = read_stats(seg.stats()).client[static_cast<int>(Counter::owed_wakeups_late)];
    }
    stop_serving(seg, waker, stop, servers);
    const auto snap = read_stats(seg.stats());
    EXPECT_GT(snap.server[static_cast<int>(Counter::wakeups_owed)], 0u);
    EXPECT_GT(late, 0u) << "in 20 rounds B's wake was never left to its backstop";
}

/*
 * Turns (call.h): a session that calls back to back offers its CPU once a
 * turn; one that pauses longer than a turn between calls never does.
 */
TEST(Threads, ASessionCallingBackToBackTakesTurnsAndOneThatPausesDoesNot) {
    EchoServer echo(2);
    TestSegment &seg = echo.seg;
    FutexWaker &waker = echo.waker;
    auto turns = [&] { return read_stats(seg.stats()).client[static_cast<int>(Counter::turns_given)]; };
    Client client(seg.region(), waker, 100);
    ASSERT_EQ(client.open(), Status::ok);
    std::vector<std::byte> out;
    for (int i = 0; i < 50; ++i) {
        ASSERT_EQ(call_sleeping(client, "echo", &out), Status::ok);
        std::this_thread::sleep_for(2 * session_turn);
    }
    EXPECT_EQ(turns(), 0u) << "a session that pauses between calls yielded";
    const auto until = std::chrono::steady_clock::now() + 50 * session_turn;
    int calls = 0;
    while (std::chrono::steady_clock::now() < until || calls < 1000) {
        ASSERT_EQ(call_sleeping(client, "echo", &out), Status::ok);
        ++calls;
    }
    EXPECT_GT(turns(), 0u) << calls << " calls back to back over 50 turns and no turn given";
    client.close();
    echo.stop_serving();
}

/*
 * One long call among many short ones, more sessions than cores: two
 * serving threads, one held by a call that lasts until every short call
 * is done, and six sessions of short calls with no spin on the other. The
 * free thread owes wakes while calls queue behind it, and sessions pay
 * them; every short call ends while the long one is still running (the
 * order, not a time), and the long call ends with its answer afterwards.
 */
TEST(Threads, ShortCallsBesideALongOneGetTheirOwedWakes) {
    TestSegment seg(RegionParams{8, 4096, 65536});
    FutexWaker waker;
    seg.region().begin_server_epoch(waker);
    std::atomic<bool> stop{false}, long_started{false}, shorts_done{false}, long_ran_past_shorts{false};
    auto servers = serve(seg, waker, 2, stop, [&](ServerCall &c, std::string_view fn, std::span<const std::byte> payload) {
        if (fn == "long") {
            long_started.store(true);
            const auto give_up = std::chrono::steady_clock::now() + 60s;
            while (!shorts_done.load() && std::chrono::steady_clock::now() < give_up)
                std::this_thread::sleep_for(200us);
            long_ran_past_shorts.store(shorts_done.load());
        }
        c.respond_all(FrameKind::response, payload);
    });
    std::thread long_session([&] {
        Client client(seg.region(), waker, 99);
        ASSERT_EQ(client.open(), Status::ok);
        std::vector<std::byte> out;
        EXPECT_EQ(call_sleeping(client, "long", &out), Status::ok);
        client.close();
    });
    while (!long_started.load())
        std::this_thread::yield();
    constexpr int sessions = 6, calls = 1500;
    run_sleeping_sessions(seg, waker, sessions, calls);
    EXPECT_FALSE(shorts_done.exchange(true)) << "the long call ended first";
    long_session.join();
    stop_serving(seg, waker, stop, servers);
    EXPECT_TRUE(long_ran_past_shorts.load()) << "the long call gave up before the short ones were done";
    const auto snap = read_stats(seg.stats());
    EXPECT_EQ(snap.calls, static_cast<std::uint64_t>(sessions * calls + 1));
    EXPECT_GT(snap.server[static_cast<int>(Counter::wakeups_owed)], 0u) << "no wake was owed: the test missed the crowd";
    EXPECT_GT(snap.client[static_cast<int>(Counter::owed_wakeups_paid)], 0u);
}
