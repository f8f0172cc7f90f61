/*
 * stats.cc — formatting, validating and summing the stats segment.
 */
#include "courier/ipc/stats.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "courier/ipc/layout.h"

namespace courier::ipc {
namespace {

constexpr CounterInfo side_counters[] = {
#define COURIER_X(name, metric, as, help) {#name, metric, Published::as, help},
    COURIER_SIDE_COUNTERS(COURIER_X)
#undef COURIER_X
};
constexpr CounterInfo global_counters[] = {
#define COURIER_X(name, metric, as, help) {#name, metric, Published::as, help},
    COURIER_GLOBAL_COUNTERS(COURIER_X)
#undef COURIER_X
};

}  // namespace

std::string stats_segment_name(int port) { return "/courier-" + std::to_string(port); }
std::string stats_segment_path(int port) { return "/dev/shm/courier-" + std::to_string(port); }

const CounterInfo &counter_info(Counter c) { return side_counters[static_cast<std::size_t>(c)]; }
const CounterInfo &counter_info(GlobalCounter c) { return global_counters[static_cast<std::size_t>(c)]; }

StatsView StatsView::create(void *base, std::size_t size, std::uint32_t slots) {
    std::memset(base, 0, size);
    auto *bytes = static_cast<std::byte *>(base);
    const StatsLayout l = stats_layout(slots);
    StatsView v;
    v.header_ = new (bytes) StatsHeader{};
    v.globals_ = new (bytes + l.globals_offset) GlobalCounters{};
    v.slots_ = reinterpret_cast<SlotStats *>(bytes + l.slots_offset);
    for (std::uint32_t i = 0; i < slots; ++i)
        new (&v.slots_[i]) SlotStats{};
    v.slot_count_ = slots;
    v.header_->magic = stats_magic;
    v.header_->version = stats_version;
    v.header_->slots = slots;
    v.header_->segment_size = size;
    return v;
}

Status StatsView::attach(void *base, std::size_t size, StatsView *out) {
    if (base == nullptr || size < sizeof(StatsHeader))
        return Status::corrupt;
    auto *bytes = static_cast<std::byte *>(base);
    auto *h = reinterpret_cast<StatsHeader *>(bytes);
    if (h->magic != stats_magic || h->version != stats_version)
        return Status::corrupt;
    if (h->slots < min_slots || h->slots > max_slots || stats_segment_size(h->slots) > size ||
        h->segment_size > size || h->runtimes > max_runtimes)
        return Status::corrupt;
    const StatsLayout l = stats_layout(h->slots);
    out->header_ = h;
    out->slot_count_ = h->slots;
    out->globals_ = reinterpret_cast<GlobalCounters *>(bytes + l.globals_offset);
    out->slots_ = reinterpret_cast<SlotStats *>(bytes + l.slots_offset);
    return Status::ok;
}

void StatsView::set_runtimes(const std::vector<std::string> &names) const {
    header_->runtimes = static_cast<std::uint32_t>(std::min<std::size_t>(names.size(), max_runtimes));
    for (std::uint32_t r = 0; r < header_->runtimes; ++r)
        std::snprintf(header_->runtime[r].name, runtime_name_bytes, "%s", names[r].c_str());
}

void StatsView::set_runtime_state(std::uint32_t runtime, RuntimeState state) const {
    if (runtime < header_->runtimes)
        header_->runtime[runtime].state.store(static_cast<std::uint32_t>(state), std::memory_order_relaxed);
}

void StatsView::record_call(std::uint32_t slot, std::uint32_t runtime, std::uint64_t latency_ns,
                            bool failed) const {
    SlotStats *s = this->slot(slot);
    if (s == nullptr || runtime >= max_runtimes)
        return;
    auto add = [](std::atomic<std::uint64_t> &v, std::uint64_t n) {
        v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    };
    std::size_t b = 0;
    while (b < latency_bounds_ns.size() && latency_ns > latency_bounds_ns[b])
        ++b;
    add(s->calls.calls[runtime], 1);
    if (failed)
        add(s->calls.call_errors[runtime], 1);
    add(s->calls.latency_sum_ns, latency_ns);
    add(s->calls.latency_bucket[b], 1);
}

StatsSnapshot read_stats(const StatsView &view) {
    StatsSnapshot snap;
    if (!view.valid())
        return snap;
    const StatsHeader &h = view.header();
    snap.slots = view.slots();
    snap.server_up = h.server_up.load(std::memory_order_relaxed) != 0;
    snap.slots_in_use = h.slots_in_use.load(std::memory_order_relaxed);
    snap.server_epoch = h.server_epoch.load(std::memory_order_relaxed);
    snap.server_pid = h.server_pid.load(std::memory_order_relaxed);
    snap.heartbeat_ns = h.heartbeat_ns.load(std::memory_order_relaxed);
    snap.runtimes.resize(std::min<std::uint32_t>(h.runtimes, max_runtimes));
    for (std::size_t r = 0; r < snap.runtimes.size(); ++r) {
        snap.runtimes[r].name.assign(h.runtime[r].name, strnlen(h.runtime[r].name, runtime_name_bytes));
        snap.runtimes[r].state = static_cast<RuntimeState>(h.runtime[r].state.load(std::memory_order_relaxed));
    }
    auto *bytes = reinterpret_cast<const std::byte *>(&h);
    auto *globals = reinterpret_cast<const GlobalCounters *>(bytes + stats_layout(view.slots()).globals_offset);
    for (std::size_t i = 0; i < global_counter_count; ++i)
        snap.global[i] = globals->value[i].load(std::memory_order_relaxed);
    for (std::uint32_t s = 0; s < view.slots(); ++s) {
        const SlotStats *slot = view.slot(s);
        for (std::size_t i = 0; i < side_counter_count; ++i) {
            snap.client[i] += slot->client.value[i].load(std::memory_order_relaxed);
            snap.server[i] += slot->server.value[i].load(std::memory_order_relaxed);
        }
        for (std::size_t r = 0; r < max_runtimes; ++r) {
            const std::uint64_t calls = slot->calls.calls[r].load(std::memory_order_relaxed);
            const std::uint64_t errors = slot->calls.call_errors[r].load(std::memory_order_relaxed);
            snap.calls += calls;
            snap.call_errors += errors;
            if (r < snap.runtimes.size()) {
                snap.runtimes[r].calls += calls;
                snap.runtimes[r].call_errors += errors;
            }
        }
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
        rows.push_back({global_counters[i].name, snap.global[i], global_counters[i].help});
    for (std::size_t i = 0; i < side_counter_count; ++i) {
        rows.push_back({std::string("client_") + side_counters[i].name, snap.client[i],
                        std::string(side_counters[i].help) + " (backend side)"});
        rows.push_back({std::string("server_") + side_counters[i].name, snap.server[i],
                        std::string(side_counters[i].help) + " (worker side)"});
    }
    rows.push_back({"calls", snap.calls, "Calls completed or failed"});
    rows.push_back({"call_errors", snap.call_errors, "Calls that ended in an error"});
    rows.push_back({"call_latency_sum_ns", snap.latency_sum_ns, "Sum of call latencies, ns"});
    for (const auto &rt : snap.runtimes) {
        const std::string prefix = "runtime." + rt.name + ".";
        rows.push_back({prefix + "loaded", rt.state == RuntimeState::loaded ? 1u : 0u,
                        "1 when the worker loaded runtime " + rt.name});
        rows.push_back({prefix + "calls", rt.calls, "Calls made to runtime " + rt.name});
        rows.push_back({prefix + "call_errors", rt.call_errors, "Calls to runtime " + rt.name + " that ended in an error"});
    }
    return rows;
}

}  // namespace courier::ipc
