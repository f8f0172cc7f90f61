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
    ASSERT_EQ(seg.region().begin_call(h, &epoch), Status::ok);
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
