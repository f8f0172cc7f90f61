/*
 * layout.h — the single source of every size and offset in courier's
 * shared memory.
 *
 * The PostgreSQL extension asks for this many bytes in shmem_request_hook,
 * the config generator prints it, the exporter uses it to validate the stats
 * segment, and the tests map it over Boost.Interprocess segments. Nothing
 * else may re-derive a size: a second formula would drift from this one.
 *
 * The control region holds, in order (each part 64-byte aligned so that no
 * two writers share a cache line):
 *
 *   RegionHeader        magic, version, parameters, free-list head,
 *                       server epoch, the cancel watcher's waiter
 *   dispatch controls   DispatchControl per runtime (its idle threads)
 *   free-list links     one uint32 per slot (next index on the stack)
 *   bells               one per runtime (calls waiting for it), then the
 *                       cancel bell (calls abandoned mid-call): a word
 *                       that says a thread spins on it, then one bit per
 *                       slot, in 64-bit words
 *   slot controls       SlotControl per slot (state, waiters, ring cursors)
 *   ring data           per slot: ring_size bytes to the server, then
 *                       ring_size bytes to the client
 *
 * The stats segment is separate (it outlives and is read without the
 * region) and is laid out here too:
 *
 *   StatsHeader         magic, version, slots, runtimes' names
 *   GlobalCounters      server-wide counters
 *   SlotStats           per slot, each on lines of its own
 *
 * A host that maps region and stats in one segment (ipc::Segment) puts the
 * stats after the region and its own bytes after the stats, at the offsets
 * RegionLayout gives.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <cstddef>
#include <cstdint>

#include "courier/ipc/status.h"

namespace courier::ipc {

inline constexpr std::size_t cache_line = 64;

/* Rounds n up to a whole number of cache lines. */
constexpr std::size_t cache_align(std::size_t n) { return (n + cache_line - 1) / cache_line * cache_line; }

/* Bounds enforced by compute_layout(); the extension's GUCs use the same. */
inline constexpr std::uint32_t min_slots = 1;
inline constexpr std::uint32_t max_slots = 65536;
inline constexpr std::uint64_t min_ring_size = 4096;
inline constexpr std::uint64_t max_ring_size = 1ull << 30;
inline constexpr std::uint64_t min_max_message_size = 1;
/*
 * A message must fit in one PostgreSQL allocation as a bytea: the header
 * and the payload below MaxAllocSize (1 GB - 1), in whole kB since the
 * setting is in kB. So 1 GB - 1 kB, not the 1 GB a bytea can almost hold.
 */
inline constexpr std::uint64_t max_max_message_size = (1ull << 30) - 1024;
/* A call's function name, in bytes (the runtime's prefix excluded). */
inline constexpr std::size_t max_function_name = 255;
/* Bitmaps laid out like doorbells after the runtimes' own: the cancel bell, then the owed wakes (region.h). */
inline constexpr std::uint32_t extra_bells = 2;

/* Runtimes one worker serves; each has its own doorbell and idle threads. */
inline constexpr std::uint32_t min_runtimes = 1;
inline constexpr std::uint32_t max_runtimes = 8;
/* Pool threads per callback-mode runtime (courier.worker_threads; courier-config's worker_threads). */
inline constexpr int max_worker_threads = 1024;

struct RegionParams {
    std::uint32_t slots = 0;
    std::uint64_t ring_size = 0;         // bytes per direction, power of two
    std::uint64_t max_message_size = 0;  // bytes per message, either direction
    std::uint32_t runtimes = 1;          // doorbells, one per runtime
};

struct RegionLayout {
    RegionParams params;
    std::size_t header_offset = 0;
    std::size_t dispatch_offset = 0;  // DispatchControl[runtimes]
    std::size_t freelist_offset = 0;
    std::size_t bells_offset = 0;     // runtimes + extra_bells bitmaps: the cancel bell, then the owed wakes
    std::size_t bell_words = 0;       // 64-bit words per bitmap (after the spinner word)
    std::size_t bell_stride = 0;      // bytes from one bell to the next
    std::size_t slots_offset = 0;
    std::size_t slot_stride = 0;
    std::size_t rings_offset = 0;
    std::size_t ring_stride = 0;  // bytes of ring data per slot (both rings)
    std::size_t region_size = 0;  // the control region, all of the above
    /* What a host must allocate: region_size plus slack to align the base
     * to a cache line where the allocator only guarantees 8 bytes. */
    std::size_t request_size = 0;
    std::size_t stats_size = 0;   // the separate stats segment
    /* Where a host that maps both in one segment puts the stats, and where
     * its own bytes may start (ipc::Segment). */
    std::size_t bundled_stats_offset = 0;
    std::size_t bundled_size = 0;
};

/* Offsets inside the stats segment for a region of `slots` slots. */
struct StatsLayout {
    std::size_t globals_offset = 0;  // GlobalCounters
    std::size_t slots_offset = 0;    // SlotStats[slots]
    std::size_t size = 0;
};

/*
 * Validates params and fills *out. Returns bad_argument (and leaves *out
 * untouched) when a parameter is outside its bounds or the ring size is not
 * a power of two; describe_layout_error() says which and why.
 */
Status compute_layout(const RegionParams &params, RegionLayout *out);
const char *describe_layout_error(const RegionParams &params);

StatsLayout stats_layout(std::uint32_t slots);
/* stats_layout(slots).size, for callers that only need one number. */
std::size_t stats_segment_size(std::uint32_t slots);

}  // namespace courier::ipc
