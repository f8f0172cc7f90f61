/*
 * collector.h — courier's counters as Prometheus metric families.
 *
 * The exporter reads the stats segment that courier's postmaster creates,
 * /dev/shm/courier-<port> (ipc::stats_segment_name), read-only, and needs
 * no database connection: it
 * keeps working when max_connections is exhausted or the worker is down.
 * The segment is named and mapped afresh on every scrape, so a restarted
 * PostgreSQL (a new segment, maybe a new port) is picked up and a stopped
 * one reports courier_up 0 instead of failing the scrape.
 */
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace courier::exporter {

/*
 * Times a process's threads lost their CPU while they could still run (the
 * sum of each thread's nonvoluntary_ctxt_switches in /proc). The worker's:
 * with the worker among the sessions, nearly all are the sessions it wakes
 * taking its CPU (bench/README.md, "Who loses the CPU in the crowded
 * rows"), the sign that courier.worker_cpus would pay. A thread's last
 * count is kept after it exits (runtimes start and end threads), so the
 * sum never goes down while the process lives, and what is kept of ended
 * threads is one number; another pid starts it over.
 */
class ThreadSwitchCounter {
public:
    std::uint64_t read(std::uint64_t pid);

private:
    std::uint64_t pid_ = 0;
    std::map<std::uint64_t, std::uint64_t> live_;  // per thread id, as last read
    std::uint64_t ended_ = 0;                      // the last counts of threads that have ended
};

/*
 * The segment must belong to `owner`, the server's user: a segment another
 * local user created under the same name would otherwise feed Prometheus
 * numbers of theirs. One that does not is reported as courier_up 0, and
 * why goes to stderr once.
 */
class StatsCollector : public prometheus::Collectable {
public:
    /* segment() names the segment, asked on every scrape (a cluster's port can change while it is down). */
    using SegmentName = std::function<std::string()>;
    StatsCollector(SegmentName segment, uid_t owner) : segment_(std::move(segment)), owner_(owner) {}
    StatsCollector(std::string segment, uid_t owner)
        : StatsCollector([name = std::move(segment)] { return name; }, owner) {}
    std::vector<prometheus::MetricFamily> Collect() const override;

private:
    void note(const std::string &why) const;

    SegmentName segment_;
    uid_t owner_;
    mutable std::mutex mutex_;
    mutable std::string last_note_;
    mutable ThreadSwitchCounter worker_switches_;  // under mutex_
};

}  // namespace courier::exporter
