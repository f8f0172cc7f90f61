/*
 * layout.cc — compute_layout(), the one formula for courier's sizes.
 */
#include "courier/ipc/layout.h"

#include "courier/ipc/dispatch.h"
#include "courier/ipc/region.h"
#include "courier/ipc/stats.h"

namespace courier::ipc {
namespace {

constexpr bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

const char *describe_layout_error(const RegionParams &p) {
    if (p.slots < min_slots || p.slots > max_slots)
        return "slots must be between 1 and 65536";
    if (p.ring_size < min_ring_size || p.ring_size > max_ring_size)
        return "ring_size must be between 4 kB and 1 GB";
    if (!is_pow2(p.ring_size))
        return "ring_size must be a power of two (for example 64kB, 1MB)";
    if (p.max_message_size < min_max_message_size || p.max_message_size > max_max_message_size)
        return "max_message_size must be between 1 byte and 1 GB - 1 kB (1048575kB)";
    if (p.runtimes < min_runtimes || p.runtimes > max_runtimes)
        return "runtimes must be between 1 and 8";
    return nullptr;
}

StatsLayout stats_layout(std::uint32_t slots) {
    StatsLayout l;
    l.globals_offset = cache_align(sizeof(StatsHeader));
    l.slots_offset = l.globals_offset + cache_align(sizeof(GlobalCounters));
    l.size = l.slots_offset + static_cast<std::size_t>(slots) * sizeof(SlotStats);
    return l;
}

std::size_t stats_segment_size(std::uint32_t slots) { return stats_layout(slots).size; }

Status compute_layout(const RegionParams &params, RegionLayout *out) {
    if (describe_layout_error(params) != nullptr)
        return Status::bad_argument;

    RegionLayout l;
    l.params = params;
    std::size_t at = 0;
    l.header_offset = at;
    at = cache_align(at + sizeof(RegionHeader));
    l.dispatch_offset = at;
    at = cache_align(at + sizeof(DispatchControl) * params.runtimes);
    l.freelist_offset = at;
    at = cache_align(at + sizeof(std::uint32_t) * params.slots);
    l.bells_offset = at;
    l.bell_words = (params.slots + 63) / 64;
    /* Each bell (its spinner word, then the bitmap) on lines of its own: backends ring one runtime's bell. */
    l.bell_stride = cache_align(sizeof(std::uint64_t) * (1 + l.bell_words));
    at += l.bell_stride * (params.runtimes + extra_bells);
    l.slots_offset = at;
    l.slot_stride = cache_align(sizeof(SlotControl));
    at += l.slot_stride * params.slots;
    l.rings_offset = cache_align(at);
    l.ring_stride = static_cast<std::size_t>(2 * params.ring_size);
    l.region_size = l.rings_offset + l.ring_stride * params.slots;
    l.request_size = l.region_size + cache_line;
    l.stats_size = stats_segment_size(params.slots);
    l.bundled_stats_offset = cache_align(l.region_size);
    l.bundled_size = cache_align(l.bundled_stats_offset + l.stats_size);
    *out = l;
    return Status::ok;
}

}  // namespace courier::ipc
