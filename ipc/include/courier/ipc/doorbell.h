/*
 * doorbell.h — a bitmap of slots with something waiting for the server.
 *
 * A client sets its slot's bit with fetch_or once its first request frame
 * is published (ring). A serving thread takes one bit at a time with
 * fetch_and (claim), so several threads can take calls from one bell
 * without a lock and each call goes to exactly one of them; the search
 * starts where the caller says, so that low slots are not always served
 * first. The cancel watcher takes whole words with exchange (drain). Either
 * way only slots that rang are visited, never idle ones.
 *
 * A bit rung twice before it is taken is delivered once; the slot's state
 * word decides what the ring means. Bits beyond the slot count are ignored
 * (a corrupt word cannot name a slot that does not exist).
 *
 * The bell's first word is not a slot's: it is 1 while a serving thread
 * spins on this bell (spinner(), dispatch.h). A ringer must read it after
 * its ring, and it shares the cache line of the first 448 slots' bits, so
 * the line the ringer's fetch_or brings over carries it too: the spinner
 * sets and clears it once per call, and on a word of its own line each of
 * those stores pulled the line away from the ringer that read it (two
 * line transfers per call; bench/README.md has the round trip before and
 * after).
 *
 * Ordering: ring is seq_cst, so that together with the fence in the
 * ringer's notify it forms the Dekker handshake with a serving thread that
 * announces itself idle (dispatch.h). claim and drain acquire, pairing with
 * the ring: the frame published before the ring is visible to the taker.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace courier::ipc {

class Doorbell {
public:
    Doorbell() = default;
    /* `words`: the spinner word, then (slots + 63) / 64 bitmap words. */
    Doorbell(std::atomic<std::uint64_t> *words, std::uint32_t slots)
        : spinner_(words), words_(words + 1), slots_(slots) {}

    void clear();
    /* Returns true when the bit was newly set. */
    bool ring(std::uint32_t slot);
    /* Takes one rung slot, searching from `from` on (wrapping). */
    bool claim(std::uint32_t from, std::uint32_t *slot);
    /* Calls fn(slot) for every rung slot, clearing as it goes; returns count. */
    template <typename Fn>
    std::uint32_t drain(Fn &&fn);
    bool any() const;
    /* 1 while a serving thread spins on this bell (dispatch.h). */
    std::atomic<std::uint64_t> &spinner() const { return *spinner_; }

private:
    std::size_t words() const { return (slots_ + 63) / 64; }

    std::atomic<std::uint64_t> *spinner_ = nullptr;
    std::atomic<std::uint64_t> *words_ = nullptr;
    std::uint32_t slots_ = 0;
};

template <typename Fn>
std::uint32_t Doorbell::drain(Fn &&fn) {
    std::uint32_t n = 0;
    for (std::size_t w = 0; w < words(); ++w) {
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
