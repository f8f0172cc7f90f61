/*
 * Corruption: garbage written into shared memory (ring cursors, frame
 * headers, free-list head, slot state, region header) must come back as
 * Status::corrupt on that slot — never a crash, never an access outside
 * the region. Run under AddressSanitizer, an out-of-bounds read fails.
 */
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "harness.h"

using namespace courier::ipc;
using courier::test::TestSegment;

namespace {

struct Fixture {
    TestSegment seg{RegionParams{2, 4096, 65536}};
    FutexWaker waker;
    SlotHandle handle;
    std::uint64_t epoch = 0;
    Fixture() {
        seg.region().begin_server_epoch(waker);
        EXPECT_EQ(seg.region().lease(1, &handle), Status::ok);
        EXPECT_EQ(seg.region().begin_call(handle, 0, &epoch),
                  Status::ok);
    }
    Endpoint endpoint(bool client) {
        WaitPolicy p;
        p.spin = {};
        p.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
        Endpoint e{&seg.region(), handle.index, handle.generation, epoch, client, &waker, p,
                   client ? &seg.stats().slot(handle.index)->client : &seg.stats().slot(handle.index)->server};
        return e;
    }
    RingHeader &to_client_header() { return seg.region().slot(handle.index)->to_client; }
};

}  // namespace

TEST(Corruption, BadCursorsAreRejectedByBothSides) {
    Fixture f;
    RingView ring = f.seg.region().to_client(f.handle.index);
    RingHeader &h = f.to_client_header();
    struct Case {
        std::uint64_t head, tail;
    };
    for (Case c : {Case{100, 50}, Case{0, 4096 + 8}, Case{3, 64}, Case{0, 13}, Case{~0ull - 7, 8}}) {
        h.head.value.store(c.head);
        h.tail.value.store(c.tail);
        h.tail.peer_copy.store(c.head);  // the producer read the garbage head earlier
        Frame fr;
        std::span<std::byte> w;
        EXPECT_EQ(ring.peek(&fr), Status::corrupt) << c.head << " " << c.tail;
        EXPECT_EQ(ring.try_reserve(8, 8, &w), Status::corrupt) << c.head << " " << c.tail;
    }
}

TEST(Corruption, BadFrameHeadersAreRejected) {
    Fixture f;
    RingView ring = f.seg.region().to_client(f.handle.index);
    auto write_raw = [&](FrameHeader hdr, std::uint64_t tail) {
        ring.reset();
        std::span<std::byte> w;
        ASSERT_EQ(ring.try_reserve(0, 0, &w), Status::ok);
        std::memcpy(w.data() - sizeof(FrameHeader), &hdr, sizeof hdr);
        f.to_client_header().tail.value.store(tail);
    };
    Frame fr;
    write_raw(FrameHeader{0x7fffffff, 2, frame_first, 1, 5, 1}, 64);  // length beyond the ring
    EXPECT_EQ(ring.peek(&fr), Status::corrupt);
    write_raw(FrameHeader{8, 2, frame_first, 1, 5, 0}, 64);  // tail says published, no mark
    EXPECT_EQ(ring.peek(&fr), Status::corrupt);
    write_raw(FrameHeader{8, 2, frame_first, 1, 5, 1}, 0);  // a mark past the tail: published early
    EXPECT_EQ(ring.peek(&fr), Status::ok);                  // (the mark is the commit)
    write_raw(FrameHeader{8, 9, frame_first, 1, 5, 1}, 32);  // unknown kind
    EXPECT_EQ(ring.peek(&fr), Status::corrupt);
    write_raw(FrameHeader{100, 0, 0, 0, 0, 1}, 128);  // pad that does not reach the end
    EXPECT_EQ(ring.peek(&fr), Status::corrupt);
}

TEST(Corruption, GarbageFramesFailTheCallAndAreCounted) {
    Fixture f;
    RingView ring = f.seg.region().to_client(f.handle.index);
    std::span<std::byte> w;
    ASSERT_EQ(ring.try_reserve(8, 8, &w), Status::ok);
    ring.commit(8, FrameKind::response, frame_first | frame_last, f.handle.generation, 8);
    reinterpret_cast<FrameHeader *>(w.data() - sizeof(FrameHeader))->length = 0x7fffffff;  // scribbled
    Endpoint client = f.endpoint(true);
    MessageReader r(client);
    std::vector<std::byte> out;
    EXPECT_EQ(r.read_all(&out), Status::corrupt);
    EXPECT_GE(read_stats(f.seg.stats()).global[static_cast<int>(GlobalCounter::corrupt_frames)], 1u);
}

TEST(Corruption, RandomGarbageNeverEscapesTheRing) {
    Fixture f;
    RingView ring = f.seg.region().to_client(f.handle.index);
    RingHeader &h = f.to_client_header();
    const auto *lo = reinterpret_cast<const std::byte *>(&f.seg.region().header());
    const auto *hi = lo + f.seg.layout().region_size;
    std::byte *data = const_cast<std::byte *>(lo) + f.seg.layout().rings_offset +
                      f.handle.index * f.seg.layout().ring_stride + 4096;  // to_client data
    std::mt19937_64 rng(12345);
    int ok = 0, corrupt = 0;
    for (int i = 0; i < 200000; ++i) {
        /* Small cursors most of the time, so frames parse far enough to be checked. */
        const std::uint64_t head = (i % 4 == 0) ? rng() : (rng() % 8192) & ~7ull;
        const std::uint64_t tail = (i % 5 == 0) ? rng() : head + ((rng() % 4200) & ~7ull);
        const std::uint64_t pos = head & 4095;
        if (pos + sizeof(FrameHeader) <= 4096) {
            const bool plausible = i % 2 == 0;
            FrameHeader junk{plausible ? static_cast<std::uint32_t>(rng() % 1100) : static_cast<std::uint32_t>(rng()),
                             static_cast<std::uint16_t>(plausible ? 1 + rng() % 3 : rng() % 7),
                             static_cast<std::uint16_t>(rng()), rng(), rng(),
                             plausible ? head + 1 : rng()};
            std::memcpy(data + pos, &junk, sizeof junk);
        }
        h.head.value.store(head);
        h.tail.value.store(tail);
        Frame fr;
        const Status s = ring.peek(&fr);
        if (s == Status::ok) {
            ++ok;
            ASSERT_GE(fr.payload.data(), lo);
            ASSERT_LE(fr.payload.data() + fr.payload.size(), hi);
            ASSERT_LE(fr.next_head - head, 4096u + 4096u);  // at most a skip and a ring's worth
        } else {
            corrupt += s == Status::corrupt;
        }
    }
    EXPECT_GT(ok, 0);
    EXPECT_GT(corrupt, 0);
}

TEST(Corruption, FreeListAndSlotStateGarbageIsAnErrorOnLease) {
    Fixture f;
    Region &r = f.seg.region();
    SlotHandle h;
    /* Slot 1 is on the free list; mark it held as if memory were scribbled on. */
    r.slot(1)->state.store(held_by_client);
    EXPECT_EQ(r.lease(2, &h), Status::corrupt);
    r.header().freelist_head.store(0xdeadbeefull);
    EXPECT_EQ(r.lease(2, &h), Status::corrupt);
    EXPECT_GE(read_stats(f.seg.stats()).global[static_cast<int>(GlobalCounter::corrupt_frames)], 2u);
}

TEST(Corruption, AttachRefusesAForeignRegion) {
    TestSegment seg(RegionParams{2, 4096, 65536});
    auto m = seg.map_again();
    ASSERT_NE(m, nullptr);
    seg.region().header().ring_size = 8192;
    EXPECT_EQ(seg.map_again(), nullptr);
    seg.region().header().ring_size = 4096;
    seg.region().header().magic = 0;
    EXPECT_EQ(seg.map_again(), nullptr);
}
