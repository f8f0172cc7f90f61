/*
 * ring.cc — SPSC frame ring (protocol in ring.h).
 *
 * Both sides compute positions from the cursors they own and check every
 * value that came from the other side (cursors, headers) against the
 * capacity before use, because that memory may be garbage (a crashed or
 * buggy process). A frame is only ever read inside the data area.
 */
#include "courier/ipc/ring.h"

#include <algorithm>
#include <cstring>

namespace courier::ipc {
namespace {

constexpr std::uint64_t header_size = sizeof(FrameHeader);
constexpr std::uint64_t align8(std::uint64_t n) { return (n + frame_align - 1) & ~(frame_align - 1); }

}  // namespace

void RingView::reset() {
    std::memset(data_, 0, capacity_);
    header_->tail.value.store(0, std::memory_order_relaxed);
    header_->tail.peer_copy.store(0, std::memory_order_relaxed);
    header_->head.value.store(0, std::memory_order_release);
}

void RingView::discard() {
    const std::uint64_t tail = header_->tail.value.load(std::memory_order_relaxed);
    header_->tail.peer_copy.store(tail, std::memory_order_relaxed);
    header_->head.value.store(tail, std::memory_order_release);
}

Status RingView::check_cursors(std::uint64_t *head, std::uint64_t *tail) const {
    if (*head > *tail || *tail - *head > capacity_ || (*head % frame_align) != 0 ||
        (*tail % frame_align) != 0)
        return Status::corrupt;
    return Status::ok;
}

std::uint64_t RingView::free_space() const {
    const std::uint64_t tail = header_->tail.value.load(std::memory_order_relaxed);
    const std::uint64_t head = header_->head.value.load(std::memory_order_acquire);
    return head <= tail && tail - head <= capacity_ ? capacity_ - (tail - head) : 0;
}

Status RingView::try_reserve(std::uint64_t min, std::uint64_t max, std::span<std::byte> *out) {
    std::uint64_t tail = header_->tail.value.load(std::memory_order_relaxed);
    max = std::min(max, max_chunk());
    min = std::min(min, max);
    const std::uint64_t pos = tail & (capacity_ - 1);
    const std::uint64_t to_end = capacity_ - pos;
    const std::uint64_t need = header_size + align8(min);
    const std::uint64_t skip = to_end < need ? to_end : 0;

    /* Free space from the copy of head first; the consumer's line only if short. */
    std::uint64_t head = header_->tail.peer_copy.load(std::memory_order_relaxed);
    if (check_cursors(&head, &tail) != Status::ok || capacity_ - (tail - head) < skip + need) {
        head = header_->head.value.load(std::memory_order_acquire);
        if (check_cursors(&head, &tail) != Status::ok)
            return Status::corrupt;
        header_->tail.peer_copy.store(head, std::memory_order_relaxed);
    }
    const std::uint64_t free = capacity_ - (tail - head);
    if (free < skip + need)
        return Status::would_block;
    const std::uint64_t room = std::min(free - skip, skip != 0 ? capacity_ : to_end);

    reserved_at_ = tail;
    reserved_skip_ = skip;
    reserved_bytes_ = std::min(max, room - header_size);
    const std::uint64_t frame_pos = (tail + skip) & (capacity_ - 1);
    *out = std::span<std::byte>(data_ + frame_pos + header_size, reserved_bytes_);
    return Status::ok;
}

/* Moves the line holding `at` from this core's caches to the one the cores share (a hint). */
static void push_to_shared_cache(const std::byte *at) {
#if defined(__x86_64__)
    asm volatile("cldemote %0" : : "m"(*at));
#else
    (void)at;
#endif
}

void RingView::commit(std::uint64_t length, FrameKind kind, std::uint16_t flags,
                      std::uint64_t generation, std::uint64_t total, bool consumer_apart) {
    length = std::min(length, reserved_bytes_);
    const std::uint64_t pad_pos = reserved_at_ & (capacity_ - 1);
    const std::uint64_t frame_at_cursor = reserved_at_ + reserved_skip_;
    const std::uint64_t frame_pos = frame_at_cursor & (capacity_ - 1);
    auto *h = reinterpret_cast<FrameHeader *>(data_ + frame_pos);
    h->length = static_cast<std::uint32_t>(length);
    h->kind = static_cast<std::uint16_t>(kind);
    h->flags = flags;
    h->generation = generation;
    h->total = total;
    std::atomic_ref<std::uint64_t>(h->mark).store(frame_at_cursor + 1, std::memory_order_release);
    if (reserved_skip_ >= header_size) {
        /* The pad goes out after the frame it makes room for: a consumer that
         * sees the pad finds the frame complete behind it. */
        auto *pad = reinterpret_cast<FrameHeader *>(data_ + pad_pos);
        pad->length = static_cast<std::uint32_t>(reserved_skip_ - header_size);
        pad->kind = static_cast<std::uint16_t>(FrameKind::pad);
        pad->flags = 0;
        pad->generation = generation;
        pad->total = 0;
        std::atomic_ref<std::uint64_t>(pad->mark).store(reserved_at_ + 1, std::memory_order_release);
    }
    header_->tail.value.store(frame_at_cursor + header_size + align8(length), std::memory_order_release);
    if (consumer_apart && header_size + length <= handover_max_frame) {
        for (std::uint64_t line = frame_pos & ~(cache_line - 1); line < frame_pos + header_size + length;
             line += cache_line)
            push_to_shared_cache(data_ + line);
    }
    reserved_bytes_ = 0;
}

bool RingView::empty() const {
    return header_->head.value.load(std::memory_order_relaxed) ==
           header_->tail.value.load(std::memory_order_acquire);
}

/* The complete frame at `head`, reading only frame headers (marks). */
Status RingView::frame_at(std::uint64_t head, Frame *out) const {
    head = frame_start(head);
    std::uint64_t pos = head & (capacity_ - 1);
    std::uint64_t to_end = capacity_ - pos;
    if (mark_at(pos) != head + 1)
        return Status::would_block;
    FrameHeader h;
    std::memcpy(&h, data_ + pos, sizeof h);
    if (h.kind == static_cast<std::uint16_t>(FrameKind::pad)) {
        if (h.length != to_end - header_size || pos == 0)
            return Status::corrupt;
        head += to_end;
        pos = 0;
        to_end = capacity_;
        if (mark_at(0) != head + 1)
            return Status::corrupt;  // the pad is published after its frame
        std::memcpy(&h, data_, sizeof h);
    }
    const std::uint64_t bytes = header_size + align8(h.length);
    if (h.kind == static_cast<std::uint16_t>(FrameKind::pad) ||
        h.kind > static_cast<std::uint16_t>(FrameKind::error) || h.length > max_chunk() || bytes > to_end)
        return Status::corrupt;
    out->header = h;
    out->payload = std::span<const std::byte>(data_ + pos + header_size, h.length);
    out->next_head = head + bytes;
    return Status::ok;
}

Status RingView::peek(Frame *out) const {
    const std::uint64_t head = header_->head.value.load(std::memory_order_relaxed);
    if (head % frame_align != 0)
        return Status::corrupt;
    const Status fast = frame_at(head, out);
    if (fast != Status::would_block)
        return fast;
    /* Nothing complete at head: the producer's tail tells empty from corrupt.
     * The tail is stored after a frame's mark, so a consumer that took the
     * last frame by its mark may be ahead of the tail it sees, by at most
     * a ring: that is "nothing yet", not corruption. */
    std::uint64_t h = head;
    std::uint64_t tail = header_->tail.value.load(std::memory_order_acquire);
    if (tail < head && head - tail <= capacity_ && tail % frame_align == 0)
        return Status::would_block;
    if (check_cursors(&h, &tail) != Status::ok)
        return Status::corrupt;
    if (h == tail)
        return Status::would_block;
    const Status again = frame_at(head, out);  // tail covers it: it must be complete
    if (again == Status::ok && out->next_head > tail)
        return Status::corrupt;
    return again == Status::would_block ? Status::corrupt : again;
}

}  // namespace courier::ipc
