/*
 * ring.cc — SPSC frame ring (protocol in ring.h).
 *
 * Both sides compute positions from the cursors they read, and check every
 * cursor and header against the capacity before use, because the other
 * side's memory may be garbage (a crashed or buggy process).
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
    header_->tail.value.store(0, std::memory_order_relaxed);
    header_->head.value.store(0, std::memory_order_release);
}

std::uint64_t RingView::max_chunk() const { return capacity_ / 4 - header_size; }

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
    std::uint64_t head = header_->head.value.load(std::memory_order_acquire);
    if (check_cursors(&head, &tail) != Status::ok)
        return Status::corrupt;
    max = std::min(max, max_chunk());
    min = std::min(min, max);

    const std::uint64_t free = capacity_ - (tail - head);
    const std::uint64_t pos = tail & (capacity_ - 1);
    const std::uint64_t to_end = capacity_ - pos;
    const std::uint64_t need = header_size + align8(min);
    const std::uint64_t skip = to_end < need ? to_end : 0;
    if (free < skip + need)
        return Status::would_block;
    const std::uint64_t room = std::min(free - skip, skip != 0 ? capacity_ : to_end);

    if (skip >= header_size) {
        FrameHeader pad{static_cast<std::uint32_t>(skip - header_size),
                        static_cast<std::uint16_t>(FrameKind::pad), 0, 0, 0};
        std::memcpy(data_ + pos, &pad, sizeof pad);
    }
    reserved_at_ = tail;
    reserved_skip_ = skip;
    reserved_bytes_ = std::min(max, room - header_size);
    const std::uint64_t frame_pos = (tail + skip) & (capacity_ - 1);
    *out = std::span<std::byte>(data_ + frame_pos + header_size, reserved_bytes_);
    return Status::ok;
}

void RingView::commit(std::uint64_t length, FrameKind kind, std::uint16_t flags,
                      std::uint64_t generation, std::uint64_t total) {
    length = std::min(length, reserved_bytes_);
    const std::uint64_t frame_pos = (reserved_at_ + reserved_skip_) & (capacity_ - 1);
    FrameHeader h{static_cast<std::uint32_t>(length), static_cast<std::uint16_t>(kind), flags,
                  generation, total};
    std::memcpy(data_ + frame_pos, &h, sizeof h);
    header_->tail.value.store(reserved_at_ + reserved_skip_ + header_size + align8(length),
                              std::memory_order_release);
    reserved_bytes_ = 0;
}

bool RingView::empty() const {
    return header_->head.value.load(std::memory_order_relaxed) ==
           header_->tail.value.load(std::memory_order_acquire);
}

Status RingView::peek(Frame *out) const {
    std::uint64_t head = header_->head.value.load(std::memory_order_relaxed);
    std::uint64_t tail = header_->tail.value.load(std::memory_order_acquire);
    if (check_cursors(&head, &tail) != Status::ok)
        return Status::corrupt;
    if (head == tail)
        return Status::would_block;

    std::uint64_t pos = head & (capacity_ - 1);
    std::uint64_t to_end = capacity_ - pos;
    FrameHeader h;
    if (to_end < header_size) {
        head += to_end;  // the implicit skip: no header fits here
        pos = 0;
        to_end = capacity_;
    } else {
        std::memcpy(&h, data_ + pos, sizeof h);
        if (h.kind == static_cast<std::uint16_t>(FrameKind::pad)) {
            if (h.length != to_end - header_size)
                return Status::corrupt;
            head += to_end;
            pos = 0;
            to_end = capacity_;
        }
    }
    /* A skip is always followed by the frame it made room for. */
    if (head >= tail)
        return Status::corrupt;
    std::memcpy(&h, data_ + pos, sizeof h);
    const std::uint64_t bytes = header_size + align8(h.length);
    if (h.kind == static_cast<std::uint16_t>(FrameKind::pad) ||
        h.kind > static_cast<std::uint16_t>(FrameKind::error) || h.length > max_chunk() ||
        bytes > to_end || bytes > tail - head)
        return Status::corrupt;

    out->header = h;
    out->payload = std::span<const std::byte>(data_ + pos + header_size, h.length);
    out->next_head = head + bytes;
    return Status::ok;
}

void RingView::consume(const Frame &frame) {
    header_->head.value.store(frame.next_head, std::memory_order_release);
}

}  // namespace courier::ipc
