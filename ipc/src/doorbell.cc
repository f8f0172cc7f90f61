/*
 * doorbell.cc — ring, claim and look at a bitmap of slots (see doorbell.h).
 */
#include "courier/ipc/doorbell.h"

namespace courier::ipc {

void Doorbell::clear() {
    for (std::size_t w = 0; w < words(); ++w)
        words_[w].store(0, std::memory_order_relaxed);
}

bool Doorbell::ring(std::uint32_t slot) {
    if (slot >= slots_)
        return false;
    const std::uint64_t bit = 1ull << (slot % 64);
    return (words_[slot / 64].fetch_or(bit, std::memory_order_seq_cst) & bit) == 0;
}

/*
 * Visits words from `from`'s word on, and that first word's low bits last,
 * so every rung slot is reachable from any starting point.
 */
bool Doorbell::claim(std::uint32_t from, std::uint32_t *slot) {
    const std::size_t n = words();
    const std::size_t first = (from < slots_ ? from : 0) / 64;
    const unsigned first_bit = (from < slots_ ? from : 0) % 64;
    for (std::size_t k = 0; k <= n; ++k) {
        const std::size_t w = first + k < n ? first + k : first + k - n;  // not %: a division a word, on every call
        std::uint64_t mask = ~0ull;
        if (k == 0)
            mask = ~0ull << first_bit;
        else if (k == n)
            mask = first_bit == 0 ? 0 : ~(~0ull << first_bit);
        std::uint64_t bits = words_[w].load(std::memory_order_relaxed) & mask;
        while (bits != 0) {
            const std::uint64_t bit = bits & (~bits + 1);
            bits &= bits - 1;
            const std::uint64_t index = w * 64 + static_cast<unsigned>(__builtin_ctzll(bit));
            if (index >= slots_) {  // garbage: clear it, or any() would stay true
                words_[w].fetch_and(~bit, std::memory_order_relaxed);
                continue;
            }
            if (words_[w].fetch_and(~bit, std::memory_order_acquire) & bit) {
                *slot = static_cast<std::uint32_t>(index);
                return true;
            }
        }
    }
    return false;
}

bool Doorbell::any() const {
    for (std::size_t w = 0; w < words(); ++w)
        if (words_[w].load(std::memory_order_relaxed) != 0)
            return true;
    return false;
}

}  // namespace courier::ipc
