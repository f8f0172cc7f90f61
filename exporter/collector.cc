#include "collector.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include "courier/ipc/stats.h"

namespace courier::exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(const std::string &name, const std::string &help, MetricType type) {
    MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    return f;
}

void add(MetricFamily &f, double value, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter)
        m.counter.value = value;
    else
        m.gauge.value = value;
    f.metric.push_back(std::move(m));
}

/* A mapping of the segment for one scrape, if it is a file of the expected owner. */
class Mapping {
public:
    Mapping(const std::string &name, uid_t owner) {
        const int fd = shm_open(name.c_str(), O_RDONLY, 0);
        if (fd < 0) {
            why_ = "no statistics segment " + name + " (is PostgreSQL with courier running?)";
            return;
        }
        struct stat st {};
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
            why_ = "statistics segment " + name + " is not a regular file";
        } else if (st.st_uid != owner) {
            why_ = "refusing statistics segment " + name + ": it belongs to uid " + std::to_string(st.st_uid) +
                   ", not to uid " + std::to_string(owner) + " (the server's user); run the exporter as that user " +
                   "or give --courier.data-directory";
        } else {
            size_ = static_cast<std::size_t>(st.st_size);
            void *p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
            base_ = p == MAP_FAILED ? nullptr : p;
        }
        close(fd);
    }
    ~Mapping() {
        if (base_ != nullptr)
            munmap(base_, size_);
    }
    Mapping(const Mapping &) = delete;
    Mapping &operator=(const Mapping &) = delete;
    /* The view only reads: the mapping is PROT_READ, every read bounded by the mapped size. */
    bool view(ipc::StatsView *out) {
        if (base_ != nullptr && ipc::StatsView::attach(base_, size_, out) == ipc::Status::ok)
            return true;
        if (base_ != nullptr)
            why_ = "statistics segment is not one of this courier version (or is damaged)";
        return false;
    }
    const std::string &why() const { return why_; }

private:
    void *base_ = nullptr;
    std::size_t size_ = 0;
    std::string why_;
};

std::vector<ClientMetric::Label> side(const char *s) { return {{"side", s}}; }
std::vector<ClientMetric::Label> direction(const char *d) { return {{"direction", d}}; }

std::uint64_t global(const ipc::StatsSnapshot &s, ipc::GlobalCounter c) {
    return s.global[static_cast<std::size_t>(c)];
}

/* Seconds since the worker's heartbeat; a large number when it never wrote one. */
double heartbeat_age(const ipc::StatsSnapshot &s) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch();
    const double now_s = std::chrono::duration<double>(now).count();
    return s.heartbeat_ns == 0 ? now_s : now_s - static_cast<double>(s.heartbeat_ns) / 1e9;
}

/* A worker process that is stopped (SIGSTOP, a debugger) or a zombie serves no call. */
bool stopped(std::uint64_t pid) {
    if (pid == 0)
        return false;
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(f, stat);
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size())
        return false;  // gone, or not readable: the heartbeat decides
    const char state = stat[paren + 2];
    return state == 'T' || state == 't' || state == 'Z';
}

}  // namespace

void StatsCollector::note(const std::string &why) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (why != last_note_ && !why.empty())
        std::cerr << "courier_exporter: " << why << "\n";
    last_note_ = why;
}

std::vector<MetricFamily> StatsCollector::Collect() const {
    const auto started = std::chrono::steady_clock::now();
    std::vector<MetricFamily> out;
    Mapping mapping(segment_(), owner_);
    ipc::StatsView view;
    const bool up = mapping.view(&view);
    note(mapping.why());

    out.push_back(family("courier_up", "1 when courier's statistics segment (PostgreSQL with courier) is readable",
                         MetricType::Gauge));
    add(out.back(), up ? 1 : 0);
    if (up) {
        const ipc::StatsSnapshot s = ipc::read_stats(view);
        auto gauge = [&](const char *name, const char *help, double v) {
            out.push_back(family(name, help, MetricType::Gauge));
            add(out.back(), v);
        };
        auto counter = [&](const char *name, const char *help, double v) {
            out.push_back(family(name, help, MetricType::Counter));
            add(out.back(), v);
        };
        auto per_side = [&](const char *name, const char *help, ipc::Counter c) {
            out.push_back(family(name, help, MetricType::Counter));
            add(out.back(), static_cast<double>(s.client[static_cast<std::size_t>(c)]), side("backend"));
            add(out.back(), static_cast<double>(s.server[static_cast<std::size_t>(c)]), side("worker"));
        };
        const double age = heartbeat_age(s);
        gauge("courier_worker_running", "1 while courier's background worker process runs", s.server_up ? 1 : 0);
        gauge("courier_worker_up", "1 while courier's background worker runs and is not stopped or hung",
              s.server_up && age < ipc::heartbeat_stale.count() && !stopped(s.server_pid) ? 1 : 0);
        gauge("courier_worker_heartbeat_age_seconds",
              "Seconds since the worker's main loop last wrote its heartbeat (every 5 s while it runs)", age);
        gauge("courier_worker_epoch", "Epoch (generation) of the running courier worker", static_cast<double>(s.server_epoch));
        counter("courier_worker_restarts_total", "Times the courier worker started again",
                static_cast<double>(global(s, ipc::GlobalCounter::server_restarts)));
        gauge("courier_slots", "Slots configured (courier.slots)", s.slots);
        gauge("courier_slots_in_use", "Slots leased by a session or finishing a call", static_cast<double>(s.slots_in_use));
        per_side("courier_wakeups_sent_total", "Wakeups sent to a peer that was sleeping", ipc::Counter::wakeups_sent);
        per_side("courier_wakeups_elided_total", "Wakeups skipped because the peer was still spinning",
                 ipc::Counter::wakeups_elided);
        per_side("courier_spurious_wakeups_total", "Wakeups after which there was nothing to do",
                 ipc::Counter::spurious_wakeups);
        per_side("courier_spin_hits_total", "Waits that ended while spinning", ipc::Counter::spin_hits);
        per_side("courier_sleeps_total", "Waits that slept (latch or futex) after spinning", ipc::Counter::sleeps);
        per_side("courier_ring_full_stalls_total", "Times a sender found its ring full", ipc::Counter::ring_full_stalls);
        out.push_back(family("courier_messages_total", "Messages sent, by direction", MetricType::Counter));
        add(out.back(), static_cast<double>(s.client[static_cast<std::size_t>(ipc::Counter::messages_sent)]), direction("to_worker"));
        add(out.back(), static_cast<double>(s.server[static_cast<std::size_t>(ipc::Counter::messages_sent)]), direction("to_backend"));
        out.push_back(family("courier_bytes_total", "Payload bytes sent, by direction", MetricType::Counter));
        add(out.back(), static_cast<double>(s.client[static_cast<std::size_t>(ipc::Counter::bytes_sent)]), direction("to_worker"));
        add(out.back(), static_cast<double>(s.server[static_cast<std::size_t>(ipc::Counter::bytes_sent)]), direction("to_backend"));
        counter("courier_slot_leases_total", "Slots leased from the free list", static_cast<double>(global(s, ipc::GlobalCounter::leases)));
        counter("courier_slot_releases_total", "Slots returned to the free list",
                static_cast<double>(global(s, ipc::GlobalCounter::releases)));
        counter("courier_freelist_cas_retries_total", "Compare-and-swap retries on the free list (contention)",
                static_cast<double>(global(s, ipc::GlobalCounter::freelist_cas_retries)));
        counter("courier_slot_exhaustion_total", "Lease attempts that found every slot taken",
                static_cast<double>(global(s, ipc::GlobalCounter::freelist_empty)));
        counter("courier_slot_wait_seconds_total", "Time sessions spent waiting for a free slot",
                static_cast<double>(global(s, ipc::GlobalCounter::slot_wait_ns)) / 1e9);
        counter("courier_slot_wait_timeouts_total", "Calls that failed after courier.slot_wait_timeout",
                static_cast<double>(global(s, ipc::GlobalCounter::slot_wait_timeouts)));
        counter("courier_call_abandons_total", "Calls abandoned by their session (cancel, timeout, error, exit)",
                static_cast<double>(global(s, ipc::GlobalCounter::abandons)));
        counter("courier_late_responses_dropped_total", "Responses dropped because the session had gone",
                static_cast<double>(global(s, ipc::GlobalCounter::late_responses_dropped)));
        counter("courier_calls_dropped_unstarted_total", "Calls given up by their session while queued, never run",
                static_cast<double>(global(s, ipc::GlobalCounter::calls_dropped_unstarted)));
        counter("courier_corrupt_frames_total", "Frames or indexes rejected as corrupt",
                static_cast<double>(global(s, ipc::GlobalCounter::corrupt_frames)));
        counter("courier_messages_too_large_total", "Messages refused for exceeding courier.max_message_size",
                static_cast<double>(global(s, ipc::GlobalCounter::too_large)));
        counter("courier_calls_total", "Calls made", static_cast<double>(s.calls));
        counter("courier_call_errors_total", "Calls that ended in an error", static_cast<double>(s.call_errors));
        auto per_runtime = [&](const char *name, const char *help, MetricType type, auto value) {
            out.push_back(family(name, help, type));
            for (const auto &rt : s.runtimes)
                add(out.back(), static_cast<double>(value(rt)), {{"runtime", rt.name}});
        };
        using Runtime = ipc::StatsSnapshot::Runtime;
        per_runtime("courier_runtime_up", "1 when the worker loaded the runtime (courier.runtimes)", MetricType::Gauge,
                    [](const Runtime &rt) { return rt.state == ipc::RuntimeState::loaded ? 1 : 0; });
        per_runtime("courier_runtime_calls_total", "Calls made, by runtime", MetricType::Counter,
                    [](const Runtime &rt) { return rt.calls; });
        per_runtime("courier_runtime_call_errors_total", "Calls that ended in an error, by runtime",
                    MetricType::Counter, [](const Runtime &rt) { return rt.call_errors; });

        MetricFamily h = family("courier_call_duration_seconds", "Duration of calls as the session saw them",
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
        out.push_back(std::move(h));
    } else {
        out.push_back(family("courier_worker_up", "1 while courier's background worker runs and is not stopped or hung",
                             MetricType::Gauge));
        add(out.back(), 0);
    }
    out.push_back(family("courier_exporter_scrape_duration_seconds", "Time this scrape took to read courier's statistics",
                         MetricType::Gauge));
    add(out.back(), std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    return out;
}

}  // namespace courier::exporter
