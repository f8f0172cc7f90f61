/*
 * stats.cc — formatting, validating and summing the stats segment.
 */
#include "courier/ipc/stats.h"

#include <cstring>
#include <new>

#include "courier/ipc/layout.h"

namespace courier::ipc {
namespace {

constexpr const char *side_names[] = {
#define COURIER_X(name, help) #name,
    COURIER_SIDE_COUNTERS(COURIER_X)
#undef COURIER_X
};
constexpr const char *side_helps[] = {
#define COURIER_X(name, help) help,
    COURIER_SIDE_COUNTERS(COURIER_X)
#undef COURIER_X
};
constexpr const char *global_names[] = {
#define COURIER_X(name, help) #name,
    COURIER_GLOBAL_COUNTERS(COURIER_X)
#undef COURIER_X
};
constexpr const char *global_helps[] = {
#define COURIER_X(name, help) help,
    COURIER_GLOBAL_COUNTERS(COURIER_X)
#undef COURIER_X
};

constexpr std::size_t header_bytes = (sizeof(StatsHeader) + 63) / 64 * 64;
constexpr std::size_t globals_bytes = (sizeof(GlobalCounters) + 63) / 64 * 64;

}  // namespace

const char *counter_name(Counter c) { return side_names[static_cast<std::size_t>(c)]; }
const char *counter_help(Counter c) { return side_helps[static_cast<std::size_t>(c)]; }
const char *counter_name(GlobalCounter c) { return global_names[static_cast<std::size_t>(c)]; }
const char *counter_help(GlobalCounter c) { return global_helps[static_cast<std::size_t>(c)]; }

StatsView StatsView::create(void *base, std::size_t size, std::uint32_t slots) {
    std::memset(base, 0, size);
    auto *bytes = static_cast<std::byte *>(base);
    StatsView v;
    v.header_ = new (bytes) StatsHeader{};
    v.globals_ = new (bytes + header_bytes) GlobalCounters{};
    v.slots_ = reinterpret_cast<SlotStats *>(bytes + header_bytes + globals_bytes);
    for (std::uint32_t i = 0; i < slots; ++i)
        new (&v.slots_[i]) SlotStats{};
    v.header_->magic = stats_magic;
    v.header_->version = stats_version;
    v.header_->slots = slots;
    v.header_->segment_size = size;
    return v;
}

Status StatsView::attach(void *base, std::size_t size, StatsView *out) {
    if (base == nullptr || size < header_bytes)
        return Status::corrupt;
    auto *bytes = static_cast<std::byte *>(base);
    auto *h = reinterpret_cast<StatsHeader *>(bytes);
    if (h->magic != stats_magic || h->version != stats_version)
        return Status::corrupt;
    if (h->slots < min_slots || h->slots > max_slots || stats_segment_size(h->slots) > size ||
        h->segment_size > size)
        return Status::corrupt;
    out->header_ = h;
    out->globals_ = reinterpret_cast<GlobalCounters *>(bytes + header_bytes);
    out->slots_ = reinterpret_cast<SlotStats *>(bytes + header_bytes + globals_bytes);
    return Status::ok;
}

void StatsView::record_call(std::uint32_t slot, std::uint64_t latency_ns, bool failed) const {
    SlotStats *s = this->slot(slot);
    if (s == nullptr)
        return;
    auto add = [](std::atomic<std::uint64_t> &v, std::uint64_t n) {
        v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    };
    std::size_t b = 0;
    while (b < latency_bounds_ns.size() && latency_ns > latency_bounds_ns[b])
        ++b;
    add(s->calls.calls, 1);
    if (failed)
        add(s->calls.call_errors, 1);
    add(s->calls.latency_sum_ns, latency_ns);
    add(s->calls.latency_bucket[b], 1);
}

StatsSnapshot read_stats(const StatsView &view) {
    StatsSnapshot snap;
    if (!view.valid())
        return snap;
    const StatsHeader &h = view.header();
    snap.slots = h.slots;
    snap.server_up = h.server_up.load(std::memory_order_relaxed) != 0;
    snap.slots_in_use = h.slots_in_use.load(std::memory_order_relaxed);
    snap.server_epoch = h.server_epoch.load(std::memory_order_relaxed);
    snap.server_pid = h.server_pid.load(std::memory_order_relaxed);
    auto *bytes = reinterpret_cast<const std::byte *>(&h);
    auto *globals = reinterpret_cast<const GlobalCounters *>(bytes + header_bytes);
    for (std::size_t i = 0; i < global_counter_count; ++i)
        snap.global[i] = globals->value[i].load(std::memory_order_relaxed);
    for (std::uint32_t s = 0; s < h.slots; ++s) {
        const SlotStats *slot = view.slot(s);
        for (std::size_t i = 0; i < side_counter_count; ++i) {
            snap.client[i] += slot->client.value[i].load(std::memory_order_relaxed);
            snap.server[i] += slot->server.value[i].load(std::memory_order_relaxed);
        }
        snap.calls += slot->calls.calls.load(std::memory_order_relaxed);
        snap.call_errors += slot->calls.call_errors.load(std::memory_order_relaxed);
        snap.latency_sum_ns += slot->calls.latency_sum_ns.load(std::memory_order_relaxed);
        for (std::size_t b = 0; b < latency_buckets; ++b)
            snap.latency_bucket[b] += slot->calls.latency_bucket[b].load(std::memory_order_relaxed);
    }
    return snap;
}

std::vector<StatRow> stat_rows(const StatsSnapshot &snap) {
    std::vector<StatRow> rows;
    rows.push_back({"server_up", snap.server_up ? 1u : 0u, "1 while the serving process runs"});
    rows.push_back({"server_epoch", snap.server_epoch, "Epoch of the serving process"});
    rows.push_back({"server_pid", snap.server_pid, "Process id of the serving process"});
    rows.push_back({"slots", snap.slots, "Slots configured"});
    rows.push_back({"slots_in_use", snap.slots_in_use, "Slots leased or being served"});
    for (std::size_t i = 0; i < global_counter_count; ++i)
        rows.push_back({global_names[i], snap.global[i], global_helps[i]});
    for (std::size_t i = 0; i < side_counter_count; ++i) {
        rows.push_back({std::string("client_") + side_names[i], snap.client[i],
                        std::string(side_helps[i]) + " (backend side)"});
        rows.push_back({std::string("server_") + side_names[i], snap.server[i],
                        std::string(side_helps[i]) + " (worker side)"});
    }
    rows.push_back({"calls", snap.calls, "Calls completed or failed"});
    rows.push_back({"call_errors", snap.call_errors, "Calls that ended in an error"});
    rows.push_back({"call_latency_sum_ns", snap.latency_sum_ns, "Sum of call latencies, ns"});
    return rows;
}

}  // namespace courier::ipc
