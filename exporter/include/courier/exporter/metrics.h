/*
 * metrics.h — the metric families courier_exporter serves, from one
 * snapshot of the stats segment.
 *
 * Counters come from ipc/stats.h's table (name, metric, how published,
 * help), so a counter added there is served without an edit here; what is
 * written by hand is only what the table cannot say: the worker's health,
 * the slots, the calls and their latency histogram.
 *
 * Pure functions: no clock, no /proc, no segment. collector.cc supplies
 * those, and metrics_markdown() renders the same families as
 * exporter/METRICS.md, so the documentation cannot drift from the code.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "courier/ipc/stats.h"

namespace courier::exporter {

/* What the collector learned about the worker besides the segment. */
struct WorkerHealth {
    double heartbeat_age_s = 0;  // since the worker's main loop last wrote its heartbeat
    bool stopped = false;        // SIGSTOPped or a zombie
    std::uint64_t switched_out = 0;  // its threads' nonvoluntary context switches (ThreadSwitchCounter)
};

/* Every family of one scrape; `snapshot` is null when the segment could not be read. */
std::vector<prometheus::MetricFamily> metric_families(const ipc::StatsSnapshot *snapshot, const WorkerHealth &worker,
                                                      double scrape_seconds);

/* A Markdown table of every family served (name, type, labels, help): exporter/METRICS.md. */
std::string metrics_markdown();

}  // namespace courier::exporter
