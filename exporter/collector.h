/*
 * collector.h — courier's counters as Prometheus metric families.
 *
 * The exporter reads the stats segment that courier's postmaster creates,
 * /dev/shm/courier-<port> (ipc::stats_segment_name), read-only, and needs
 * no database connection: it
 * keeps working when max_connections is exhausted or the worker is down.
 * The segment is mapped afresh on every scrape, so a restarted PostgreSQL
 * (a new segment) is picked up and a stopped one reports courier_up 0
 * instead of failing the scrape.
 */
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace courier::exporter {

/*
 * The segment must belong to `owner`, the server's user: a segment another
 * local user created under the same name would otherwise feed Prometheus
 * numbers of theirs. One that does not is reported as courier_up 0, and
 * why goes to stderr once.
 */
class StatsCollector : public prometheus::Collectable {
public:
    StatsCollector(std::string segment, uid_t owner) : segment_(std::move(segment)), owner_(owner) {}
    std::vector<prometheus::MetricFamily> Collect() const override;

private:
    void note(const std::string &why) const;

    std::string segment_;
    uid_t owner_;
    mutable std::mutex mutex_;
    mutable std::string last_note_;
};

}  // namespace courier::exporter
