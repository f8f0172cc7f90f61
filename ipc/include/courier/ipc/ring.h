/*
 * ring.h — a single-producer single-consumer byte ring of frames.
 *
 * Cursors: `tail` counts bytes ever published by the producer, `head` bytes
 * ever consumed. Both are monotone 64-bit counters (they do not wrap in any
 * lifetime) on cache lines of their own; position in the data area is
 * cursor & (capacity - 1). Invariant: head <= tail <= head + capacity. Each
 * side trusts only its own cursor and range-checks the other's.
 *
 * A frame is a FrameHeader followed by its payload, padded to 8 bytes, and
 * is always contiguous in the data area so that both sides can work in
 * place (reserve/commit on the producer, peek/consume on the consumer).
 * When a frame does not fit before the end of the data area the producer
 * skips to the start: with a pad frame when at least a header fits, or
 * implicitly when fewer than sizeof(FrameHeader) bytes remain (both sides
 * apply the same rule, so no marker is needed).
 *
 * Publication: the producer writes the payload and the header, then the
 * header's `mark` (the frame's position + 1) with release, then tail. The
 * consumer polls the mark of the frame it expects at its own head: a frame
 * is complete when its mark matches, so the consumer reads the frame's own
 * cache line and not the producer's tail (the tail is read only to tell
 * "empty" from "corrupt"). Positions never repeat — a lease discards (head
 * := tail) rather than rewinding — and zeroed memory never matches, so a
 * stale header cannot pass for a new one. The consumer stores head with
 * release after it is done with the bytes; the producer keeps a copy of the
 * last head it read on its own cache line and reads the consumer's line
 * only when that copy says the ring is full.
 *
 * Handing a frame over: a consumer on another core reads the frame's lines
 * out of the producer's core, a snoop dearer than a hit in the cache the
 * cores share. The producer may say, at commit, that its consumer runs on
 * another core; it then pushes the frame's lines out to that cache
 * (cldemote, on x86 since Sapphire Rapids; a no-op on other CPUs). It must
 * not when both sides share a core: the lines are already where they will
 * be read, and pushing them out made a round trip in one thread 2.5 times
 * as long. Nor for a frame over handover_max_frame: the frames of a stream
 * (a quarter of the ring each) went at half the rate when the consumer
 * read them from the shared cache (bench/README.md, "Handing a frame
 * over").
 *
 * A message is one or more frames: the first has flag first, the last has
 * flag last; every frame carries the message's kind, the slot generation
 * of its call and the message's total length (or unknown_length when the
 * producer streams without knowing it). Messages larger than a frame may
 * are streamed in chunks of at most max_chunk() bytes; the ring's free
 * space is the flow control.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "courier/ipc/layout.h"
#include "courier/ipc/status.h"

namespace courier::ipc {

enum class FrameKind : std::uint16_t {
    pad = 0,       // filler up to the end of the data area
    request = 1,   // client → server: "fn\0payload"
    response = 2,  // server → client: the result bytes
    error = 3,     // server → client: an error message (text)
};

enum FrameFlags : std::uint16_t {
    frame_first = 1u << 0,
    frame_last = 1u << 1,
    frame_aborted = 1u << 2,    // with last: the producer gave up on the message
    frame_from_host = 1u << 3,  // an error message of the serving host (the worker), not the runtime's
    frame_kept = 1u << 4,       // with last, server → client: the serving thread kept the call (region.h)
    frame_kept_phase = 1u << 5, // with kept: the phase of that keep (kept_phase, region.h)
};

inline constexpr std::uint64_t unknown_length = ~0ull;

/* The largest frame, header included, that a producer hands over to the shared cache (see the top). */
inline constexpr std::uint64_t handover_max_frame = 8192;

struct FrameHeader {
    std::uint32_t length;      // payload bytes in this frame
    std::uint16_t kind;        // FrameKind
    std::uint16_t flags;       // FrameFlags
    std::uint64_t generation;  // slot generation of the call
    std::uint64_t total;       // message length, or unknown_length
    std::uint64_t mark;        // position of the frame + 1, stored last
};
static_assert(sizeof(FrameHeader) == 32);

inline constexpr std::size_t frame_align = 8;

struct alignas(cache_line) Cursor {
    std::atomic<std::uint64_t> value;
    std::atomic<std::uint64_t> peer_copy;  // producer: the head it last read
};

struct RingHeader {
    Cursor tail;  // producer's
    Cursor head;  // consumer's
};

/* A frame as the consumer sees it: header copied out, payload in place. */
struct Frame {
    FrameHeader header;
    std::span<const std::byte> payload;
    std::uint64_t next_head;  // head after consuming this frame
};

class RingView {
public:
    RingView() = default;
    RingView(RingHeader *header, std::byte *data, std::uint64_t capacity)
        : header_(header), data_(data), capacity_(capacity) {}

    /* Zeroes cursors and data (formatting). Only while nobody uses it. */
    void reset();
    /* Drops whatever is in the ring, keeping positions monotone (a lease). */
    void discard();

    std::uint64_t capacity() const { return capacity_; }
    /* Largest payload a single frame may carry in this ring. */
    std::uint64_t max_chunk() const { return capacity_ / 4 - sizeof(FrameHeader); }

    /* --- producer --- */
    /*
     * Reserves room for a frame of at least `min` and at most `max` payload
     * bytes. On ok, *out is the writable payload span (as large as fits, up
     * to max). would_block: not enough room yet. corrupt: the consumer's
     * cursor is out of range.
     */
    Status try_reserve(std::uint64_t min, std::uint64_t max, std::span<std::byte> *out);
    /* Publishes the reserved frame with `length` (<= reserved) bytes; see the top for `consumer_apart`. */
    void commit(std::uint64_t length, FrameKind kind, std::uint16_t flags,
                std::uint64_t generation, std::uint64_t total, bool consumer_apart = false);
    /* Free bytes as the producer sees them (for waiting on room). */
    std::uint64_t free_space() const;

    /* --- consumer --- */
    /* would_block when empty; corrupt when a cursor or header is invalid. */
    Status peek(Frame *out) const;
    /* Whether a frame (or pad) is published at head: reads the head and one
     * mark, no line the producer writes after publishing (a spinner's poll). */
    bool frame_published() const {
        const std::uint64_t head = header_->head.value.load(std::memory_order_relaxed);
        if (head % frame_align != 0)
            return true;  // peek() reports it
        const std::uint64_t at = frame_start(head);
        return mark_at(at & (capacity_ - 1)) == at + 1;
    }
    void consume(const Frame &frame) { header_->head.value.store(frame.next_head, std::memory_order_release); }
    bool empty() const;

private:
    Status check_cursors(std::uint64_t *head, std::uint64_t *tail) const;
    Status frame_at(std::uint64_t head, Frame *out) const;
    /* Defined here, as frame_published(): the spinning side's poll, not a call each. */
    std::uint64_t mark_at(std::uint64_t pos) const {
        auto *h = reinterpret_cast<FrameHeader *>(data_ + pos);
        return std::atomic_ref<std::uint64_t>(h->mark).load(std::memory_order_acquire);
    }
    /* Where the frame at `head` starts: the implicit skip when no header fits before the end. */
    std::uint64_t frame_start(std::uint64_t head) const {
        const std::uint64_t to_end = capacity_ - (head & (capacity_ - 1));
        return to_end < sizeof(FrameHeader) ? head + to_end : head;
    }

    RingHeader *header_ = nullptr;
    std::byte *data_ = nullptr;
    std::uint64_t capacity_ = 0;
    /* Producer's pending reservation. */
    std::uint64_t reserved_at_ = 0;     // cursor where the frame header goes
    std::uint64_t reserved_skip_ = 0;   // bytes skipped to the wrap (pad)
    std::uint64_t reserved_bytes_ = 0;  // payload capacity of the reservation
};

}  // namespace courier::ipc
