/*
 * freelist.h — a lock-free stack of slot indexes.
 *
 * The head is one 64-bit word: the low 32 bits are the index on top of the
 * stack (nil when empty), the high 32 bits an ABA tag incremented by every
 * successful push and pop. links[i] holds the index below i. A pop reads
 * links[top] before its CAS; if another process popped and pushed `top` in
 * between, the tag changed and the CAS fails, so a stale link is never
 * installed. links[] is a plain array inside the region, so reading a link
 * of a slot that was popped meanwhile is harmless.
 *
 * Every index read from shared memory is range-checked: a corrupt head or
 * link yields Status::corrupt instead of an out-of-bounds access.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <atomic>
#include <cstdint>

#include "courier/ipc/status.h"

namespace courier::ipc {

inline constexpr std::uint32_t nil_index = 0xffffffffu;

struct FreeListCounts {
    std::uint64_t cas_retries = 0;
    bool empty = false;
};

class FreeList {
public:
    FreeList() = default;
    FreeList(std::atomic<std::uint64_t> *head, std::atomic<std::uint32_t> *links,
             std::uint32_t size)
        : head_(head), links_(links), size_(size) {}

    /* Pushes 0..size-1 so that 0 is popped first. Before any sharing. */
    void init_full();
    Status pop(std::uint32_t *index, FreeListCounts *counts);
    Status push(std::uint32_t index, FreeListCounts *counts);

    /* Walks the stack (not atomic as a whole: for tests and diagnostics). */
    std::uint32_t count_unsafe() const;

private:
    std::atomic<std::uint64_t> *head_ = nullptr;
    std::atomic<std::uint32_t> *links_ = nullptr;
    std::uint32_t size_ = 0;
};

}  // namespace courier::ipc
