/*
 * freelist.cc — the tagged Treiber stack of slot indexes (see freelist.h).
 */
#include "courier/ipc/freelist.h"

namespace courier::ipc {
namespace {

constexpr std::uint64_t pack(std::uint32_t tag, std::uint32_t index) {
    return (static_cast<std::uint64_t>(tag) << 32) | index;
}
constexpr std::uint32_t index_of(std::uint64_t head) { return static_cast<std::uint32_t>(head); }
constexpr std::uint32_t tag_of(std::uint64_t head) { return static_cast<std::uint32_t>(head >> 32); }

}  // namespace

void FreeList::init_full() {
    for (std::uint32_t i = 0; i < size_; ++i)
        links_[i].store(i + 1 < size_ ? i + 1 : nil_index, std::memory_order_relaxed);
    head_->store(pack(0, size_ > 0 ? 0 : nil_index), std::memory_order_release);
}

Status FreeList::pop(std::uint32_t *index, FreeListCounts *counts) {
    std::uint64_t head = head_->load(std::memory_order_acquire);
    for (;;) {
        const std::uint32_t top = index_of(head);
        if (top == nil_index) {
            counts->empty = true;
            return Status::no_slot;
        }
        if (top >= size_)
            return Status::corrupt;
        const std::uint32_t below = links_[top].load(std::memory_order_relaxed);
        if (below != nil_index && below >= size_) {
            /* A stale read is possible if top was popped meanwhile; only a
             * head that did not move proves the link itself is corrupt. */
            if (head_->load(std::memory_order_acquire) == head)
                return Status::corrupt;
            head = head_->load(std::memory_order_acquire);
            ++counts->cas_retries;
            continue;
        }
        if (head_->compare_exchange_weak(head, pack(tag_of(head) + 1, below),
                                         std::memory_order_acq_rel, std::memory_order_acquire)) {
            *index = top;
            return Status::ok;
        }
        ++counts->cas_retries;
    }
}

Status FreeList::push(std::uint32_t index, FreeListCounts *counts) {
    if (index >= size_)
        return Status::bad_argument;
    std::uint64_t head = head_->load(std::memory_order_relaxed);
    for (;;) {
        const std::uint32_t top = index_of(head);
        if (top != nil_index && top >= size_)
            return Status::corrupt;
        links_[index].store(top, std::memory_order_relaxed);
        if (head_->compare_exchange_weak(head, pack(tag_of(head) + 1, index),
                                         std::memory_order_release, std::memory_order_relaxed))
            return Status::ok;
        ++counts->cas_retries;
    }
}

std::uint32_t FreeList::count_unsafe() const {
    std::uint32_t n = 0;
    for (std::uint32_t i = index_of(head_->load(std::memory_order_acquire));
         i != nil_index && i < size_ && n <= size_; i = links_[i].load(std::memory_order_relaxed))
        ++n;
    return n;
}

}  // namespace courier::ipc
