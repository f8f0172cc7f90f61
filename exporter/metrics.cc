/*
 * metrics.cc — a stats snapshot as Prometheus metric families.
 *
 * Base units throughout (seconds, bytes), as Prometheus' naming rules ask;
 * counters end in _total. Series that exist per side or per runtime carry a
 * label; the sides are named for the processes (backend, worker), and what
 * they send for the direction it goes (to_worker, to_backend).
 */
#include "courier/exporter/metrics.h"

#include <limits>
#include <set>
#include <sstream>

namespace courier::exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

MetricFamily &family(std::vector<MetricFamily> &out, const std::string &name, const std::string &help,
                     MetricType type) {
    MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    out.push_back(std::move(f));
    return out.back();
}

void add(MetricFamily &f, double value, Labels labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter)
        m.counter.value = value;
    else
        m.gauge.value = value;
    f.metric.push_back(std::move(m));
}

void gauge(std::vector<MetricFamily> &out, const char *name, const char *help, double value) {
    add(family(out, name, help, MetricType::Gauge), value);
}

void worker_families(std::vector<MetricFamily> &out, const ipc::StatsSnapshot &s, const WorkerHealth &w) {
    gauge(out, "courier_worker_running", "1 while courier's background worker process runs", s.server_up ? 1 : 0);
    gauge(out, "courier_worker_up", "1 while courier's background worker runs and is not stopped or hung",
          s.server_up && w.heartbeat_age_s < ipc::heartbeat_stale.count() && !w.stopped ? 1 : 0);
    gauge(out, "courier_worker_heartbeat_age_seconds",
          "Seconds since the worker's main loop last wrote its heartbeat (every 5 s while it runs)",
          w.heartbeat_age_s);
    gauge(out, "courier_worker_epoch", "Epoch (generation) of the running courier worker",
          static_cast<double>(s.server_epoch));
    add(family(out, "courier_worker_switched_out_total",
               "Times the worker's threads lost their CPU while they could run (from /proc; starts over with "
               "each worker process). Mostly to sessions they woke, which courier.worker_cpus prevents",
               MetricType::Counter),
        static_cast<double>(w.switched_out));
    gauge(out, "courier_slots", "Slots configured (courier.slots)", s.slots);
    gauge(out, "courier_slots_in_use", "Slots leased by a session or finishing a call",
          static_cast<double>(s.slots_in_use));
}

/* Every counter of ipc/stats.h's table, published as its row says. */
void counter_families(std::vector<MetricFamily> &out, const ipc::StatsSnapshot &s) {
    for (std::size_t i = 0; i < ipc::side_counter_count; ++i) {
        const ipc::CounterInfo &c = ipc::counter_info(static_cast<ipc::Counter>(i));
        const bool by_side = c.as == ipc::Published::by_side;
        MetricFamily &f = family(out, c.metric, c.help, MetricType::Counter);
        add(f, static_cast<double>(s.client[i]), {by_side ? ClientMetric::Label{"side", "backend"}
                                                          : ClientMetric::Label{"direction", "to_worker"}});
        add(f, static_cast<double>(s.server[i]), {by_side ? ClientMetric::Label{"side", "worker"}
                                                          : ClientMetric::Label{"direction", "to_backend"}});
    }
    for (std::size_t i = 0; i < ipc::global_counter_count; ++i) {
        const ipc::CounterInfo &c = ipc::counter_info(static_cast<ipc::GlobalCounter>(i));
        const double scale = c.as == ipc::Published::in_seconds ? 1e-9 : 1;
        add(family(out, c.metric, c.help, MetricType::Counter), static_cast<double>(s.global[i]) * scale);
    }
}

void latency_histogram(std::vector<MetricFamily> &out, const ipc::StatsSnapshot &s) {
    MetricFamily &h = family(out, "courier_call_duration_seconds", "Duration of calls as the session saw them",
                             MetricType::Histogram);
    ClientMetric m;
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < ipc::latency_buckets; ++b) {
        cumulative += s.latency_bucket[b];
        ClientMetric::Bucket bucket;
        bucket.cumulative_count = cumulative;
        bucket.upper_bound = b < ipc::latency_bounds_ns.size() ? static_cast<double>(ipc::latency_bounds_ns[b]) / 1e9
                                                               : std::numeric_limits<double>::infinity();
        m.histogram.bucket.push_back(bucket);
    }
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = static_cast<double>(s.latency_sum_ns) / 1e9;
    h.metric.push_back(std::move(m));
}

void call_families(std::vector<MetricFamily> &out, const ipc::StatsSnapshot &s) {
    add(family(out, "courier_calls_total", "Calls made", MetricType::Counter), static_cast<double>(s.calls));
    add(family(out, "courier_call_errors_total", "Calls that ended in an error", MetricType::Counter),
        static_cast<double>(s.call_errors));
    using Runtime = ipc::StatsSnapshot::Runtime;
    auto per_runtime = [&](const char *name, const char *help, MetricType type, auto value) {
        MetricFamily &f = family(out, name, help, type);
        for (const Runtime &rt : s.runtimes)
            add(f, static_cast<double>(value(rt)), {{"runtime", rt.name}});
    };
    per_runtime("courier_runtime_up", "1 when the worker loaded the runtime (courier.runtimes)", MetricType::Gauge,
                [](const Runtime &rt) { return rt.state == ipc::RuntimeState::loaded ? 1 : 0; });
    per_runtime("courier_runtime_calls_total", "Calls made, by runtime", MetricType::Counter,
                [](const Runtime &rt) { return rt.calls; });
    per_runtime("courier_runtime_call_errors_total", "Calls that ended in an error, by runtime", MetricType::Counter,
                [](const Runtime &rt) { return rt.call_errors; });
    latency_histogram(out, s);
}

const char *type_name(MetricType t) {
    switch (t) {
    case MetricType::Counter:
        return "counter";
    case MetricType::Gauge:
        return "gauge";
    case MetricType::Histogram:
        return "histogram";
    default:
        return "untyped";
    }
}

}  // namespace

std::vector<MetricFamily> metric_families(const ipc::StatsSnapshot *snapshot, const WorkerHealth &worker,
                                          double scrape_seconds) {
    std::vector<MetricFamily> out;
    gauge(out, "courier_up", "1 when courier's statistics segment (PostgreSQL with courier) is readable",
          snapshot != nullptr ? 1 : 0);
    if (snapshot != nullptr) {
        worker_families(out, *snapshot, worker);
        counter_families(out, *snapshot);
        call_families(out, *snapshot);
    } else {
        gauge(out, "courier_worker_up", "1 while courier's background worker runs and is not stopped or hung", 0);
    }
    gauge(out, "courier_exporter_scrape_duration_seconds", "Time this scrape took to read courier's statistics",
          scrape_seconds);
    return out;
}

std::string metrics_markdown() {
    ipc::StatsSnapshot s;
    s.runtimes.resize(1);
    std::ostringstream md;
    md << "# courier_exporter's metrics\n\n"
          "Generated by `courier_exporter --metrics-markdown` from the exporter's own code\n"
          "(counters: the table in `ipc/include/courier/ipc/stats.h`); a test fails when this file\n"
          "differs. The same counters are rows of `courier.stats()` in SQL.\n\n"
          "| metric | type | labels | help |\n|---|---|---|---|\n";
    for (const MetricFamily &f : metric_families(&s, WorkerHealth{}, 0)) {
        std::set<std::string> labels;
        for (const ClientMetric &m : f.metric)
            for (const ClientMetric::Label &l : m.label)
                labels.insert(l.name);
        if (f.type == MetricType::Histogram)
            labels.insert("le");
        std::string label_list;
        for (const std::string &l : labels)
            label_list += (label_list.empty() ? "" : ", ") + ("`" + l + "`");
        md << "| `" << f.name << "` | " << type_name(f.type) << " | " << label_list << " | " << f.help << " |\n";
    }
    return md.str();
}

}  // namespace courier::exporter
