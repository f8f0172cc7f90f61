#include "courier/ipc/doorbell.h"

namespace courier::ipc {

void Doorbell::clear() {
    for (std::size_t w = 0; w < (slots_ + 63) / 64; ++w)
        words_[w].store(0, std::memory_order_relaxed);
}

bool Doorbell::ring(std::uint32_t slot) {
    if (slot >= slots_)
        return false;
    const std::uint64_t bit = 1ull << (slot % 64);
    return (words_[slot / 64].fetch_or(bit, std::memory_order_release) & bit) == 0;
}

bool Doorbell::any() const {
    for (std::size_t w = 0; w < (slots_ + 63) / 64; ++w)
        if (words_[w].load(std::memory_order_relaxed) != 0)
            return true;
    return false;
}

}  // namespace courier::ipc
