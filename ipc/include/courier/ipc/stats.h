/*
 * stats.h — the counters of courier and the layout of the stats segment.
 *
 * The stats segment is separate from the control region: the exporter maps
 * it read-only and must keep working while the worker is down, so it holds
 * only numbers, never anything the protocol depends on.
 *
 * Layout (version stats_version; readers refuse any other):
 *
 *   StatsHeader                 magic, version, slot count, sizes, the
 *                               worker's state, each runtime's name and state
 *   GlobalCounters              rare events, updated with fetch_add
 *   SlotStats[slots]            per slot: one line of SideCounters per side,
 *                               then the client's call counters (per
 *                               runtime) and latency histogram
 *
 * Hot counters are single-writer: a slot's side is driven by exactly one
 * thread at a time (the lease or the dispatch hands it over with a
 * happens-before edge), so they are bumped with a relaxed load and store
 * rather than a locked read-modify-write. Readers sum them and may see a
 * value that is a few increments old, never a torn one.
 *
 * The counter lists below are the one table of courier's counters: the
 * segment's layout, courier.stats(), the exporter's metrics and
 * exporter/METRICS.md are generated from them. Adding a counter is one
 * line here (the exporter publishes it under the metric name given, and
 * the segment's version changes with the table);
 * tests/exporter checks METRICS.md against the exporter.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "courier/ipc/layout.h"
#include "courier/ipc/status.h"

namespace courier::ipc {

/*
 * name, exporter metric, published as, help — per slot and per side
 * (client = backend, server = worker). by_side: one series per side
 * (side="backend"|"worker"); by_direction: what a side sends, as
 * direction="to_worker"|"to_backend".
 */
#define COURIER_SIDE_COUNTERS(X)                                                                              \
    X(wakeups_sent, "courier_wakeups_sent_total", by_side, "Wakeups sent to a peer that announced it was sleeping") \
    X(wakeups_elided, "courier_wakeups_elided_total", by_side, "Wakeups skipped because the peer was still spinning") \
    X(spurious_wakeups, "courier_spurious_wakeups_total", by_side, "Wakeups after which there was nothing to do")  \
    X(spin_hits, "courier_spin_hits_total", by_side, "Waits satisfied while spinning, without sleeping")           \
    X(sleeps, "courier_sleeps_total", by_side, "Waits that slept (latch or futex) after the spin budget")          \
    X(shared_cpu_spins, "courier_shared_cpu_spins_total", by_side,                                            \
      "Spins that found the peer last ran on the same CPU, and gave it the CPU at once instead of spinning")    \
    X(cpu_moves, "courier_cpu_moves_total", by_side,                                                          \
      "Times a session calling back to back left the CPU its worker thread ran on; it gets it back 50 ms after it stops")       \
    X(ring_full_stalls, "courier_ring_full_stalls_total", by_side, "Times a sender found its ring full and waited") \
    X(wakeups_owed, "courier_wakeups_owed_total", by_side,                                                    \
      "Wakeups a worker thread left for a session or an idle worker thread to make, as more calls were waiting") \
    X(owed_wakeups_paid, "courier_owed_wakeups_paid_total", by_side,                                          \
      "Owed wakeups a session made for another when it ended its own call")                                   \
    X(owed_wakeups_late, "courier_owed_wakeups_late_total", by_side,                                          \
      "Sleeps that ended when the session looked again by itself and found its answer: an owed wakeup came late") \
    X(turns_given, "courier_turns_given_total", by_side,                                                      \
      "Times a session that had called back to back for 200 us offered its CPU to others (a yield)")          \
    X(watched_calls, "courier_watched_calls_total", by_side,                                                  \
      "Calls that went to a spinning worker thread watching the slot, without the doorbell")                  \
    X(kept_calls, "courier_kept_calls_total", by_side,                                                        \
      "Calls whose request went straight to the worker thread that kept the session's previous call")         \
    X(messages_sent, "courier_messages_total", by_direction, "Messages sent")                                    \
    X(bytes_sent, "courier_bytes_total", by_direction, "Payload bytes sent")

/* name, exporter metric, published as, help — global, rare events. in_seconds: counted in ns, published in s. */
#define COURIER_GLOBAL_COUNTERS(X)                                                                            \
    X(leases, "courier_slot_leases_total", as_is, "Slots leased from the free list")                          \
    X(releases, "courier_slot_releases_total", as_is, "Slots returned to the free list")                      \
    X(freelist_cas_retries, "courier_freelist_cas_retries_total", as_is,                                      \
      "Compare-and-swap retries on the free list's head (contention)")                                       \
    X(freelist_empty, "courier_slot_exhaustion_total", as_is, "Lease attempts that found every slot taken")   \
    X(slot_wait_ns, "courier_slot_wait_seconds_total", in_seconds, "Time sessions spent waiting for a free slot") \
    X(slot_wait_timeouts, "courier_slot_wait_timeouts_total", as_is,                                          \
      "Calls that failed after waiting courier.slot_wait_timeout for a slot")                                 \
    X(abandons, "courier_call_abandons_total", as_is,                                                         \
      "Calls abandoned by their session (cancel, timeout, error, exit)")                                      \
    X(kept_calls_taken_back, "courier_kept_calls_taken_back_total", as_is,                                    \
      "Kept calls a session took back, its request not taken by the worker thread that kept it, and rang for") \
    X(late_responses_dropped, "courier_late_responses_dropped_total", as_is,                                  \
      "Responses dropped because the session had abandoned the call")                                         \
    X(calls_dropped_unstarted, "courier_calls_dropped_unstarted_total", as_is,                                \
      "Calls given up by their session while queued, never run")                                              \
    X(corrupt_frames, "courier_corrupt_frames_total", as_is, "Frames or indexes rejected as corrupt")          \
    X(too_large, "courier_messages_too_large_total", as_is,                                                   \
      "Messages refused for exceeding courier.max_message_size")                                              \
    X(server_restarts, "courier_worker_restarts_total", as_is, "Times the courier worker started again")

enum class Counter : std::uint8_t {
#define COURIER_X(name, metric, as, help) name,
    COURIER_SIDE_COUNTERS(COURIER_X)
#undef COURIER_X
        count_
};
inline constexpr std::size_t side_counter_count = static_cast<std::size_t>(Counter::count_);

enum class GlobalCounter : std::uint8_t {
#define COURIER_X(name, metric, as, help) name,
    COURIER_GLOBAL_COUNTERS(COURIER_X)
#undef COURIER_X
        count_
};
inline constexpr std::size_t global_counter_count =
    static_cast<std::size_t>(GlobalCounter::count_);

/* How the exporter publishes a counter (the third column above). */
enum class Published : std::uint8_t { by_side, by_direction, as_is, in_seconds };

struct CounterInfo {
    const char *name;    // courier.stats()'s row (side counters: prefixed client_ / server_)
    const char *metric;  // the exporter's metric family
    Published as;
    const char *help;
};

const CounterInfo &counter_info(Counter c);
const CounterInfo &counter_info(GlobalCounter c);

/* Call latency buckets, upper bounds in nanoseconds: 1 µs .. 10 s, then +Inf. */
inline constexpr std::array<std::uint64_t, 22> latency_bounds_ns = {
    1'000,       2'500,       5'000,         10'000,        25'000,        50'000,
    100'000,     250'000,     500'000,       1'000'000,     2'500'000,     5'000'000,
    10'000'000,  25'000'000,  50'000'000,    100'000'000,   250'000'000,   500'000'000,
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
inline constexpr std::size_t latency_buckets = latency_bounds_ns.size() + 1;

struct alignas(64) SideCounters {
    std::atomic<std::uint64_t> value[side_counter_count];
};
/* Each side writes only its own: lines of their own, so the two sides never share one. */
static_assert(sizeof(SideCounters) % 64 == 0, "whole cache lines per side");

struct alignas(64) CallCounters {
    std::atomic<std::uint64_t> calls[max_runtimes];
    std::atomic<std::uint64_t> call_errors[max_runtimes];
    std::atomic<std::uint64_t> latency_sum_ns;
    std::atomic<std::uint64_t> latency_bucket[latency_buckets];
};

struct alignas(64) SlotStats {
    SideCounters client;
    SideCounters server;
    CallCounters calls;  // written by the client side only
};

inline constexpr std::uint64_t stats_magic = 0x5354415452554f43ull;  // "COURSTAT"
/*
 * The layout's version: the structure's own (stats_structure_version), mixed with every
 * counter's name in order, so that adding, removing or moving a counter in
 * the table makes an older exporter refuse the segment rather than misread it.
 */
inline constexpr std::uint32_t stats_structure_version = 2;
inline constexpr char stats_counter_names[] =
#define COURIER_X(name, metric, as, help) #name ","
    COURIER_SIDE_COUNTERS(COURIER_X) "|" COURIER_GLOBAL_COUNTERS(COURIER_X);
#undef COURIER_X
constexpr std::uint32_t fnv1a(const char *s, std::uint32_t h) {
    for (; *s != '\0'; ++s)
        h = (h ^ static_cast<unsigned char>(*s)) * 16777619u;
    return h;
}
inline constexpr std::uint32_t stats_version = fnv1a(stats_counter_names, 2166136261u ^ stats_structure_version);

/* What the worker made of a runtime. */
enum class RuntimeState : std::uint32_t { unknown = 0, loaded = 1, failed = 2 };
inline constexpr std::size_t runtime_name_bytes = 64;

struct RuntimeInfo {
    char name[runtime_name_bytes];  // written by the host before any child exists
    std::atomic<std::uint32_t> state;  // RuntimeState, written by the worker
};

struct alignas(64) StatsHeader {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t slots;
    std::uint64_t segment_size;
    /* Maintained by the host: 1 while the serving side runs. */
    std::atomic<std::uint32_t> server_up;
    std::atomic<std::uint32_t> slots_in_use;
    std::atomic<std::uint64_t> server_epoch;
    std::atomic<std::uint64_t> server_pid;
    /* steady_clock (CLOCK_MONOTONIC, one clock for every process) in ns,
     * written by the serving process's main loop at least every heartbeat_interval. */
    std::atomic<std::uint64_t> heartbeat_ns;
    std::uint32_t runtimes;
    RuntimeInfo runtime[max_runtimes];
};

struct alignas(64) GlobalCounters {
    std::atomic<std::uint64_t> value[global_counter_count];
};

/* How often the serving process proves it is alive; a reader calls it hung after three missed. */
inline constexpr std::chrono::seconds heartbeat_interval{5};
inline constexpr std::chrono::seconds heartbeat_stale = 3 * heartbeat_interval;

/* Single-writer increment (see above). A null pointer counts nothing. */
inline void bump(SideCounters *c, Counter which, std::uint64_t n = 1) {
    if (c == nullptr)
        return;
    auto &v = c->value[static_cast<std::size_t>(which)];
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

/*
 * The POSIX shared memory name of the stats segment of the cluster that
 * listens on `port`, and where Linux keeps it. The extension creates it,
 * the exporter and the scripts find it by these.
 */
std::string stats_segment_name(int port);
std::string stats_segment_path(int port);

/*
 * A view of a stats segment in this process's address space. The slot
 * count is read once, when the view is made and checked against the
 * mapped size: every later read is bounded by it, whatever the segment
 * holds by then.
 */
class StatsView {
public:
    StatsView() = default;
    /* Formats a fresh segment of stats_segment_size(slots) bytes. */
    static StatsView create(void *base, std::size_t size, std::uint32_t slots);
    /* Names the runtimes (before sharing); at most max_runtimes, names cut to fit. */
    void set_runtimes(const std::vector<std::string> &names) const;
    void set_runtime_state(std::uint32_t runtime, RuntimeState state) const;
    /* Validates an existing segment; Status::corrupt if it does not fit. */
    static Status attach(void *base, std::size_t size, StatsView *out);

    bool valid() const { return header_ != nullptr; }
    StatsHeader &header() const { return *header_; }
    std::uint32_t slots() const { return slot_count_; }
    SlotStats *slot(std::uint32_t index) const { return index < slot_count_ ? &slots_[index] : nullptr; }
    /* A slot's counters for one side; null without stats. */
    SideCounters *client_counters(std::uint32_t index) const {
        SlotStats *s = slot(index);
        return s != nullptr ? &s->client : nullptr;
    }
    SideCounters *server_counters(std::uint32_t index) const {
        SlotStats *s = slot(index);
        return s != nullptr ? &s->server : nullptr;
    }
    void add(GlobalCounter which, std::uint64_t n = 1) const {
        globals_->value[static_cast<std::size_t>(which)].fetch_add(n, std::memory_order_relaxed);
    }
    void record_call(std::uint32_t slot, std::uint32_t runtime, std::uint64_t latency_ns, bool failed) const;

private:
    StatsHeader *header_ = nullptr;
    GlobalCounters *globals_ = nullptr;
    SlotStats *slots_ = nullptr;
    std::uint32_t slot_count_ = 0;
};

/* Totals summed over slots, as the exporter and courier.stats() show them. */
struct StatsSnapshot {
    std::uint32_t slots = 0;
    bool server_up = false;
    std::uint64_t slots_in_use = 0;
    std::uint64_t server_epoch = 0;
    std::uint64_t server_pid = 0;
    std::uint64_t heartbeat_ns = 0;
    std::array<std::uint64_t, side_counter_count> client{};
    std::array<std::uint64_t, side_counter_count> server{};
    std::array<std::uint64_t, global_counter_count> global{};
    std::uint64_t calls = 0;
    std::uint64_t call_errors = 0;
    struct Runtime {
        std::string name;
        RuntimeState state = RuntimeState::unknown;
        std::uint64_t calls = 0;
        std::uint64_t call_errors = 0;
    };
    std::vector<Runtime> runtimes;
    std::uint64_t latency_sum_ns = 0;
    std::array<std::uint64_t, latency_buckets> latency_bucket{};  // not cumulative
};

StatsSnapshot read_stats(const StatsView &view);

/* Name/value/help rows, the shape of courier.stats(). */
struct StatRow {
    std::string name;
    std::uint64_t value;
    std::string help;
};
std::vector<StatRow> stat_rows(const StatsSnapshot &snapshot);

}  // namespace courier::ipc
