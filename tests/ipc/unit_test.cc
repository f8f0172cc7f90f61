/*
 * Unit tests of the ipc core, in one process: layout, free list, doorbell,
 * rings and framing, chunking, stats, slot ownership, the watched slot and
 * the spinners (which yield their CPU).
 */
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <map>
#include <mutex>
#include <semaphore>
#include <set>
#include <thread>

#include "courier/ipc/clock.h"
#include "courier/worker/placement.h"
#include "harness.h"

using namespace courier::ipc;
using courier::test::TestSegment;

namespace {

RegionParams params(std::uint32_t slots = 4, std::uint64_t ring = 4096, std::uint64_t max = 1 << 20) {
    return RegionParams{slots, ring, max};
}

std::span<const std::byte> bytes_of(const std::string &s) {
    return {reinterpret_cast<const std::byte *>(s.data()), s.size()};
}

/* Reads one message frame by frame into *out; the number of frames, or -1 if a frame fails. */
int read_frames(Endpoint &server, std::vector<std::byte> *out) {
    MessageReader r(server);
    int frames = 0;
    for (bool last = false; !last; ++frames) {
        std::span<const std::byte> chunk;
        if (r.next(&chunk, &last) != Status::ok)
            return -1;
        out->insert(out->end(), chunk.begin(), chunk.end());
    }
    r.release();
    return frames;
}

/* Two endpoints of slot 0 with a futex waker and no spinning. */
struct Pair {
    TestSegment seg{params()};
    FutexWaker waker;
    SlotHandle handle;
    Endpoint client, server;
    Pair(std::uint64_t ring = 4096, std::uint64_t max = 1 << 20) : seg(params(4, ring, max)) {
        EXPECT_EQ(seg.region().lease(1, &handle), Status::ok);
        std::uint64_t epoch = 0;
        EXPECT_EQ(seg.region().begin_call(handle, 0, &epoch),
                  Status::ok);
        WaitPolicy p;
        p.spin = {};
        p.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        client = Endpoint{&seg.region(), handle.index, handle.generation, epoch, true, &waker, p,
                          &seg.stats().slot(handle.index)->client};
        server = client;
        server.is_client = false;
        server.counters = &seg.stats().slot(handle.index)->server;
    }
};

}  // namespace

/* ------------------------------------------------------------- layout */

TEST(Layout, RejectsOutOfRangeParameters) {
    RegionLayout l;
    EXPECT_EQ(compute_layout(params(0), &l), Status::bad_argument);
    EXPECT_EQ(compute_layout(params(max_slots + 1), &l), Status::bad_argument);
    EXPECT_EQ(compute_layout(params(4, 6000), &l), Status::bad_argument);
    EXPECT_EQ(compute_layout(params(4, 2048), &l), Status::bad_argument);
    EXPECT_EQ(compute_layout(params(4, 4096, 0), &l), Status::bad_argument);
    EXPECT_STREQ(describe_layout_error(params(4, 6000)),
                 "ring_size must be a power of two (for example 64kB, 1MB)");
    EXPECT_EQ(describe_layout_error(params()), nullptr);
}

TEST(Layout, PartsAreAlignedDisjointAndCoverTheRegion) {
    for (std::uint32_t slots : {1u, 63u, 64u, 65u, 1024u}) {
        RegionLayout l;
        ASSERT_EQ(compute_layout(params(slots, 65536), &l), Status::ok);
        std::vector<std::pair<std::size_t, std::size_t>> parts = {
            {l.header_offset, sizeof(RegionHeader)},
            {l.dispatch_offset, sizeof(DispatchControl) * l.params.runtimes},
            {l.freelist_offset, 4 * slots},
            {l.bells_offset, l.bell_stride * (l.params.runtimes + extra_bells)},
            {l.slots_offset, l.slot_stride * slots},
            {l.rings_offset, l.ring_stride * slots}};
        for (std::size_t i = 0; i < parts.size(); ++i) {
            EXPECT_EQ(parts[i].first % 64, 0u) << "part " << i;
            if (i + 1 < parts.size()) {
                EXPECT_LE(parts[i].first + parts[i].second, parts[i + 1].first) << "part " << i;
            }
        }
        EXPECT_EQ(l.rings_offset + l.ring_stride * slots, l.region_size);
        EXPECT_EQ(l.bell_words, (slots + 63) / 64);
        EXPECT_GE(l.bell_stride, 8 * (1 + l.bell_words));
        EXPECT_EQ(l.stats_size, stats_segment_size(slots));
        const StatsLayout st = stats_layout(slots);
        EXPECT_GE(st.globals_offset, sizeof(StatsHeader));
        EXPECT_GE(st.slots_offset, st.globals_offset + sizeof(GlobalCounters));
        EXPECT_EQ(st.slots_offset % 64, 0u);
        EXPECT_EQ(st.size, st.slots_offset + slots * sizeof(SlotStats));
        EXPECT_EQ(l.bundled_stats_offset % 64, 0u);
        EXPECT_GE(l.bundled_stats_offset, l.region_size);
        EXPECT_GE(l.bundled_size, l.bundled_stats_offset + l.stats_size);
        EXPECT_EQ(l.bundled_size % 64, 0u);
    }
}

TEST(Layout, SizeGrowsWithEveryParameterThatNeedsMemory) {
    RegionLayout a, b, c;
    ASSERT_EQ(compute_layout(params(8, 4096), &a), Status::ok);
    ASSERT_EQ(compute_layout(params(16, 4096), &b), Status::ok);
    ASSERT_EQ(compute_layout(params(8, 8192), &c), Status::ok);
    EXPECT_LT(a.region_size, b.region_size);
    EXPECT_EQ(c.region_size - a.region_size, 8u * 2 * 4096);
}

/* ---------------------------------------------------------- free list */

TEST(FreeList, PopsEveryIndexOnceThenReportsEmpty) {
    TestSegment seg(params(8));
    FreeList fl = seg.region().freelist();
    std::set<std::uint32_t> seen;
    FreeListCounts counts;
    for (int i = 0; i < 8; ++i) {
        std::uint32_t idx;
        ASSERT_EQ(fl.pop(&idx, &counts), Status::ok);
        EXPECT_TRUE(seen.insert(idx).second);
    }
    std::uint32_t idx;
    EXPECT_EQ(fl.pop(&idx, &counts), Status::no_slot);
    EXPECT_TRUE(counts.empty);
    ASSERT_EQ(fl.push(5, &counts), Status::ok);
    ASSERT_EQ(fl.pop(&idx, &counts), Status::ok);
    EXPECT_EQ(idx, 5u);
    EXPECT_EQ(fl.push(8, &counts), Status::bad_argument);
}

TEST(FreeList, CorruptHeadOrLinkIsAnErrorNotACrash) {
    TestSegment seg(params(8));
    FreeList fl = seg.region().freelist();
    FreeListCounts counts;
    std::uint32_t idx;
    seg.region().header().freelist_head.store(1000);  // index 1000 of 8
    EXPECT_EQ(fl.pop(&idx, &counts), Status::corrupt);
    EXPECT_EQ(fl.push(1, &counts), Status::corrupt);
    fl.init_full();
    auto *links = reinterpret_cast<std::atomic<std::uint32_t> *>(
        reinterpret_cast<std::byte *>(&seg.region().header()) + seg.layout().freelist_offset);
    links[0].store(77);
    EXPECT_EQ(fl.pop(&idx, &counts), Status::corrupt);
}

TEST(FreeList, LeaseBumpsGenerationAndCountsEmpty) {
    TestSegment seg(params(2));
    Region &r = seg.region();
    SlotHandle a, b, c;
    ASSERT_EQ(r.lease(10, &a), Status::ok);
    ASSERT_EQ(r.lease(11, &b), Status::ok);
    EXPECT_EQ(r.lease(12, &c), Status::no_slot);
    EXPECT_EQ(read_stats(seg.stats()).global[static_cast<int>(GlobalCounter::freelist_empty)], 1u);
    const std::uint64_t gen = a.generation;
    ASSERT_EQ(r.release(a), Status::ok);
    EXPECT_EQ(r.release(a), Status::stale);  // double release
    ASSERT_EQ(r.lease(12, &c), Status::ok);
    EXPECT_EQ(c.index, a.index);
    EXPECT_GT(c.generation, gen);
    EXPECT_EQ(r.release(a), Status::stale);  // old handle, new generation
    EXPECT_EQ(r.slots_in_use(), 2u);
    EXPECT_EQ(seg.stats().header().slots_in_use.load(), 2u);
}

/* ----------------------------------------------------------- doorbell */

TEST(Doorbell, DrainsEachRungSlotOnceAndIgnoresBitsBeyondSlots) {
    TestSegment seg(params(70));
    Doorbell bell = seg.region().doorbell(0);
    EXPECT_FALSE(bell.any());
    EXPECT_TRUE(bell.ring(3));
    EXPECT_FALSE(bell.ring(3));
    EXPECT_TRUE(bell.ring(69));
    EXPECT_FALSE(bell.ring(70));
    auto *words = reinterpret_cast<std::atomic<std::uint64_t> *>(
        reinterpret_cast<std::byte *>(&seg.region().header()) + seg.layout().bells_offset);
    words[2].fetch_or(1ull << 40);  // slot 104 does not exist (words[0] is the spinner word)
    std::vector<std::uint32_t> got;
    EXPECT_EQ(bell.drain([&](std::uint32_t s) { got.push_back(s); }), 2u);
    EXPECT_EQ(got, (std::vector<std::uint32_t>{3, 69}));
    EXPECT_FALSE(bell.any());
}

/* A ringer reads the spinner word right after its fetch_or: it must be on the line the fetch_or brought over. */
TEST(Doorbell, TheSpinnerWordSharesTheLineOfTheFirstSlotsBits) {
    TestSegment seg(params(1000));
    for (std::uint32_t r = 0; r <= seg.region().runtimes(); ++r) {
        Doorbell bell = seg.region().doorbell(r);
        auto *base = reinterpret_cast<std::byte *>(&seg.region().header()) + seg.layout().bells_offset +
                     r * seg.layout().bell_stride;
        auto *words = reinterpret_cast<std::atomic<std::uint64_t> *>(base);
        EXPECT_EQ(static_cast<void *>(&bell.spinner()), static_cast<void *>(&words[0]));
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>(base) % cache_line, 0u);
        ASSERT_TRUE(bell.ring(447));  // the last slot whose bit is on the spinner's line
        EXPECT_EQ(words[7].load(), 1ull << 63);
        EXPECT_EQ(words[0].load(), 0u);  // ringing never touches the spinner word
        ASSERT_TRUE(bell.ring(999));
        EXPECT_EQ(words[1 + 999 / 64].load(), 1ull << (999 % 64));
        EXPECT_EQ(bell.drain([](std::uint32_t) {}), 2u);
    }
}

/* -------------------------------------------------------------- rings */

TEST(Ring, FrameRoundTripInPlace) {
    TestSegment seg(params());
    RingView ring = seg.region().to_server(0);
    std::span<std::byte> w;
    ASSERT_EQ(ring.try_reserve(5, 5, &w), Status::ok);
    ASSERT_EQ(w.size(), 5u);
    std::memcpy(w.data(), "hello", 5);
    Frame f;
    EXPECT_EQ(ring.peek(&f), Status::would_block);  // not published yet
    ring.commit(5, FrameKind::request, frame_first | frame_last, 42, 5);
    ASSERT_EQ(ring.peek(&f), Status::ok);
    EXPECT_EQ(f.header.length, 5u);
    EXPECT_EQ(f.header.generation, 42u);
    EXPECT_EQ(f.header.flags, frame_first | frame_last);
    EXPECT_EQ(std::memcmp(f.payload.data(), "hello", 5), 0);
    ring.consume(f);
    EXPECT_TRUE(ring.empty());
}

TEST(Ring, FullRingBlocksAndWrapsWithPadOrImplicitSkip) {
    TestSegment seg(params());
    RingView ring = seg.region().to_server(0);
    const std::uint64_t cap = ring.capacity();
    /* The tail lands 8, 16, 24 (no header fits: implicit skip) and 40 bytes
     * (a pad frame) before the end. */
    for (std::uint64_t gap : {8u, 16u, 24u, 40u}) {
        ring.reset();
        std::span<std::byte> w;
        Frame f;
        std::uint64_t used = 0;
        while (cap - used > gap) {
            const std::uint64_t frame_bytes = std::min<std::uint64_t>(cap - used - gap, 1000);
            if (frame_bytes < sizeof(FrameHeader))
                break;
            const std::uint64_t len = frame_bytes - sizeof(FrameHeader);
            ASSERT_EQ(ring.try_reserve(len, len, &w), Status::ok);
            /* Every other frame handed over to the shared cache: a hint, the frames read the same. */
            ring.commit(len, FrameKind::response, 0, 1, unknown_length, (used / frame_align) % 2 == 0);
            ASSERT_EQ(ring.peek(&f), Status::ok);
            ring.consume(f);
            used += frame_bytes;
        }
        ASSERT_EQ(cap - used, gap);
        /* The next frame cannot fit in `gap`: it must go to the start. */
        ASSERT_EQ(ring.try_reserve(32, 32, &w), Status::ok) << "gap " << gap;
        std::memset(w.data(), 0xab, 32);
        ring.commit(32, FrameKind::response, frame_last, 1, unknown_length);
        ASSERT_EQ(ring.peek(&f), Status::ok) << "gap " << gap;
        EXPECT_EQ(f.header.length, 32u);
        EXPECT_EQ(f.payload.data(), reinterpret_cast<const std::byte *>(w.data()));
        EXPECT_EQ(static_cast<std::uint8_t>(f.payload[31]), 0xab);
        ring.consume(f);
        EXPECT_TRUE(ring.empty());
    }
    /* Fill until would_block. */
    ring.reset();
    std::span<std::byte> w;
    int frames = 0;
    while (ring.try_reserve(100, 100, &w) == Status::ok) {
        ring.commit(100, FrameKind::response, 0, 1, unknown_length);
        ++frames;
    }
    EXPECT_EQ(frames, static_cast<int>(cap / (sizeof(FrameHeader) + 104)));
    EXPECT_LT(ring.free_space(), sizeof(FrameHeader) + 104);
}

/* The producer stores a frame's mark, then the tail: a consumer can take the
 * frame by its mark and look again before the tail moves. */
TEST(Ring, ConsumerAheadOfALaggingTailSeesNothingYetNotCorruption) {
    TestSegment seg(params());
    RingView ring = seg.region().to_server(0);
    RingHeader &h = seg.region().slot(0)->to_server;
    std::span<std::byte> w;
    ASSERT_EQ(ring.try_reserve(8, 8, &w), Status::ok);
    ring.commit(8, FrameKind::request, frame_first, 1, unknown_length);
    Frame f;
    ASSERT_EQ(ring.peek(&f), Status::ok);
    ring.consume(f);
    h.tail.value.store(0);  // as if the tail store were not visible yet
    EXPECT_EQ(ring.peek(&f), Status::would_block);
    h.tail.value.store(f.next_head + 4096 * 2);  // but a tail a ring away is garbage
    EXPECT_EQ(ring.peek(&f), Status::corrupt);
}

TEST(Ring, ChunkIsBoundedSoProducerAndConsumerOverlap) {
    TestSegment seg(params(4, 65536));
    RingView ring = seg.region().to_client(1);
    std::span<std::byte> w;
    ASSERT_EQ(ring.try_reserve(1, 1 << 20, &w), Status::ok);
    EXPECT_EQ(w.size(), ring.max_chunk());
    EXPECT_EQ(ring.max_chunk(), 65536u / 4 - sizeof(FrameHeader));
}

/* ------------------------------------------------ messages and chunks */

TEST(Channel, SmallMessageIsOneFrame) {
    Pair p;
    const std::string msg = "ping";
    MessageWriter w(p.client, FrameKind::request, msg.size());
    ASSERT_EQ(w.write(bytes_of(msg)), Status::ok);
    ASSERT_EQ(w.finish(), Status::ok);
    Frame f;
    ASSERT_EQ(p.seg.region().to_server(p.handle.index).peek(&f), Status::ok);
    EXPECT_EQ(f.header.flags, frame_first | frame_last);
    MessageReader r(p.server);
    std::vector<std::byte> out;
    ASSERT_EQ(r.read_all(&out), Status::ok);
    EXPECT_EQ(std::string(reinterpret_cast<char *>(out.data()), out.size()), msg);
    auto snap = read_stats(p.seg.stats());
    EXPECT_EQ(snap.client[static_cast<int>(Counter::messages_sent)], 1u);
    EXPECT_EQ(snap.client[static_cast<int>(Counter::bytes_sent)], 4u);
    EXPECT_EQ(snap.client[static_cast<int>(Counter::wakeups_elided)], 1u);  // nobody slept
}

/*
 * A message that fits in one frame goes out as one frame wherever the ring's
 * cursor is: split at the end of the data area, its first part would be one
 * more notification, which wakes a parked peer to read half a message.
 */
TEST(Channel, AMessageThatFitsInAFrameIsNotSplitAtTheRingsEnd) {
    Pair p(4096);
    const std::uint64_t max_chunk = p.seg.region().to_server(p.handle.index).max_chunk();
    std::uint64_t notified = 0;
    for (int i = 0; i < 300; ++i) {
        const std::uint64_t size = 1 + (static_cast<std::uint64_t>(i) * 397) % max_chunk;
        const auto msg = courier::test::random_bytes(static_cast<unsigned>(i), size);
        MessageWriter w(p.client, FrameKind::request, i % 2 == 0 ? size : unknown_length);
        ASSERT_EQ(w.write(msg), Status::ok);
        ASSERT_EQ(w.finish(), Status::ok);
        std::vector<std::byte> out;
        EXPECT_EQ(read_frames(p.server, &out), 1) << "message " << i << " of " << size << " bytes";
        EXPECT_EQ(out, msg);
        auto snap = read_stats(p.seg.stats());
        const std::uint64_t now = snap.client[static_cast<int>(Counter::wakeups_sent)] +
                                  snap.client[static_cast<int>(Counter::wakeups_elided)];
        EXPECT_EQ(now - notified, 1u) << "message " << i << ": one notification per message";
        notified = now;
    }
}

TEST(Channel, MessageSpansSeveralChunksAndReassembles) {
    Pair p(16384);
    const auto msg = courier::test::random_bytes(7, 9000);  // > max_chunk, < ring
    MessageWriter w(p.client, FrameKind::request, unknown_length);
    ASSERT_EQ(w.write(msg), Status::ok);
    ASSERT_EQ(w.finish(), Status::ok);
    std::vector<std::byte> out;
    EXPECT_EQ(read_frames(p.server, &out), 3);  // 4072 + 4072 + 856
    EXPECT_EQ(out, msg);
}

TEST(Channel, ReserveCommitWritesInPlace) {
    Pair p;
    MessageWriter w(p.server, FrameKind::response, 10);
    std::span<std::byte> s;
    ASSERT_EQ(w.reserve(10, &s), Status::ok);
    ASSERT_EQ(s.size(), 10u);
    std::memcpy(s.data(), "0123456789", 10);
    w.commit(10);
    ASSERT_EQ(w.finish(), Status::ok);
    MessageReader r(p.client);
    std::vector<std::byte> out;
    ASSERT_EQ(r.read_all(&out), Status::ok);
    EXPECT_EQ(r.kind(), FrameKind::response);
    EXPECT_EQ(std::memcmp(out.data(), "0123456789", 10), 0);
}

TEST(Channel, EmptyMessageIsAFrameToo) {
    Pair p;
    MessageWriter w(p.server, FrameKind::response, 0);
    ASSERT_EQ(w.finish(), Status::ok);
    MessageReader r(p.client);
    std::vector<std::byte> out{std::byte{1}};
    ASSERT_EQ(r.read_all(&out), Status::ok);
    EXPECT_TRUE(out.empty());
}

TEST(Channel, ProducerRefusesMessagesAboveTheLimit) {
    Pair p(4096, 1000);
    MessageWriter known(p.client, FrameKind::request, 1001);
    EXPECT_EQ(known.write(courier::test::random_bytes(1, 10)), Status::too_large);
    /* Streaming with unknown length: refused when the limit is crossed,
     * and the consumer sees the message end as aborted, not hang. */
    Pair q(4096, 1000);
    MessageWriter streamed(q.client, FrameKind::request, unknown_length);
    ASSERT_EQ(streamed.write(courier::test::random_bytes(1, 600)), Status::ok);
    EXPECT_EQ(streamed.write(courier::test::random_bytes(2, 600)), Status::too_large);
    MessageReader r(q.server);
    std::vector<std::byte> out;
    EXPECT_EQ(r.read_all(&out), Status::aborted);
    EXPECT_GE(read_stats(q.seg.stats()).global[static_cast<int>(GlobalCounter::too_large)], 1u);
}

TEST(Channel, ConsumerRejectsADeclaredTotalAboveTheLimit) {
    Pair p(4096, 1000);
    RingView ring = p.seg.region().to_server(p.handle.index);
    std::span<std::byte> w;
    ASSERT_EQ(ring.try_reserve(8, 8, &w), Status::ok);
    ring.commit(8, FrameKind::request, frame_first, p.handle.generation, 5000);  // lies: 5000 > 1000
    MessageReader r(p.server);
    std::vector<std::byte> out;
    EXPECT_EQ(r.read_all(&out), Status::too_large);
}

TEST(Channel, ReaderRejectsFramesOfAnotherGenerationOrKind) {
    Pair p;
    RingView ring = p.seg.region().to_client(p.handle.index);
    std::span<std::byte> w;
    ASSERT_EQ(ring.try_reserve(4, 4, &w), Status::ok);
    ring.commit(4, FrameKind::response, frame_first | frame_last, p.handle.generation + 1, 4);
    MessageReader r(p.client);
    std::vector<std::byte> out;
    EXPECT_EQ(r.read_all(&out), Status::corrupt);

    Pair q;
    RingView ring2 = q.seg.region().to_client(q.handle.index);
    ASSERT_EQ(ring2.try_reserve(4, 4, &w), Status::ok);
    ring2.commit(4, FrameKind::request, frame_first | frame_last, q.handle.generation, 4);
    MessageReader r2(q.client);
    EXPECT_EQ(r2.read_all(&out), Status::corrupt);  // a client never receives a request
}

TEST(Channel, WaitingForDataTimesOutAtTheDeadline) {
    Pair p;
    Endpoint client = p.client;
    client.policy.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
    MessageReader r(client);
    std::vector<std::byte> out;
    EXPECT_EQ(r.read_all(&out), Status::timeout);
    /* It slept, looking again now and then (a client's wake may be owed, wait.h), until the deadline. */
    EXPECT_GE(read_stats(p.seg.stats()).client[static_cast<int>(Counter::sleeps)], 1u);
}

/*
 * A reader spins on the mark of the frame it waits for and reads the slot's state and the server epoch
 * only every 64th poll (wait.h). Both must still end the wait within the spin: a frame published
 * meanwhile, and then a server restart. With a 30 s budget, a wait that missed either would end in
 * the park path, not as a spin hit.
 */
TEST(Channel, ASpinningReaderSeesAFrameAndAServerRestartWithinItsSpin) {
    Pair p;
    Endpoint spinner = p.client;
    spinner.policy.spin = std::chrono::seconds(30);
    spinner.policy.deadline = std::chrono::steady_clock::time_point::max();
    spinner.policy = p.seg.region().with_spinner_cap(spinner.policy);
    const auto spinning = [&] {
        while (p.seg.region().header().spinners.load() == 0)
            std::this_thread::yield();
    };
    const auto counter = [&](Counter c) { return read_stats(p.seg.stats()).client[static_cast<int>(c)]; };

    MessageReader r(spinner);
    auto first = std::async(std::launch::async, [&] {
        std::vector<std::byte> out;
        return r.read_all(&out) == Status::ok ? out.size() : 0;
    });
    spinning();
    MessageWriter w(p.server, FrameKind::response, 3);
    ASSERT_EQ(w.write(bytes_of("abc")), Status::ok);
    ASSERT_EQ(w.finish(), Status::ok);
    EXPECT_EQ(first.get(), 3u);
    EXPECT_EQ(counter(Counter::spin_hits), 1u);

    MessageReader again(spinner);
    auto second = std::async(std::launch::async, [&] {
        std::span<const std::byte> chunk;
        bool last = false;
        return again.next(&chunk, &last);
    });
    spinning();
    p.seg.region().begin_server_epoch(p.waker);
    EXPECT_EQ(second.get(), Status::server_restarted);
    EXPECT_EQ(counter(Counter::spin_hits), 2u);
    EXPECT_EQ(counter(Counter::sleeps), 0u);
}

/* -------------------------------------------------- ownership, epochs */

TEST(Region, AbandonedSlotReturnsOnlyWhenTheServerLetsGo) {
    TestSegment seg(params(1));
    FutexWaker waker;
    Region &r = seg.region();
    r.begin_server_epoch(waker);
    SlotHandle h;
    ASSERT_EQ(r.lease(1, &h), Status::ok);
    std::uint64_t epoch;
    ASSERT_EQ(r.begin_call(h, 0, &epoch), Status::ok);
    std::uint64_t gen;
    ASSERT_EQ(r.accept(h.index, waker, &gen), Status::ok);
    EXPECT_EQ(r.accept(h.index, waker, &gen), Status::stale);  // a second ring of the bell
    EXPECT_EQ(gen, h.generation);
    r.abandon(h, waker);
    SlotHandle other;
    EXPECT_EQ(r.lease(2, &other), Status::no_slot);  // server may still write
    EXPECT_TRUE(r.client_gone(h.index, gen));
    r.finish_serving(h.index);
    ASSERT_EQ(r.lease(2, &other), Status::ok);
    EXPECT_GT(other.generation, h.generation);
    auto snap = read_stats(seg.stats());
    EXPECT_EQ(snap.global[static_cast<int>(GlobalCounter::abandons)], 1u);
}

TEST(Region, NewServerEpochReleasesSlotsOfDeadCallsAndFailsWaiters) {
    TestSegment seg(params(2));
    FutexWaker waker;
    Region &r = seg.region();
    r.begin_server_epoch(waker);
    SlotHandle a, b;
    ASSERT_EQ(r.lease(1, &a), Status::ok);
    ASSERT_EQ(r.lease(2, &b), Status::ok);
    std::uint64_t epoch;
    ASSERT_EQ(r.begin_call(a, 0, &epoch), Status::ok);
    ASSERT_EQ(r.begin_call(b, 0, &epoch), Status::ok);
    r.abandon(a, waker);  // a's client gave up; a's server is about to die
    EXPECT_EQ(r.slots_in_use(), 2u);
    EXPECT_EQ(r.begin_server_epoch(waker), epoch + 1);
    EXPECT_EQ(r.slots_in_use(), 1u);  // a is back, b still leased by its client
    Endpoint ep{&r, b.index, b.generation, epoch, true, nullptr, {}, nullptr};
    EXPECT_EQ(ep.call_alive(), Status::server_restarted);
    EXPECT_EQ(read_stats(seg.stats()).global[static_cast<int>(GlobalCounter::server_restarts)], 1u);
}

/*
 * Found by model/slots.pml (KEEP_DEAD_SPINNER): a serving process that died while one of its threads
 * spun left its bell's spinner word set, so every ring after the restart was elided and the new
 * threads slept through it. The ring below must wake the parked thread, not be elided.
 */
TEST(Region, AServerThatDiedSpinningDoesNotSilenceTheDoorbell) {
    TestSegment seg(params(1));
    FutexWaker waker;
    Region &r = seg.region();
    r.begin_server_epoch(waker);
    r.doorbell(0).spinner().store(1);  // the old process died between announcing and clearing its spin
    r.begin_server_epoch(waker);
    auto taken = std::async(std::launch::async, [&] {
        FutexWaker own;
        Accepted call;
        return Dispatcher(r, 0).next(own, std::chrono::nanoseconds(0), [] { return false; },
                                     std::chrono::steady_clock::now() + std::chrono::seconds(2), &call);
    });
    while (r.dispatch(0).idle.sleeping.load() == 0)
        std::this_thread::yield();
    SlotHandle h;
    ASSERT_EQ(r.lease(1, &h), Status::ok);
    std::uint64_t epoch;
    ASSERT_EQ(r.begin_call(h, 0, &epoch), Status::ok);
    SideCounters ringer{};
    r.ring_doorbell(0, h, waker, &ringer);
    EXPECT_EQ(ringer.value[static_cast<int>(Counter::wakeups_sent)].load(), 1u);  // not elided
    EXPECT_EQ(taken.get(), Status::ok);
}

namespace {

/* A region of two runtimes with one session between calls on it. */
struct Watched {
    TestSegment seg{RegionParams{2, 4096, 65536, 2}};
    FutexWaker waker;
    Region &r = seg.region();
    SlotHandle h;
    Watched() {
        r.begin_server_epoch(waker);
        EXPECT_EQ(r.lease(1, &h), Status::ok);
    }
    std::uint32_t state() const { return r.slot(h.index)->state.load(); }
};

/* A hang guard, not a speed: a lost wakeup shows as this deadline's timeout. */
WaitPolicy without_spin() {
    WaitPolicy p;
    p.spin = {};
    p.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    return p;
}

/* Serves a taken call as far as its function name, then lets go; ok only if the name is "f". */
Status read_f_and_let_go(Region &r, const Accepted &call, const WaitPolicy &policy,
                         const std::atomic<bool> *stopping = nullptr) {
    FutexWaker own;
    ServerCall server(r, call, own, policy, stopping);
    char fn[max_function_name + 1];
    std::size_t length = 0;
    const Status s = server.read_function(fn, &length);
    server.finish();
    return s == Status::ok && std::string_view(fn, length) != "f" ? Status::corrupt : s;
}

/* What a serving thread ended with, and the slot it took (nil_index if none). */
struct Served {
    Status status;
    std::uint32_t index;
};

/*
 * On a thread of its own: takes runtime 0's next call (spinning up to
 * `spin` while it watches `watch`), then serves it with read_f_and_let_go.
 */
std::future<Served> serve_next_call(Region &r, const WaitPolicy &policy, std::chrono::nanoseconds spin,
                                    std::uint32_t watch = nil_index) {
    return std::async(std::launch::async, [&r, &policy, spin, watch] {
        FutexWaker own;
        Accepted call;
        const Status s = Dispatcher(r, 0).next(own, spin, [] { return false; }, policy.deadline, &call, watch);
        if (s != Status::ok)
            return Served{s, nil_index};
        return Served{read_f_and_let_go(r, call, policy), call.index};
    });
}

/* A futex waker that also counts the wakes it sent, per waiter. */
class CountingWaker final : public Waker {
public:
    std::uint32_t prepare(Waiter &self) override { return futex_.prepare(self); }
    ParkResult park(Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) override {
        return futex_.park(self, token, timeout);
    }
    void wake(Waiter &peer) override {
        count(peer);
        futex_.wake(peer);
    }
    void wake_all(Waiter &peer) override {
        count(peer);
        futex_.wake_all(peer);
    }
    std::uint32_t wakes_of(Waiter &peer) {
        std::lock_guard<std::mutex> lock(mutex_);
        return wakes_[&peer];
    }

private:
    void count(Waiter &peer) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++wakes_[&peer];
    }
    FutexWaker futex_;
    std::mutex mutex_;
    std::map<Waiter *, std::uint32_t> wakes_;
};

}  // namespace

/*
 * Found by model/slots.pml (NO_FIRST_NOTIFY): a bit a dead server left in the bell names a slot whose
 * next lease has begun a call; the new server's thread takes that call before its request is
 * published and parks on the slot for it. The request's ring must wake it: the first frame only rang
 * the bell, and the thread slept until the session gave up.
 */
TEST(Region, AThreadThatTookACallBeforeItsRequestIsWokenByTheRequest) {
    Watched w;  // unwatched here: only its session is used
    Region &r = w.r;
    const SlotHandle h = w.h;
    std::uint64_t epoch = 0;
    ASSERT_EQ(r.begin_call(h, 0, &epoch), Status::ok);
    r.doorbell(0).ring(h.index);  // the stale bit, as a dead server left it
    const WaitPolicy no_spin = without_spin();
    auto served = serve_next_call(r, no_spin, std::chrono::nanoseconds(0));
    while (r.slot(h.index)->server.sleeping.load() == 0)
        std::this_thread::yield();  // taken, and parked for a request that is not there yet
    SideCounters ringer{};
    Endpoint client{&r, h.index, h.generation, epoch, true, &w.waker, no_spin, &ringer};
    client.ring_runtime = 0;
    MessageWriter request(client, FrameKind::request, 2);
    ASSERT_EQ(request.write(std::as_bytes(std::span("f", 2))), Status::ok);
    ASSERT_EQ(request.finish(), Status::ok);
    /* No idle thread to wake: the one wake is the parked server's (else it sleeps to the deadline). */
    EXPECT_EQ(ringer.value[static_cast<int>(Counter::wakeups_sent)].load(), 1u);
    EXPECT_EQ(served.get().status, Status::ok);
}

/* ------------------------------------------------ the watched slot */

TEST(Watch, TheNextCallOfAWatchedSessionSkipsTheBellAndItsWatcherTakesIt) {
    Watched w;
    ASSERT_TRUE(w.r.watch(w.h.index, 1));
    std::uint64_t epoch = 0, generation = 0;
    bool watched = false;
    ASSERT_EQ(w.r.begin_call(w.h, 1, &epoch, &watched), Status::ok);
    EXPECT_TRUE(watched);
    EXPECT_TRUE(w.r.watched_call_begun(w.h.index));
    ASSERT_EQ(w.r.end_watch(w.h.index, 1, w.waker, &generation), Status::ok);
    EXPECT_EQ(generation, w.h.generation);
    EXPECT_EQ(w.state(), held_by_client | held_by_server | accepted_by_server);  // no watch bits left
    w.r.finish_serving(w.h.index);
    EXPECT_EQ(w.state(), held_by_client);
    EXPECT_EQ(read_stats(w.seg.stats()).server[static_cast<int>(Counter::watched_calls)], 1u);
}

TEST(Watch, ACallForAnotherRuntimeRingsAndIsLeftToIt) {
    Watched w;
    ASSERT_TRUE(w.r.watch(w.h.index, 1));
    std::uint64_t epoch = 0, generation = 0;
    bool watched = true;
    ASSERT_EQ(w.r.begin_call(w.h, 0, &epoch, &watched), Status::ok);
    EXPECT_FALSE(watched);  // the session rings runtime 0's bell itself
    EXPECT_EQ(w.r.end_watch(w.h.index, 1, w.waker, &generation), Status::stale);
    EXPECT_EQ(w.state(), held_by_client | held_by_server);  // still the call's, for runtime 0 to accept
    EXPECT_EQ(w.r.accept(w.h.index, w.waker, &generation), Status::ok);
}

TEST(Watch, OnlyASessionBetweenCallsIsWatchedAndByOneRuntime) {
    Watched w;
    std::uint64_t epoch = 0, generation = 0;
    ASSERT_EQ(w.r.begin_call(w.h, 0, &epoch), Status::ok);
    EXPECT_FALSE(w.r.watch(w.h.index, 0));  // mid-call
    ASSERT_EQ(w.r.accept(w.h.index, w.waker, &generation), Status::ok);
    w.r.finish_serving(w.h.index);
    ASSERT_TRUE(w.r.watch(w.h.index, 0));
    EXPECT_FALSE(w.r.watch(w.h.index, 1));  // the other runtime's spinner loses: the word names one runtime
    EXPECT_FALSE(w.r.watch(1, 0));          // a free slot
    EXPECT_EQ(w.r.end_watch(w.h.index, 0, w.waker, &generation), Status::stale);  // gave up, nothing begun
    EXPECT_EQ(w.state(), held_by_client);
}

TEST(Watch, ASessionThatLeavesWhileWatchedGetsItsSlotBackWhenTheWatchEnds) {
    Watched w;
    ASSERT_TRUE(w.r.watch(w.h.index, 0));
    ASSERT_EQ(w.r.release(w.h), Status::ok);
    EXPECT_EQ(w.r.slots_in_use(), 1u);  // the watcher still polls the word: not free yet
    std::uint64_t generation = 0;
    EXPECT_EQ(w.r.end_watch(w.h.index, 0, w.waker, &generation), Status::stale);
    EXPECT_EQ(w.state(), 0u);
    EXPECT_EQ(w.r.slots_in_use(), 0u);
    SlotHandle a, b;  // both slots come back from the free list
    EXPECT_EQ(w.r.lease(2, &a), Status::ok);
    EXPECT_EQ(w.r.lease(3, &b), Status::ok);
}

/*
 * model/slots.pml (SCAN_FORGETS_WATCHED): a watcher died; a session read the new epoch and began a
 * call under the dead watch before the new epoch's scan reached its slot, so it did not ring. The
 * scan must ring for it. (The epoch the session read is set by hand: the scan is not interruptible
 * here.)
 */
TEST(Watch, ANewEpochRingsForACallBegunUnderADeadWatcher) {
    Watched w;
    ASSERT_TRUE(w.r.watch(w.h.index, 1));
    std::uint64_t epoch = 0;
    bool watched = false;
    ASSERT_EQ(w.r.begin_call(w.h, 1, &epoch, &watched), Status::ok);
    ASSERT_TRUE(watched);
    w.r.slot(w.h.index)->call_epoch.store(epoch + 1);  // as if read after the new epoch began
    EXPECT_EQ(w.r.begin_server_epoch(w.waker), epoch + 1);
    EXPECT_EQ(w.state(), held_by_client | held_by_server);  // the watch is gone, the call is not
    std::uint32_t rung = nil_index;
    EXPECT_TRUE(w.r.doorbell(1).claim(0, &rung));
    EXPECT_EQ(rung, w.h.index);
    EXPECT_FALSE(w.r.doorbell(0).any());
}

TEST(Watch, ANewEpochFreesASlotWhoseSessionLeftWhileADeadThreadWatchedIt) {
    Watched w;
    ASSERT_TRUE(w.r.watch(w.h.index, 0));
    ASSERT_EQ(w.r.release(w.h), Status::ok);
    w.r.begin_server_epoch(w.waker);
    EXPECT_EQ(w.state(), 0u);
    EXPECT_EQ(w.r.slots_in_use(), 0u);
    EXPECT_FALSE(w.r.doorbell(0).any());
}

/*
 * The worker stops while a thread watches a session that has just begun a
 * call (so rang no bell). The watcher must take the call on its way out,
 * not leave it held for a server nobody will name; the call then ends as
 * every call in flight at a stop does: the server lets go, the session is
 * told.
 */
TEST(Watch, AStopWhileWatchingTakesTheCallBegunUnderItAndLetsItGo) {
    Watched w;
    const WaitPolicy no_spin = without_spin();
    std::atomic<bool> stopping{false};
    std::uint64_t epoch = 0;
    bool watched = false;
    /* The stop is looked at every 64 polls; the session's call begins just before the look that sees it. */
    const StopCheck stop = [&] {
        if (!stopping.load() && (w.state() & watched_by_server) != 0) {
            EXPECT_EQ(w.r.begin_call(w.h, 0, &epoch, &watched), Status::ok);
            stopping.store(true);
        }
        return stopping.load();
    };
    FutexWaker own;
    Accepted call;
    ASSERT_EQ(Dispatcher(w.r, 0).next(own, std::chrono::hours(1), stop, no_spin.deadline, &call, w.h.index),
              Status::ok);
    ASSERT_TRUE(watched);  // so it rang no bell: only the watcher knows of it
    EXPECT_EQ(call.index, w.h.index);
    EXPECT_EQ(read_f_and_let_go(w.r, call, no_spin, &stopping), Status::stopping);
    EXPECT_EQ(w.state(), held_by_client);  // let go: nothing holds the call for a server that is gone
    Endpoint client{&w.r, w.h.index, w.h.generation, epoch, true, &w.waker, no_spin, nullptr};
    MessageReader response(client);
    std::span<const std::byte> chunk;
    bool last = false;
    EXPECT_EQ(response.next(&chunk, &last), Status::server_restarted);  // told, not left to its deadline
}

/*
 * A watcher took a session's call before its request and parked on the
 * slot for it; the session gives up instead. The abandon must wake the
 * watcher (else it sleeps to its deadline) and the slot must come back.
 */
TEST(Watch, AnAbandonWakesAWatcherThatTookTheCallBeforeItsRequest) {
    Watched w;
    const WaitPolicy no_spin = without_spin();
    auto served = serve_next_call(w.r, no_spin, std::chrono::hours(1), w.h.index);
    while ((w.state() & watched_by_server) == 0)
        std::this_thread::yield();
    std::uint64_t epoch = 0;
    bool watched = false;
    ASSERT_EQ(w.r.begin_call(w.h, 0, &epoch, &watched), Status::ok);
    ASSERT_TRUE(watched);
    Waiter &server = w.r.slot(w.h.index)->server;
    while (server.sleeping.load() == 0)
        std::this_thread::yield();  // taken, and parked for the request
    CountingWaker session;
    w.r.abandon(w.h, session);
    EXPECT_EQ(session.wakes_of(server), 1u);  // else the watcher sleeps to its deadline
    const Served end = served.get();
    EXPECT_EQ(end.status, Status::abandoned);
    EXPECT_EQ(end.index, w.h.index);  // taken by watching, not from the bell
    EXPECT_EQ(w.state(), 0u);
    EXPECT_EQ(w.r.slots_in_use(), 0u);
}

/*
 * Found by model/slots.pml (WAKE_ONLY_CLEARED): a server published its response and let go, then its
 * process died before the wake. The new epoch must wake that client too, not only those whose calls
 * it cleared.
 */
TEST(Region, ANewEpochWakesAClientWhoseServerLetGoButDiedBeforeWaking) {
    TestSegment seg(params(1));
    FutexWaker waker;
    Region &r = seg.region();
    r.begin_server_epoch(waker);
    SlotHandle h;
    ASSERT_EQ(r.lease(1, &h), Status::ok);
    std::uint64_t epoch, gen;
    ASSERT_EQ(r.begin_call(h, 0, &epoch), Status::ok);
    ASSERT_EQ(r.accept(h.index, waker, &gen), Status::ok);
    r.finish_serving(h.index);  // let go; the wake that should follow never comes
    Waiter &client = r.slot(h.index)->client;
    auto parked = std::async(std::launch::async, [&] {
        FutexWaker own;
        const std::uint32_t token = own.prepare(client);
        client.sleeping.store(1);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        const ParkResult result = own.park(client, token, std::chrono::seconds(2));
        client.sleeping.store(0);
        return result;
    });
    while (client.sleeping.load() == 0)
        std::this_thread::yield();
    r.begin_server_epoch(waker);
    EXPECT_EQ(parked.get(), ParkResult::woken);  // timeout means nobody woke it
}

/* A server that gives up mid-response (it is stopping) and lets go: the client's wait ends. */
TEST(Region, AClientWaitingOnAServerThatLetGoIsToldNotLeftWaiting) {
    Pair p(4096);
    MessageWriter w(p.server, FrameKind::response, unknown_length);
    /* One frame published (a frame holds at most a quarter of the ring), the next one left open. */
    ASSERT_EQ(w.write(courier::test::random_bytes(1, 4096 / 4)), Status::ok);
    std::uint64_t gen = 0;
    p.seg.region().accept(p.handle.index, p.waker, &gen);
    p.seg.region().finish_serving(p.handle.index);
    MessageReader r(p.client);
    std::span<const std::byte> chunk;
    bool last = true;
    ASSERT_EQ(r.next(&chunk, &last), Status::ok);  // what was published before the let-go still arrives
    EXPECT_FALSE(last);
    EXPECT_EQ(r.next(&chunk, &last), Status::server_restarted);  // then the end, not a wait until the deadline
}

/*
 * Owed wakes (region.h): with the bell empty a sleeping client is woken at
 * once; with a call in the bell its wake is owed, once however often, and
 * paid once by whoever pays; an awake client is neither woken nor owed.
 */
TEST(Region, AWakeIsOwedOnlyWhileCallsWaitAndIsPaidOnce) {
    TestSegment seg(params(4));
    FutexWaker waker;
    Region &r = seg.region();
    SlotHandle sleeper, caller;
    ASSERT_EQ(r.lease(1, &sleeper), Status::ok);
    ASSERT_EQ(r.lease(2, &caller), Status::ok);
    Waiter &client = r.slot(sleeper.index)->client;
    SideCounters *counters = &seg.stats().slot(sleeper.index)->server;
    auto count = [&](Counter c) { return read_stats(seg.stats()).server[static_cast<int>(c)]; };
    client.sleeping.store(sleeping_for_data);

    r.wake_or_owe(sleeper.index, 0, waker, counters);
    EXPECT_EQ(client.futex_word.load(), 1u) << "the bell is empty: woken at once";
    EXPECT_FALSE(r.owed_wakes().any());

    ASSERT_TRUE(r.doorbell(0).ring(caller.index));
    r.wake_or_owe(sleeper.index, 0, waker, counters);
    r.wake_or_owe(sleeper.index, 0, waker, counters);
    EXPECT_EQ(client.futex_word.load(), 1u) << "a call waits: the wake is owed, not made";
    EXPECT_EQ(count(Counter::wakeups_owed), 2u);
    EXPECT_EQ(count(Counter::wakeups_sent), 1u);
    r.wake_or_owe(sleeper.index, 1, waker, counters);  // another runtime's bell is empty
    EXPECT_EQ(client.futex_word.load(), 2u);

    client.sleeping.store(0);
    r.wake_or_owe(sleeper.index, 0, waker, counters);
    EXPECT_EQ(count(Counter::wakeups_elided), 1u) << "an awake client is neither woken nor owed";
    EXPECT_EQ(count(Counter::wakeups_owed), 2u);

    client.sleeping.store(sleeping_for_data);
    EXPECT_EQ(r.pay_owed_wakes(0, 2, waker, nullptr), 1u) << "owed twice, paid once";
    EXPECT_EQ(client.futex_word.load(), 3u);
    EXPECT_EQ(r.pay_owed_wakes(0, 2, waker, nullptr), 0u);
    EXPECT_EQ(client.futex_word.load(), 3u);
}

/* A session pays at most its share when it ends a call; the rest stay owed for others. */
TEST(Region, PayingOwedWakesStopsAtTheGivenNumber) {
    TestSegment seg(params(8));
    FutexWaker waker;
    Region &r = seg.region();
    for (std::uint32_t i = 0; i < 5; ++i) {
        r.slot(i)->client.sleeping.store(sleeping_for_data);
        ASSERT_TRUE(r.owed_wakes().ring(i));
    }
    EXPECT_EQ(r.pay_owed_wakes(3, 2, waker, nullptr), 2u);
    EXPECT_EQ(r.slot(3)->client.futex_word.load() + r.slot(4)->client.futex_word.load(), 2u) << "from slot 3 on";
    EXPECT_EQ(r.pay_owed_wakes(0, 8, waker, nullptr), 3u);
    for (std::uint32_t i = 0; i < 5; ++i)
        EXPECT_EQ(r.slot(i)->client.futex_word.load(), 1u) << "slot " << i;
    EXPECT_FALSE(r.owed_wakes().any());
}

/* A serving thread that finds its bell empty pays every owed wake before it spins or parks. */
TEST(Region, AThreadThatFindsTheBellEmptyPaysTheOwedWakes) {
    TestSegment seg(params(4));
    FutexWaker waker;
    Region &r = seg.region();
    r.begin_server_epoch(waker);
    for (std::uint32_t i : {0u, 2u, 3u}) {
        r.slot(i)->client.sleeping.store(sleeping_for_data);
        ASSERT_TRUE(r.owed_wakes().ring(i));
    }
    Dispatcher dispatcher(r, 0);
    Accepted accepted;
    EXPECT_EQ(dispatcher.next(waker, {}, [] { return false; },
                              std::chrono::steady_clock::now() + std::chrono::milliseconds(1), &accepted),
              Status::timeout);
    for (std::uint32_t i : {0u, 2u, 3u})
        EXPECT_EQ(r.slot(i)->client.futex_word.load(), 1u) << "slot " << i;
    EXPECT_FALSE(r.owed_wakes().any());
}

/* ------------------------------------------------------ the kept call */

namespace {

/* One session and the serving side in this thread, taking turns (as core_one_thread does). */
struct Kept {
    TestSegment seg{RegionParams{2, 4096, 65536, 2}};
    FutexWaker waker;
    Region &r = seg.region();
    Client client{r, waker, 1};
    WaitPolicy policy = without_spin();
    Accepted call;  // the call the serving side holds or kept
    Kept() {
        r.begin_server_epoch(waker);
        EXPECT_EQ(client.open(), Status::ok);
    }
    std::uint32_t state() const { return r.slot(client.handle().index)->state.load(); }
    std::uint64_t count(Counter c, bool server) {
        const auto snap = read_stats(seg.stats());
        return (server ? snap.server : snap.client)[static_cast<int>(c)];
    }
    /* The session's half up to its request: fn "f", `payload_bytes` bytes. */
    Status send(std::uint32_t runtime, std::size_t payload_bytes) {
        const std::vector<std::byte> payload(payload_bytes, std::byte{'p'});
        Status s = client.start(runtime, "f", payload.size(), policy);
        if (s == Status::ok)
            s = client.request().write(payload);
        return s == Status::ok ? client.finish_request() : s;
    }
    /* The serving half: reads the request, answers its size, offers to keep; true if it kept the call. */
    bool answer(bool offer) {
        ServerCall server(r, call, waker, policy);
        if (offer)
            server.offer_keep();
        char fn[max_function_name + 1];
        std::size_t length = 0;
        std::vector<std::byte> payload;
        EXPECT_EQ(server.read_function(fn, &length), Status::ok);
        EXPECT_EQ(server.read_payload(&payload), Status::ok);
        const std::string size = std::to_string(payload.size());
        EXPECT_EQ(server.respond_all(FrameKind::response, std::as_bytes(std::span(size.data(), size.size()))),
                  Status::ok);
        server.finish();
        return server.kept();
    }
    /* The session's answer, as text; ends the call. */
    std::string receive() {
        std::vector<std::byte> out;
        const Status s = client.response().read_all(&out);
        client.end(s);
        return s == Status::ok ? std::string(reinterpret_cast<const char *>(out.data()), out.size()) : describe(s);
    }
    /* A first call to runtime 0, answered by a thread that keeps it; true if all went so. */
    bool keep_one() {
        return send(0, 10) == Status::ok && take(0) == Status::ok && answer(true) && receive() == "10";
    }
    /* A call taken off runtime `runtime`'s bell (spin 0: the bell must have rung). */
    Status take(std::uint32_t runtime) {
        return Dispatcher(r, runtime).next(waker, {}, [] { return false; }, policy.deadline, &call);
    }
};

}  // namespace

/*
 * A kept call's next request of one frame goes straight to the ring: no bell, no write of the state
 * word, and the keeper finds it at its first look. An answer without the offer lets go as before.
 */
TEST(Keep, TheNextRequestGoesStraightToTheKeeperWithNoBellAndNoStateWord) {
    Kept k;
    ASSERT_EQ(k.send(0, 10), Status::ok);
    ASSERT_EQ(k.take(0), Status::ok);
    EXPECT_TRUE(k.answer(true));
    EXPECT_EQ(k.state() & ~kept_phase, held_by_client | held_by_server | accepted_by_server | kept_by_server);
    EXPECT_EQ(k.receive(), "10");

    ASSERT_EQ(k.send(0, 20), Status::ok);
    EXPECT_FALSE(k.r.doorbell(0).any()) << "a request to its keeper rang the bell";
    EXPECT_EQ(k.state() & ~kept_phase, held_by_client | held_by_server | accepted_by_server | kept_by_server);
    EXPECT_EQ(k.count(Counter::kept_calls, false), 1u);
    const Accepted kept = k.call;
    ASSERT_EQ(Dispatcher(k.r, 0).next(k.waker, std::chrono::seconds(10), [] { return false; }, k.policy.deadline,
                                      &k.call, kept.index, true),
              Status::ok);
    EXPECT_EQ(k.call.index, kept.index);
    EXPECT_EQ(k.call.generation, kept.generation);
    EXPECT_EQ(k.count(Counter::kept_calls, true), 1u);
    EXPECT_EQ(k.state() & ~kept_phase, held_by_client | held_by_server | accepted_by_server);  // taken
    EXPECT_FALSE(k.answer(false));
    EXPECT_EQ(k.state(), held_by_client);
    EXPECT_EQ(k.receive(), "20");

    ASSERT_EQ(k.send(0, 30), Status::ok);  // not kept: the usual way
    EXPECT_TRUE(k.r.doorbell(0).any());
    ASSERT_EQ(k.take(0), Status::ok);
    EXPECT_FALSE(k.answer(false));
    EXPECT_EQ(k.receive(), "30");
    EXPECT_EQ(k.count(Counter::kept_calls, false), 1u);
}

/*
 * The race the kept call has: the keeper's last look at the ring came before the request, and it let
 * go. The session, finding no answer and the call let go, begins the call then and rings for it; the
 * request it wrote before is what the next thread reads.
 */
TEST(Keep, ARequestTheKeeperLetGoUnreadBeginsItsCallAndRingsForIt) {
    Kept k;
    ASSERT_TRUE(k.keep_one());

    ASSERT_EQ(k.send(0, 25), Status::ok);  // on the kept path
    k.r.let_go(k.call.index, k.call.generation, 0, k.waker, nullptr);  // after its last look, unseen
    k.r.doorbell(0).spinner().store(0);  // and it stops spinning, as its spin's end does: ringers wake again
    EXPECT_EQ(k.state(), held_by_client);
    auto served = std::async(std::launch::async, [&] {
        if (k.take(0) != Status::ok)  // parks until the session rings
            return false;
        return !k.answer(false);
    });
    EXPECT_EQ(k.receive(), "25");
    EXPECT_TRUE(served.get());
    EXPECT_EQ(k.count(Counter::kept_calls, false), 1u);
    EXPECT_EQ(k.count(Counter::kept_calls, true), 0u);  // the keeper never took it
    EXPECT_EQ(k.state(), held_by_client);
}

/*
 * A call the keeper may not take (another runtime, or a request of more than one frame) recalls the
 * kept call: the keeper, with a spin far longer than the session's hang guard, lets go at the recall,
 * and the call begins the usual way, ringing its own runtime's bell.
 */
TEST(Keep, AnotherRuntimeOrALongRequestRecallsTheKeptCall) {
    for (const auto &[runtime, bytes] : {std::pair<std::uint32_t, std::size_t>{1, 10}, {0, 3000}}) {
        Kept k;
        ASSERT_TRUE(k.keep_one());
        std::atomic<bool> stop{false};
        auto keeper = std::async(std::launch::async, [&] {
            Accepted kept = k.call;
            return Dispatcher(k.r, 0).next(k.waker, std::chrono::seconds(60), [&] { return stop.load(); },
                                           std::chrono::steady_clock::time_point::max(), &kept, kept.index, true);
        });
        ASSERT_EQ(k.send(runtime, bytes), Status::ok) << "runtime " << runtime << ", " << bytes << " bytes";
        EXPECT_EQ(k.count(Counter::kept_calls, false), 0u);
        if (runtime == 0) {  // its own bell's call: the keeper takes it with no stop asked for (a stop may win)
            EXPECT_EQ(keeper.get(), Status::ok);
        } else {
            stop.store(true);
            Dispatcher(k.r, 0).wake_all(k.waker);
            EXPECT_EQ(keeper.get(), Status::stopping);
        }
        if (runtime == 1) {
            EXPECT_TRUE(k.r.doorbell(1).any());
            ASSERT_EQ(k.take(1), Status::ok);
        }
        EXPECT_FALSE(k.answer(false));
        EXPECT_EQ(k.receive(), std::to_string(bytes));
        EXPECT_EQ(k.state(), held_by_client);
    }
}

/*
 * A keeper that does not run (preempted among more sessions than CPUs) must not hold up its session: the
 * session, its request not taken by its wait's first probe, takes the call back and rings for it, and
 * another thread serves it. The keeper, still its bell's spinner, then finds nothing to take and lets go
 * of nothing. Only the keep of the answer the session read can be taken back: not a later one.
 */
TEST(Keep, ASessionWhoseKeeperDoesNotRunTakesTheCallBackAndRingsForIt) {
    Kept k;
    ASSERT_TRUE(k.keep_one());
    const Accepted keeper = k.call;
    ASSERT_EQ(k.send(0, 20), Status::ok);
    EXPECT_FALSE(k.r.doorbell(0).any());
    auto session = std::async(std::launch::async, [&] { return k.receive(); });
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!k.r.doorbell(0).any() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(k.r.doorbell(0).any()) << "the session waits on a keeper that does not run";
    EXPECT_EQ(read_stats(k.seg.stats()).global[static_cast<int>(GlobalCounter::kept_calls_taken_back)], 1u);
    ASSERT_EQ(k.take(0), Status::ok);  // another thread
    EXPECT_EQ(k.call.index, keeper.index);
    EXPECT_FALSE(k.answer(false));
    EXPECT_EQ(session.get(), "20");
    Accepted late = keeper;
    EXPECT_EQ(Dispatcher(k.r, 0).next(k.waker, std::chrono::seconds(60), [] { return true; }, k.policy.deadline,
                                      &late, late.index, true),
              Status::stopping);
    EXPECT_EQ(k.state(), held_by_client) << "the late keeper took or let go of a call it no longer held";
    EXPECT_EQ(k.count(Counter::kept_calls, true), 0u);
    EXPECT_EQ(k.r.doorbell(0).spinner().load(), 0u);

    ASSERT_TRUE(k.keep_one());  // and again: a keep the session has not read cannot be taken back
    const bool phase = (k.state() & kept_phase) != 0;
    EXPECT_FALSE(k.r.revoke_kept(k.client.handle(), 0, !phase));
    EXPECT_FALSE(k.r.revoke_kept(k.client.handle(), 1, phase));
    EXPECT_TRUE(k.r.revoke_kept(k.client.handle(), 0, phase));
    EXPECT_EQ(k.state(), held_by_client);
}

/*
 * After a take-back the session's next call may be another runtime's, kept by that bell's spinner while
 * the first keeper, of another bell, still spins on the slot: the late keeper sees the request but must
 * neither take it nor let the other's keep go (a keep names its runtime).
 */
TEST(Keep, ALateKeeperLeavesAnotherRuntimesKeepAlone) {
    Kept k;
    ASSERT_TRUE(k.keep_one());  // runtime 0's keep, not taken: its keeper does not run
    const Accepted late0 = k.call;
    ASSERT_TRUE(k.r.revoke_kept(k.client.handle(), 0, (k.state() & kept_phase) != 0));  // as the wait does
    ASSERT_EQ(k.send(1, 10), Status::ok);
    ASSERT_EQ(k.take(1), Status::ok);
    ASSERT_TRUE(k.answer(true)) << "runtime 1's spinner did not keep";
    ASSERT_EQ(k.receive(), "10");
    ASSERT_EQ(k.send(1, 20), Status::ok);  // straight to runtime 1's keeper
    Accepted late = late0;
    EXPECT_EQ(Dispatcher(k.r, 0).next(k.waker, std::chrono::seconds(60), [] { return true; }, k.policy.deadline,
                                      &late, late.index, true),
              Status::stopping);
    EXPECT_EQ(k.state() & (kept_by_server | kept_runtime_bits), kept_for(1)) << "runtime 0 took runtime 1's keep";
    const Accepted kept1 = k.call;
    ASSERT_EQ(Dispatcher(k.r, 1).next(k.waker, std::chrono::seconds(10), [] { return false; }, k.policy.deadline,
                                      &k.call, kept1.index, true),
              Status::ok);
    EXPECT_FALSE(k.answer(false));
    EXPECT_EQ(k.receive(), "20");
    EXPECT_EQ(k.state(), held_by_client);
}

/* A session that leaves while its call is kept gets its slot back through the keeper; a new epoch ends a kept call. */
TEST(Keep, ASessionThatLeavesOrANewEpochEndsAKeptCall) {
    Kept k;
    ASSERT_TRUE(k.keep_one());
    k.client.close();
    EXPECT_EQ(k.r.slots_in_use(), 1u);  // the keeper's still
    Accepted kept = k.call;
    bool late = false;  // the hang guard ended the spin, not the let-go
    const auto slot_back = [&] {
        late = k.r.slots_in_use() != 0 && std::chrono::steady_clock::now() > k.policy.deadline;
        return late || k.r.slots_in_use() == 0;
    };
    EXPECT_EQ(Dispatcher(k.r, 0).next(k.waker, std::chrono::seconds(60), slot_back, k.policy.deadline, &kept,
                                      kept.index, true),
              Status::stopping);
    EXPECT_FALSE(late) << "the keeper did not see its client gone";
    EXPECT_EQ(k.r.slots_in_use(), 0u);

    ASSERT_EQ(k.client.open(), Status::ok);
    ASSERT_TRUE(k.keep_one());
    k.r.begin_server_epoch(k.waker);  // the keeper's process died
    EXPECT_EQ(k.state(), held_by_client);
    ASSERT_EQ(k.send(0, 11), Status::ok);  // begins in the new epoch, and rings
    EXPECT_EQ(k.count(Counter::kept_calls, false), 0u);
    ASSERT_EQ(k.take(0), Status::ok);
    EXPECT_FALSE(k.answer(false));
    EXPECT_EQ(k.receive(), "11");
}

/*
 * The answer of a kept call goes out with its notify deferred (ServerCall::finish): the keeper makes it
 * at its 64th poll, while it still keeps the call. The session here parks on its answer before it is
 * written, long enough for its bounded park to have backed off to 32 ms; the keeper's spin (60 s) ends
 * only once the session has its answer. So the session must be woken by the keeper, with the call
 * still kept, and not by its own recheck (owed_wakeups_late).
 */
TEST(Keep, AKeeperWakesItsParkedSessionWithoutLettingGo) {
    Kept k;
    ASSERT_TRUE(k.keep_one());
    ASSERT_EQ(k.send(0, 20), Status::ok);
    ASSERT_EQ(Dispatcher(k.r, 0).next(k.waker, std::chrono::seconds(10), [] { return false; }, k.policy.deadline,
                                      &k.call, k.call.index, true),
              Status::ok)
        << "the kept call's next request did not reach its keeper";
    const std::uint64_t sleeps_before = k.count(Counter::sleeps, false);
    std::atomic<bool> answered{false};
    std::atomic<std::uint32_t> state_at_answer{0};
    auto session = std::async(std::launch::async, [&] {
        std::string answer = k.receive();
        state_at_answer.store(k.state());
        answered.store(true);
        return answer;
    });
    while (k.count(Counter::sleeps, false) < sleeps_before + 6)  // parks of 1, 2, 4, 8, 16, then 32 ms
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(k.answer(true));
    Accepted kept = k.call;
    EXPECT_EQ(Dispatcher(k.r, 0).next(k.waker, std::chrono::seconds(60), [&] { return answered.load(); },
                                      std::chrono::steady_clock::time_point::max(), &kept, kept.index, true),
              Status::stopping);
    EXPECT_EQ(session.get(), "20");
    EXPECT_EQ(state_at_answer.load() & ~kept_phase,
              held_by_client | held_by_server | accepted_by_server | kept_by_server)
        << "the session was woken by the let-go, not by the keeper";
    EXPECT_EQ(k.count(Counter::owed_wakeups_late, false), 0u) << "the session's own recheck found the answer";
    EXPECT_GE(k.count(Counter::wakeups_sent, true), 1u);
    EXPECT_EQ(k.state(), held_by_client);  // let go at the stop
}

/* -------------------------------------------------------------- stats */

TEST(Stats, HistogramBucketsAndSums) {
    TestSegment seg(params(3));
    StatsView s = seg.stats();
    s.record_call(0, 0, 900, false);            // <= 1 µs
    s.record_call(1, 0, 1'000, false);          // <= 1 µs (bound inclusive)
    s.record_call(2, 0, 1'001, true);           // <= 2.5 µs
    s.record_call(2, 0, 20'000'000'000, false); // +Inf
    EXPECT_EQ(s.slot(3), nullptr);
    auto snap = read_stats(s);
    EXPECT_EQ(snap.calls, 4u);
    EXPECT_EQ(snap.call_errors, 1u);
    EXPECT_EQ(snap.latency_bucket[0], 2u);
    EXPECT_EQ(snap.latency_bucket[1], 1u);
    EXPECT_EQ(snap.latency_bucket[latency_buckets - 1], 1u);
    EXPECT_EQ(snap.latency_sum_ns, 900u + 1'000 + 1'001 + 20'000'000'000);
}

TEST(Stats, RowsHaveUniqueNamesAndHelp) {
    TestSegment seg(params());
    auto rows = stat_rows(read_stats(seg.stats()));
    std::set<std::string> names;
    for (const auto &row : rows) {
        EXPECT_TRUE(names.insert(row.name).second) << row.name;
        EXPECT_FALSE(row.help.empty()) << row.name;
    }
    EXPECT_TRUE(names.count("client_wakeups_elided"));
    EXPECT_TRUE(names.count("freelist_cas_retries"));
}

TEST(Stats, AttachRefusesForeignOrShortSegments) {
    TestSegment seg(params(4));
    auto *base = reinterpret_cast<std::byte *>(&seg.stats().header());
    StatsView v;
    EXPECT_EQ(StatsView::attach(base, seg.layout().stats_size, &v), Status::ok);
    EXPECT_EQ(StatsView::attach(base, 16, &v), Status::corrupt);
    EXPECT_EQ(StatsView::attach(base, seg.layout().stats_size - 64, &v), Status::corrupt);
    seg.stats().header().version = 999;
    EXPECT_EQ(StatsView::attach(base, seg.layout().stats_size, &v), Status::corrupt);
}

/*
 * scripts/pg-cluster is shell and cannot call stats_segment_path(); it spells
 * the path once, and this test fails when the two part.
 */
TEST(Stats, TheClusterScriptSpellsTheSegmentPathAsTheCodeDoes) {
    std::string path = stats_segment_path(54321);
    path.replace(path.find("54321"), 5, "$port");
    std::ifstream script(COURIER_SOURCE_DIR "/scripts/pg-cluster");
    ASSERT_TRUE(script.good());
    const std::string text((std::istreambuf_iterator<char>(script)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("\"" + path + "\""), std::string::npos) << "scripts/pg-cluster does not test " << path;
}

TEST(Wait, SpinningIsCappedRegionWide) {
    TestSegment seg(params());
    Region &r = seg.region();
    EXPECT_GE(r.header().max_spinners, 1u);
    EXPECT_EQ(r.header().max_spinners, spinners_per_cpu * usable_cpus());
    WaitPolicy p = r.with_spinner_cap(WaitPolicy{});
    ASSERT_EQ(p.spinners, &r.header().spinners);
    r.header().max_spinners = 2;
    p.max_spinners = 2;
    EXPECT_TRUE(enter_spin(p));
    EXPECT_TRUE(enter_spin(p));
    EXPECT_FALSE(enter_spin(p));  // a third waiter parks at once
    EXPECT_EQ(r.header().spinners.load(), 2u);
    leave_spin(p);
    EXPECT_TRUE(enter_spin(p));
    leave_spin(p);
    leave_spin(p);
    EXPECT_EQ(r.header().spinners.load(), 0u);

    /*
     * A waiter the cap refuses parks at its uncounted_polls-th poll, though
     * its budget is 50 ms (a look at the start, one a poll before it). One
     * the cap admits is counted from that poll on, and no longer once done.
     */
    r.header().spinners.store(2);
    FutexWaker waker;
    Waiter &w = r.slot(0)->client;
    SideCounters *c = &seg.stats().slot(0)->client;
    p.spin = std::chrono::milliseconds(50);
    p.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
    unsigned looks = 0;
    const auto look = [&] {
        ++looks;
        return false;
    };
    const auto never = [] { return Status::would_block; };
    EXPECT_EQ(wait_until_probed(w, waker, p, c, look, never), Status::timeout);
    EXPECT_EQ(looks, uncounted_polls);  // the first look and polls 1 to uncounted_polls - 1
    EXPECT_EQ(read_stats(seg.stats()).client[static_cast<int>(Counter::sleeps)], 1u);
    EXPECT_EQ(r.header().spinners.load(), 2u);

    r.header().spinners.store(0);
    looks = 0;
    unsigned counted_at = 0;
    const auto counted = [&] {
        ++looks;
        if (counted_at == 0 && r.header().spinners.load() == 1)
            counted_at = looks;
        return false;
    };
    unsigned checks = 0;  // a check every 64th poll: the 128th poll's ends the wait
    const auto done_late = [&] { return ++checks > 1 ? Status::ok : Status::would_block; };
    p.deadline = std::chrono::steady_clock::time_point::max();
    EXPECT_EQ(wait_until_probed(w, waker, p, c, counted, done_late), Status::ok);
    EXPECT_EQ(counted_at, uncounted_polls + 1);  // counted at poll uncounted_polls, whose look is the 1 + its number
    EXPECT_EQ(r.header().spinners.load(), 0u);
}

/*
 * A pending interrupt (a cancel, a statement_timeout) ends every wait,
 * whether the cap refuses the waiter at its uncounted_polls-th poll (then
 * before it parks) or admits it (then within its spin), with no deadline
 * and nothing to wait for; the admitted one leaves the count as it found it.
 */
TEST(Wait, AnInterruptEndsAWaitTheCapRefusesOrAdmits) {
    struct Interrupting final : Waker {
        FutexWaker futex;
        std::uint32_t prepare(Waiter &self) override { return futex.prepare(self); }
        ParkResult park(Waiter &, std::uint32_t, std::chrono::nanoseconds) override { return ParkResult::interrupted; }
        void wake(Waiter &peer) override { futex.wake(peer); }
        bool interrupted(const Waiter &) const override { return true; }
    } waker;
    TestSegment seg(params());
    Region &r = seg.region();
    r.header().max_spinners = 1;
    WaitPolicy p = r.with_spinner_cap(WaitPolicy{});
    p.max_spinners = 1;
    p.spin = std::chrono::seconds(30);
    Waiter &w = r.slot(0)->client;
    for (const std::uint32_t others : {1u, 0u}) {
        r.header().spinners.store(others);
        EXPECT_EQ(wait_until_probed(w, waker, p, nullptr, [] { return false; }, [] { return Status::would_block; }),
                  Status::interrupted)
            << others << " spinning before";
        EXPECT_EQ(r.header().spinners.load(), others);
    }
}

/*
 * A wait's first look is its probe's (wait.h): a check there read the
 * ring's tail just before the peer wrote it. With nothing to spin, a wait
 * whose probe says no runs its check only once it has announced sleeping;
 * one whose probe says yes runs it at once.
 */
TEST(Wait, TheFirstLookIsTheProbes) {
    TestSegment seg(params());
    Waiter &w = seg.region().slot(0)->client;
    FutexWaker waker;
    WaitPolicy p;
    p.spin = std::chrono::nanoseconds(0);
    for (const bool probe_says : {false, true}) {
        std::vector<std::uint32_t> sleeping_at_check;
        const auto check = [&] {
            sleeping_at_check.push_back(w.sleeping.load());
            return Status::ok;
        };
        EXPECT_EQ(wait_until_probed(w, waker, p, nullptr, [&] { return probe_says; }, check), Status::ok);
        ASSERT_EQ(sleeping_at_check.size(), 1u);
        EXPECT_EQ(sleeping_at_check[0] != 0, !probe_says) << "probe said " << probe_says;
    }
}

/* With the cap lifted (a server on CPUs of its own), every waiter spins: four at once here, all spin hits. */
/*
 * The backstop (wait.h): a bounded park looks again without any wake and
 * finds what changed, and counts it (with a 60 s deadline: a bound that did
 * not work would end there, uncounted); unbounded, the same wait sleeps to
 * its deadline. The bound doubles, so a long wait looks again only a few times.
 */
TEST(Wait, ABoundedParkLooksAgainWithoutAWake) {
    auto wait_for_unwoken_change = [](std::chrono::nanoseconds recheck, std::chrono::milliseconds deadline,
                                      std::uint64_t *late, std::uint64_t *sleeps) {
        Waiter self;
        init_waiter(self);
        SideCounters counters{};
        FutexWaker waker;
        std::atomic<bool> changed{false};
        std::thread changer([&] {
            while (counters.value[static_cast<std::size_t>(Counter::sleeps)].load() == 0)  // it is about to park
                std::this_thread::yield();
            changed.store(true);  // and nobody wakes it
        });
        WaitPolicy policy;
        policy.spin = {};
        policy.recheck = recheck;
        policy.deadline = std::chrono::steady_clock::now() + deadline;
        const Status s = wait_until(self, waker, policy, &counters,
                                    [&] { return changed.load() ? Status::ok : Status::would_block; });
        changer.join();
        *late = counters.value[static_cast<std::size_t>(Counter::owed_wakeups_late)].load();
        *sleeps = counters.value[static_cast<std::size_t>(Counter::sleeps)].load();
        return s;
    };
    std::uint64_t late = 0, sleeps = 0;
    EXPECT_EQ(wait_for_unwoken_change(std::chrono::milliseconds(1), std::chrono::milliseconds(60000), &late, &sleeps),
              Status::ok);
    EXPECT_EQ(late, 1u);
    /* Unbounded, the one park lasts to the deadline, and only the look after it sees the change. */
    EXPECT_EQ(wait_for_unwoken_change({}, std::chrono::milliseconds(50), &late, &sleeps), Status::ok);
    EXPECT_EQ(late, 0u);
    EXPECT_EQ(sleeps, 1u);

    /* Nothing changes for 300 ms: 1 + 2 + ... + 64 ms, then 64 ms at a time, not 300 parks. */
    Waiter self;
    init_waiter(self);
    SideCounters counters{};
    FutexWaker waker;
    WaitPolicy policy;
    policy.spin = {};
    policy.recheck = std::chrono::milliseconds(1);
    policy.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    EXPECT_EQ(wait_until(self, waker, policy, &counters, [] { return Status::would_block; }), Status::timeout);
    EXPECT_LE(counters.value[static_cast<std::size_t>(Counter::sleeps)].load(), 12u);
    EXPECT_GE(counters.value[static_cast<std::size_t>(Counter::sleeps)].load(), 2u);
}

TEST(Wait, ALiftedCapLetsEveryWaiterSpin) {
    TestSegment seg(params());
    Region &r = seg.region();
    r.lift_spinner_cap();
    WaitPolicy p = r.with_spinner_cap(WaitPolicy{});
    EXPECT_EQ(p.spinners, nullptr);
    p.spin = std::chrono::seconds(30);
    constexpr int waiters = 4;
    std::atomic<bool> go{false};
    std::array<std::atomic<int>, waiters> looks{};
    std::vector<std::thread> threads;
    for (int i = 0; i < waiters; ++i)
        threads.emplace_back([&, i] {
            FutexWaker waker;
            EXPECT_EQ(wait_until(r.slot(i)->client, waker, p, &seg.stats().slot(i)->client, [&] {
                          looks[i].fetch_add(1);
                          return go.load() ? Status::ok : Status::would_block;
                      }),
                      Status::ok);
        });
    /* A waiter that parks looks twice (before and after announcing); each of these keeps looking. */
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    auto all_spinning = [&] {
        return std::all_of(looks.begin(), looks.end(), [](const std::atomic<int> &n) { return n.load() > 100; });
    };
    while (!all_spinning() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_TRUE(all_spinning());
    go.store(true);
    FutexWaker waker;
    for (int i = 0; i < waiters; ++i)
        notify(r.slot(i)->client, waker, nullptr);  // a waiter that parked all the same (the test fails)
    for (auto &t : threads)
        t.join();
    const auto snap = read_stats(seg.stats());
    EXPECT_EQ(snap.client[static_cast<int>(Counter::spin_hits)], static_cast<std::uint64_t>(waiters));
    EXPECT_EQ(snap.client[static_cast<int>(Counter::sleeps)], 0u);
    EXPECT_EQ(r.header().spinners.load(), 0u);
}

namespace {

/*
 * Runs `spin` on a thread of its own and `peer` on one that thread starts
 * just before: both SCHED_FIFO of one priority on one CPU, so neither
 * preempts the other and the peer runs only once `spin` yields the CPU or
 * sleeps. The order is the scheduler's rule, not a timing. False, with
 * nothing run, where this process may not use SCHED_FIFO (root or
 * CAP_SYS_NICE).
 */
bool spin_beside_a_peer_on_one_cpu(const std::function<void()> &spin, const std::function<void()> &peer) {
    bool allowed = false;
    std::thread spinner([&] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu(), &one);
        sched_param fifo{};
        fifo.sched_priority = 1;
        if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0 ||
            pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo) != 0)
            return;
        allowed = true;
        std::binary_semaphore gate{0};
        std::thread second([&] {  // inherits the CPU and the policy
            gate.acquire();  // not before the spin: a new thread may run first (TSan waits for it)
            peer();
        });
        gate.release();  // runnable now, but queued behind this thread
        spin();
        second.join();
    });
    spinner.join();
    return allowed;
}

/* Far longer than a yield interval; without the yield the peer waits all of it. */
constexpr auto long_spin = std::chrono::milliseconds(200);

}  // namespace

namespace {
/* The CPUs that share `cpu`'s core, from its thread_siblings_list ("0-1,4"); none if sysfs does not say. */
courier::worker::CpuSet core_siblings(int cpu) {
    std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
    std::string list;
    courier::worker::CpuSet cpus;
    std::string error;
    if (!std::getline(f, list) || !courier::worker::parse_cpu_list(list, &cpus, &error))
        cpus.reset();
    return cpus;
}
}  // namespace

/*
 * A producer hands its frames over to the shared cache only for a consumer
 * on another core (ring.h): cores_apart must agree with the kernel's list
 * of each CPU's SMT siblings, a file it does not read itself.
 */
TEST(Wait, CoresApartAgreesWithTheKernelsSiblingLists) {
    const int cpus = static_cast<int>(std::min<long>(sysconf(_SC_NPROCESSORS_CONF), 64));
    EXPECT_FALSE(cores_apart(-1, 0));
    EXPECT_FALSE(cores_apart(0, -1));
    int pairs = 0;
    for (int a = 0; a < cpus; ++a) {
        const courier::worker::CpuSet siblings = core_siblings(a);
        if (siblings.none())
            GTEST_SKIP() << "no CPU topology in sysfs";
        EXPECT_FALSE(cores_apart(a, a));
        for (int b = 0; b < cpus; ++b) {
            if (b != a) {
                const bool sibling = siblings.test(static_cast<std::size_t>(b));
                EXPECT_EQ(cores_apart(a, b), !sibling) << "CPUs " << a << " and " << b;
                ++pairs;
            }
        }
    }
    EXPECT_EQ(pairs, cpus * (cpus - 1));
}

/* A session leaves a CPU only if its mask has it and another besides (call.h, "Leaving the worker's CPU"). */
TEST(Wait, WithoutCpuTakesOutACpuOnlyIfAnotherIsLeft) {
    CpuMask two;
    two.bits[0] = 0b11;
    two.bits[1] = 1;  // CPU 64
    CpuMask m = two;
    EXPECT_TRUE(without_cpu(&m, 64));
    EXPECT_EQ(m.bits[1], 0u);
    EXPECT_TRUE(without_cpu(&m, 1));
    EXPECT_EQ(m.bits[0], 0b01u);
    EXPECT_FALSE(without_cpu(&m, 0));  // the last one
    EXPECT_FALSE(without_cpu(&m, 2));  // not in the mask
    EXPECT_FALSE(without_cpu(&m, -1));
    EXPECT_FALSE(without_cpu(&m, 1024));
    EXPECT_EQ(m.bits[0], 0b01u);
    CpuMask mine;
    ASSERT_TRUE(read_cpu_mask(&mine));
    EXPECT_TRUE(write_cpu_mask(mine));
    CpuMask again;
    ASSERT_TRUE(read_cpu_mask(&again));
    EXPECT_EQ(again, mine);
}

/*
 * A spinning waiter and the peer it waits for share a CPU (more runnable
 * threads than cores): the waiter must give the CPU up while it spins, so
 * that the peer publishes and the wait ends as a spin hit. Without the
 * yield the peer runs only once the whole budget is spent and the waiter
 * has parked: a sleep and a wake instead.
 */
TEST(Wait, ASpinningWaiterYieldsItsCpuToThePeerItWaitsFor) {
    TestSegment seg(params());
    FutexWaker waker;
    Waiter &waiter = seg.region().slot(0)->client;
    WaitPolicy p = without_spin();  // its deadline is the hang guard
    p.spin = long_spin;
    std::atomic<bool> published{false};
    Status s = Status::corrupt;
    const bool ran = spin_beside_a_peer_on_one_cpu(
        [&] {
            s = wait_until(waiter, waker, p, &seg.stats().slot(0)->client,
                           [&] { return published.load() ? Status::ok : Status::would_block; });
        },
        [&] {
            published.store(true, std::memory_order_release);
            notify(waiter, waker, nullptr);
        });
    if (!ran)
        GTEST_SKIP() << "needs SCHED_FIFO (root or CAP_SYS_NICE) to order two threads on one CPU";
    EXPECT_EQ(s, Status::ok);
    const StatsSnapshot stats = read_stats(seg.stats());
    EXPECT_EQ(stats.client[static_cast<int>(Counter::spin_hits)], 1u);  // the peer ran during the spin
    EXPECT_EQ(stats.client[static_cast<int>(Counter::sleeps)], 0u);
}

/*
 * The serving side's spin (Dispatcher::next) likewise: a thread spinning
 * for the bell yields, the session on its CPU begins its call and rings,
 * and the spinner takes the call. The ring finds the spinner, so it wakes
 * no one; without the yield the ring comes after the thread has parked
 * and has to wake it.
 */
TEST(Wait, AThreadSpinningForTheBellYieldsItsCpuToTheSessionThatRings) {
    Watched w;
    FutexWaker own;
    SideCounters ringer{};
    Accepted call;
    Status s = Status::corrupt;
    const bool ran = spin_beside_a_peer_on_one_cpu(
        [&] {
            s = Dispatcher(w.r, 0).next(own, long_spin, [] { return false; }, without_spin().deadline, &call);
        },
        [&] {
            std::uint64_t epoch = 0;
            if (w.r.begin_call(w.h, 0, &epoch) == Status::ok)
                w.r.ring_doorbell(0, w.h, w.waker, &ringer);
        });
    if (!ran)
        GTEST_SKIP() << "needs SCHED_FIFO (root or CAP_SYS_NICE) to order two threads on one CPU";
    ASSERT_EQ(s, Status::ok);
    EXPECT_EQ(call.index, w.h.index);
    EXPECT_EQ(ringer.value[static_cast<int>(Counter::wakeups_elided)].load(), 1u);  // rung while it spun
    EXPECT_EQ(ringer.value[static_cast<int>(Counter::wakeups_sent)].load(), 0u);
}

/*
 * The calls' clock (clock.h): across the hand-over from steady_clock to the
 * counter, over a sleep, and read after read. A wrong scale (a shift off,
 * the ratio upside down) or a step at the hand-over fails it; the bounds
 * are what a sleep guarantees, not a speed.
 */
TEST(Clock, ASleepMeasuresAtLeastItsLengthAndReadsNeverGoBack) {
    using namespace std::chrono;
    const std::uint64_t first = call_clock_ns();
    std::this_thread::sleep_for(calibration_time + milliseconds(2));
    const std::uint64_t handed_over = call_clock_ns();  // ends the calibration if this process had not
    EXPECT_GE(handed_over - first, static_cast<std::uint64_t>(nanoseconds(calibration_time).count()));
    std::printf("call clock: %s\n", call_clock_uses_counter() ? "time-stamp counter" : "steady_clock");

    /* steady_clock's readings bracket the clock's, so the clock's interval is within theirs, up to its scale's error. */
    const auto outer_start = steady_clock::now();
    const std::uint64_t before = call_clock_ns();
    std::this_thread::sleep_for(milliseconds(20));
    const std::uint64_t after = call_clock_ns();
    const auto outer = static_cast<std::uint64_t>(duration_cast<nanoseconds>(steady_clock::now() - outer_start).count());
    const std::uint64_t scale_error = outer / 1000;  // 0.1 %: the calibration is good to about 10 ppm
    EXPECT_GE(after - before, 20'000'000u - 20'000'000u / 1000);
    EXPECT_LE(after - before, outer + scale_error);

    std::uint64_t last = call_clock_ns();
    for (int i = 0; i < 1'000'000; ++i) {
        const std::uint64_t now = call_clock_ns();
        ASSERT_GE(now, last) << "read " << i;
        last = now;
    }
}

namespace {

/* Publishes `pieces` as one request, a frame each, as a client that skips Client's checks would. */
void write_raw_request(Pair &p, const std::vector<std::string> &pieces) {
    RingView ring = p.seg.region().to_server(p.handle.index);
    std::uint64_t total = 0;
    for (const std::string &piece : pieces)
        total += piece.size();
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        std::span<std::byte> frame;
        ASSERT_EQ(ring.try_reserve(pieces[i].size(), pieces[i].size(), &frame), Status::ok);
        std::memcpy(frame.data(), pieces[i].data(), pieces[i].size());
        const auto flags = static_cast<std::uint16_t>((i == 0 ? frame_first : 0) | (i + 1 == pieces.size() ? frame_last : 0));
        ring.commit(pieces[i].size(), FrameKind::request, flags, p.handle.generation, total);
    }
}

/* What read_function makes of such a request: its status, and on ok the name and the payload after it. */
std::tuple<Status, std::string, std::string> read_raw_function(const std::vector<std::string> &pieces) {
    Pair p;
    write_raw_request(p, pieces);
    ServerCall server(p.seg.region(), Accepted{p.handle.index, p.handle.generation}, p.waker, p.server.policy);
    char fn[max_function_name + 1];
    std::size_t length = 0;
    const Status s = server.read_function(fn, &length);
    std::string payload;
    if (s == Status::ok)
        payload.assign(reinterpret_cast<const char *>(server.first_piece().data()), server.first_piece().size());
    return {s, s == Status::ok ? std::string(fn, length) : std::string(), payload};
}

}  // namespace

/*
 * The server's parse of the function name, from frames a hostile or broken
 * client wrote: a name of the longest length split over two frames, a NUL
 * that opens the second frame, one byte too many, and no NUL at all.
 */
TEST(ServerCall, AFunctionNameIsReadAcrossFramesAndRefusedWhenTooLongOrUnended) {
    const std::string longest(max_function_name, 'n');
    auto [s, name, payload] = read_raw_function({longest.substr(0, 100), longest.substr(100) + '\0' + "body"});
    EXPECT_EQ(s, Status::ok);
    EXPECT_EQ(name, longest);
    EXPECT_EQ(payload, "body");

    std::tie(s, name, payload) = read_raw_function({"echo", std::string(1, '\0') + "xy"});
    EXPECT_EQ(s, Status::ok);
    EXPECT_EQ(name, "echo");
    EXPECT_EQ(payload, "xy");

    std::tie(s, name, payload) = read_raw_function({longest + 'n' + '\0'});
    EXPECT_EQ(s, Status::corrupt);

    std::tie(s, name, payload) = read_raw_function({"no", "end"});
    EXPECT_EQ(s, Status::corrupt);
}
