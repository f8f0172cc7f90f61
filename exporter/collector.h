/*
 * collector.h — courier's counters as Prometheus metric families.
 *
 * The exporter reads the stats segment that courier's postmaster creates,
 * /dev/shm/courier-<port>, read-only, and needs no database connection: it
 * keeps working when max_connections is exhausted or the worker is down.
 * The segment is mapped afresh on every scrape, so a restarted PostgreSQL
 * (a new segment) is picked up and a stopped one reports courier_up 0
 * instead of failing the scrape.
 */
#pragma once

#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace courier::exporter {

/* The stats segment of the cluster listening on `port`. */
std::string segment_name(int port);

class StatsCollector : public prometheus::Collectable {
public:
    explicit StatsCollector(std::string segment) : segment_(std::move(segment)) {}
    std::vector<prometheus::MetricFamily> Collect() const override;

private:
    std::string segment_;
};

}  // namespace courier::exporter
