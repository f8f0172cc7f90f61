/*
 * doorbell.h — a bitmap of slots with a request waiting for the server.
 *
 * A client sets its slot's bit with fetch_or after its first request frame
 * is published; the dispatcher takes whole words with exchange(0), so it
 * visits only slots that rang and never scans idle ones. A bit rung twice
 * before a drain is delivered once; the caller's slot state decides what
 * the ring means. Bits beyond the slot count are ignored (a corrupt word
 * cannot name a slot that does not exist).
 */
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace courier::ipc {

class Doorbell {
public:
    Doorbell() = default;
    Doorbell(std::atomic<std::uint64_t> *words, std::uint32_t slots)
        : words_(words), slots_(slots) {}

    void clear();
    /* Returns true when the bit was newly set. */
    bool ring(std::uint32_t slot);
    /* Calls fn(slot) for every rung slot, clearing as it goes; returns count. */
    template <typename Fn>
    std::uint32_t drain(Fn &&fn);
    bool any() const;

private:
    std::atomic<std::uint64_t> *words_ = nullptr;
    std::uint32_t slots_ = 0;
};

template <typename Fn>
std::uint32_t Doorbell::drain(Fn &&fn) {
    std::uint32_t n = 0;
    const std::size_t nwords = (slots_ + 63) / 64;
    for (std::size_t w = 0; w < nwords; ++w) {
        if (words_[w].load(std::memory_order_relaxed) == 0)
            continue;
        std::uint64_t bits = words_[w].exchange(0, std::memory_order_acquire);
        while (bits != 0) {
            const unsigned bit = static_cast<unsigned>(__builtin_ctzll(bits));
            bits &= bits - 1;
            const std::uint64_t slot = w * 64 + bit;
            if (slot < slots_) {
                fn(static_cast<std::uint32_t>(slot));
                ++n;
            }
        }
    }
    return n;
}

}  // namespace courier::ipc
