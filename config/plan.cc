/*
 * plan.cc — reading the workload and sizing courier for it.
 *
 * Rules (each is also written next to its setting in the snippet):
 *   slots        expected sessions + 10 % headroom (at least 2 more), never
 *                above max_connections: a session holds one slot.
 *   ring_size    the smallest power of two, at least 4 kB, that carries a
 *                typical message in one frame (a frame is at most a quarter
 *                of the ring); halved while the region does not fit the
 *                memory budget. Larger messages stream through the ring.
 *   max_message_size  the largest message, rounded up to a kB.
 *   worker_threads    the CPUs this process may use (auto), the worker's CPUs
 *                when worker_cpus is given, or as given.
 *   worker_cpus  as given, checked against the CPUs this process may use
 *                (install and check run on the server's machine); none
 *                leaves the placement to the kernel.
 *   spin_us      latency 200, balanced 50, efficiency 0.
 */
#include "plan.h"


#include <algorithm>
#include <cmath>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "courier/ipc/layout.h"
#include "courier/ipc/ring.h"
#include "courier/ipc/wait.h"
#include "courier/worker/placement.h"

namespace courier::config {
namespace {

const std::vector<std::string> known_fields = {
    "postgres_version", "max_connections", "sessions", "typical_message_size",
    "largest_message_size", "memory_budget", "worker_threads", "worker_cpus", "latency_policy"};

std::size_t edit_distance(const std::string &a, const std::string &b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

[[noreturn]] void fail(const std::string &file, const YAML::Mark &mark, const std::string &field,
                       const std::string &what) {
    std::ostringstream os;
    os << file << ":" << mark.line + 1 << ":" << mark.column + 1 << ": " << field << ": " << what;
    throw InputError(os.str());
}

std::string scalar(const std::string &file, const YAML::Node &n, const std::string &field,
                   const std::string &expected) {
    if (!n.IsScalar())
        fail(file, n.Mark(), field, "expected " + expected + ", got a " + (n.IsMap() ? "mapping" : "list"));
    return n.Scalar();
}

std::int64_t integer(const std::string &file, const YAML::Node &n, const std::string &field, std::int64_t lo,
                     std::int64_t hi) {
    const std::string text = scalar(file, n, field, "an integer");
    std::size_t used = 0;
    long long v = 0;
    try {
        v = std::stoll(text, &used);
    } catch (const std::exception &) {
        used = 0;
    }
    if (used != text.size() || text.empty())
        fail(file, n.Mark(), field, "expected an integer, got \"" + text + "\"");
    if (v < lo || v > hi)
        fail(file, n.Mark(), field,
             "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " + text);
    return v;
}

std::uint64_t size_field(const std::string &file, const YAML::Node &n, const std::string &field, std::uint64_t lo,
                         std::uint64_t hi) {
    const std::string text = scalar(file, n, field, "a size");
    const auto v = parse_size(text);
    if (!v)
        fail(file, n.Mark(), field,
             "expected a size such as 64kB, 16MB or 1GB (PostgreSQL's units: B, kB, MB, GB, TB), got \"" + text + "\"");
    if (*v < lo || *v > hi)
        fail(file, n.Mark(), field, "expected a size from " + format_size(lo) + " to " + format_size(hi) + ", got " + text);
    return *v;
}

std::uint64_t next_pow2(std::uint64_t v) {
    std::uint64_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

ipc::RegionLayout layout_or_throw(int slots, std::uint64_t ring, std::uint64_t max_message) {
    ipc::RegionLayout l;
    const ipc::RegionParams p{static_cast<std::uint32_t>(slots), ring, max_message};
    if (ipc::compute_layout(p, &l) != ipc::Status::ok)
        throw InputError(std::string("cannot size courier: ") + ipc::describe_layout_error(p));
    return l;
}

std::string join(const std::vector<std::string> &v, const std::string &sep) {
    std::string out;
    for (const auto &s : v)
        out += (out.empty() ? "" : sep) + s;
    return out;
}

}  // namespace

Workload load_workload_unchecked(const std::string &text, const std::string &file);

std::optional<std::uint64_t> parse_size(const std::string &text) {
    std::size_t i = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])))
        ++i;
    if (i == 0 || i > 15)
        return std::nullopt;
    const std::uint64_t n = std::stoull(text.substr(0, i));
    std::string unit = text.substr(i);
    while (!unit.empty() && unit.front() == ' ')
        unit.erase(unit.begin());
    static const std::pair<const char *, std::uint64_t> units[] = {
        {"", 1}, {"B", 1}, {"kB", 1ull << 10}, {"MB", 1ull << 20}, {"GB", 1ull << 30}, {"TB", 1ull << 40}};
    for (const auto &[name, mult] : units)
        if (unit == name) {
            if (n > (~0ull) / mult)
                return std::nullopt;
            return n * mult;
        }
    return std::nullopt;
}

std::string format_size(std::uint64_t bytes) {
    static const char *names[] = {"TB", "GB", "MB", "kB"};
    static const std::uint64_t mults[] = {1ull << 40, 1ull << 30, 1ull << 20, 1ull << 10};
    for (int i = 0; i < 4; ++i)
        if (bytes >= mults[i] && bytes % mults[i] == 0)
            return std::to_string(bytes / mults[i]) + names[i];
    return std::to_string(bytes) + "B";
}

std::string human_bytes(std::uint64_t bytes) {
    std::ostringstream os;
    os.precision(1);
    os << std::fixed;
    if (bytes >= (1ull << 30))
        os << static_cast<double>(bytes) / (1ull << 30) << " GB";
    else if (bytes >= (1ull << 20))
        os << static_cast<double>(bytes) / (1ull << 20) << " MB";
    else
        os << static_cast<double>(bytes) / (1ull << 10) << " kB";
    return os.str();
}

Workload load_workload(const std::string &text, const std::string &file) {
    try {
        return load_workload_unchecked(text, file);
    } catch (const YAML::Exception &e) {  // anything yaml-cpp throws past our checks
        fail(file, e.mark, "syntax", e.msg);
    }
}

namespace {

/* The index of `key` in known_fields; an unknown one fails, naming the nearest known field. */
std::size_t field_index(const std::string &file, const YAML::Node &name) {
    if (!name.IsScalar())
        fail(file, name.Mark(), "field name", "expected a plain name such as sessions");
    const std::string key = name.Scalar();
    const auto it = std::find(known_fields.begin(), known_fields.end(), key);
    if (it != known_fields.end())
        return static_cast<std::size_t>(it - known_fields.begin());
    std::string best;
    std::size_t best_d = 4;
    for (const auto &k : known_fields)
        if (const std::size_t d = edit_distance(key, k); d < best_d) {
            best_d = d;
            best = k;
        }
    fail(file, name.Mark(), key,
         "unknown field" + (best.empty() ? "; known fields: " + join(known_fields, ", ") : "; did you mean " + best + "?"));
}

/* sessions: a count, a percentage of max_connections ("25%") or a fraction of it ("0.25"). */
void read_sessions(const std::string &file, const YAML::Node &v, Workload *w) {
    const std::string key = "sessions";
    const std::string s = scalar(file, v, key, "a number of sessions or a percentage of max_connections");
    char *end = nullptr;
    if (!s.empty() && s.back() == '%') {
        const double pct = std::strtod(s.c_str(), &end);
        if (end != s.c_str() + s.size() - 1 || !(pct > 0) || pct > 100)
            fail(file, v.Mark(), key, "expected a percentage from 0% to 100%, got " + s);
        w->sessions_fraction = pct / 100;
    } else if (s.find('.') != std::string::npos) {
        const double f = std::strtod(s.c_str(), &end);
        if (*end != '\0' || !(f > 0) || f > 1)
            fail(file, v.Mark(), key, "expected a fraction of max_connections above 0 and at most 1, got " + s);
        w->sessions_fraction = f;
    } else {
        w->sessions = integer(file, v, key, ipc::min_slots, ipc::max_slots);
    }
}

Policy read_policy(const std::string &file, const YAML::Node &v, const std::string &key) {
    const std::string p = scalar(file, v, key, "latency, balanced or efficiency");
    if (p == "latency")
        return Policy::latency;
    if (p == "balanced")
        return Policy::balanced;
    if (p != "efficiency")
        fail(file, v.Mark(), key, "expected latency, balanced or efficiency, got \"" + p + "\"");
    return Policy::efficiency;
}


/* worker_cpus: "none", or a CPU list as Linux writes it (courier/worker/placement.h), kept canonical. */
void read_worker_cpus(const std::string &file, const YAML::Node &v, Workload *w) {
    const std::string text = scalar(file, v, "worker_cpus", "a CPU list such as \"0\" or \"0-1\", or none");
    if (text == "none") {
        w->worker_cpus.reset();
        return;
    }
    worker::CpuSet cpus;
    std::string error;
    if (!worker::parse_cpu_list(text, &cpus, &error))
        fail(file, v.Mark(), "worker_cpus", error + ", or none");
    w->worker_cpus = worker::format_cpu_list(cpus);
}

void read_field(const std::string &file, const std::string &key, const YAML::Node &v, Workload *w) {
    if (key == "postgres_version") {
        w->postgres_version = static_cast<int>(integer(file, v, key, 15, 18));
    } else if (key == "max_connections") {
        if (v.IsScalar() && v.Scalar() == "server")
            w->max_connections.reset();
        else
            w->max_connections = static_cast<int>(integer(file, v, key, 1, 262143));
    } else if (key == "sessions") {
        read_sessions(file, v, w);
    } else if (key == "typical_message_size") {
        w->typical_message = size_field(file, v, key, 1, 1ull << 30);
    } else if (key == "largest_message_size") {
        w->largest_message = size_field(file, v, key, 1, 1ull << 30);
    } else if (key == "memory_budget") {
        w->memory_budget = size_field(file, v, key, 1, 1ull << 40);
    } else if (key == "worker_threads") {
        if (v.IsScalar() && v.Scalar() == "auto")
            w->worker_threads.reset();
        else
            w->worker_threads = static_cast<int>(integer(file, v, key, 1, ipc::max_worker_threads));
    } else if (key == "worker_cpus") {
        read_worker_cpus(file, v, w);
    } else if (key == "latency_policy") {
        w->policy = read_policy(file, v, key);
    }
}

}  // namespace

Workload load_workload_unchecked(const std::string &text, const std::string &file) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::ParserException &e) {
        fail(file, e.mark, "syntax", e.msg);
    }
    if (!root.IsMap())
        fail(file, root.Mark(), "document", "expected a mapping of the fields " + join(known_fields, ", "));
    Workload w;
    w.file = file;
    std::vector<bool> have(known_fields.size());
    for (const auto &kv : root) {
        const std::size_t field = field_index(file, kv.first);
        have[field] = true;
        read_field(file, known_fields[field], kv.second, &w);
    }
    for (const char *required : {"sessions", "typical_message_size", "largest_message_size", "memory_budget"}) {
        const auto idx = std::find(known_fields.begin(), known_fields.end(), required) - known_fields.begin();
        if (!have[idx])
            fail(file, root.Mark(), required, "missing (see config/README.md for the fields)");
    }
    if (w.typical_message > w.largest_message)
        fail(file, root["typical_message_size"].Mark(), "typical_message_size",
             "expected at most largest_message_size (" + format_size(w.largest_message) + ")");
    return w;
}

namespace {

/* Chooses plan->ring_size (and the sizes that follow) for the workload within its memory budget; says why. */
std::string size_region(const Workload &w, Plan *plan) {
    const std::uint64_t frame = sizeof(ipc::FrameHeader) + w.typical_message;
    std::uint64_t ring = std::max<std::uint64_t>(ipc::min_ring_size, next_pow2(4 * frame));
    ring = std::min<std::uint64_t>(ring, ipc::max_ring_size);
    std::string ring_rule = "The smallest power of two holding a typical message in one frame (a frame is at most a "
                            "quarter of the ring); larger messages stream through it";
    ipc::RegionLayout l = layout_or_throw(plan->slots, ring, plan->max_message_size);
    while (l.request_size > w.memory_budget && ring > ipc::min_ring_size) {
        ring /= 2;
        l = layout_or_throw(plan->slots, ring, plan->max_message_size);
        ring_rule = "Halved to fit memory_budget (typical messages now take more than one frame)";
    }
    if (l.request_size > w.memory_budget) {
        const ipc::RegionLayout one = layout_or_throw(1, ipc::min_ring_size, plan->max_message_size);
        throw InputError(w.file + ": memory_budget: " + format_size(w.memory_budget) + " is too small for " +
                         (one.request_size > w.memory_budget ? std::string("even one slot")
                                                             : std::to_string(plan->slots) + " slots") +
                         "; courier needs at least " + human_bytes(l.request_size) + " (" + std::to_string(l.request_size) +
                         " bytes) with 4kB rings; raise memory_budget or lower sessions");
    }
    plan->ring_size = ring;
    plan->region_bytes = l.request_size;
    plan->stats_bytes = l.stats_size;
    return ring_rule;
}

}  // namespace

namespace {

/*
 * The number of CPUs worker_cpus names, 0 for none; an error when they
 * cannot be given on this machine, where the server would refuse them.
 */
int worker_cpus_here(const Workload &w) {
    if (!w.worker_cpus)
        return 0;
    worker::CpuSet cpus, allowed, rest;
    std::string error;
    (void)worker::parse_cpu_list(*w.worker_cpus, &cpus, &error);  // checked when read
    if (worker::allowed_cpus(&allowed, &error) && !worker::split_cpus(allowed, cpus, &rest, &error))
        throw InputError(w.file + ": worker_cpus: " + error + " (this machine; PostgreSQL would refuse to start)");
    return static_cast<int>(cpus.count());
}

/* courier.worker_threads and courier.worker_cpus: the pool is one thread per CPU of the worker's when auto. */
std::vector<Setting> worker_settings(const Workload &w) {
    const int worker_cpu_count = worker_cpus_here(w);
    const int threads = w.worker_threads ? *w.worker_threads
                        : worker_cpu_count > 0 ? worker_cpu_count
                                               : static_cast<int>(ipc::usable_cpus());
    return {
        {"courier.worker_threads", std::to_string(threads),
         w.worker_threads ? "worker_threads " + std::to_string(threads)
         : w.worker_cpus  ? "worker_threads auto, worker_cpus " + *w.worker_cpus
                          : "worker_threads auto",
         w.worker_threads ? "As given"
         : w.worker_cpus  ? "One per CPU of the worker's"
                          : "The CPUs this process may use (affinity and cgroup quota)"},
        {"courier.worker_cpus", "'" + w.worker_cpus.value_or("") + "'", "worker_cpus " + w.worker_cpus.value_or("none"),
         w.worker_cpus ? "The worker's own CPUs; the rest of the server runs on the others"
                       : "None: the kernel places the worker among the sessions"},
    };
}

}  // namespace

Plan make_plan(const Workload &w, const Existing &existing) {
    const std::optional<int> max_conn = w.max_connections ? w.max_connections : existing.max_connections;
    if (!max_conn)
        throw InputError(w.file + ": max_connections: \"server\" needs --pgdata, --cluster or --dsn to read it from");
    std::int64_t sessions = w.sessions ? *w.sessions : 0;
    std::string sessions_from = std::to_string(sessions) + " sessions";
    if (w.sessions_fraction) {
        sessions = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(*w.sessions_fraction * *max_conn)));
        sessions_from = std::to_string(sessions) + " sessions (" + std::to_string(static_cast<int>(std::lround(*w.sessions_fraction * 100))) +
                        "% of max_connections " + std::to_string(*max_conn) + ")";
    }
    if (sessions > *max_conn)
        throw InputError(w.file + ": sessions: " + std::to_string(sessions) + " is more than max_connections (" +
                         std::to_string(*max_conn) + "); a session is a connection");

    Plan plan;
    plan.slots = static_cast<int>(std::min<std::int64_t>(*max_conn, sessions + std::max<std::int64_t>(2, (sessions + 9) / 10)));
    plan.max_message_size = (w.largest_message + 1023) / 1024 * 1024;
    const std::string ring_rule = size_region(w, &plan);
    const std::uint64_t ring = plan.ring_size;

    const std::vector<Setting> worker = worker_settings(w);
    const int spin = w.policy == Policy::latency ? 200 : w.policy == Policy::balanced ? 50 : 0;
    const char *policy = w.policy == Policy::latency ? "latency" : w.policy == Policy::balanced ? "balanced" : "efficiency";
    std::vector<std::string> preload = existing.preload;
    const bool had = std::find(preload.begin(), preload.end(), "courier") != preload.end();
    if (!had)
        preload.push_back("courier");

    plan.settings = {
        {"courier.slots", std::to_string(plan.slots), sessions_from + ", max_connections " + std::to_string(*max_conn),
         "One slot per concurrent session plus 10% headroom (at least 2), at most max_connections"},
        {"courier.ring_size", "'" + format_size(ring) + "'",
         "typical_message_size " + format_size(w.typical_message) + ", memory_budget " + format_size(w.memory_budget), ring_rule},
        {"courier.max_message_size", "'" + format_size(plan.max_message_size) + "'",
         "largest_message_size " + format_size(w.largest_message), "The largest message, rounded up to a kB"},
        worker[0],
        worker[1],
        {"courier.spin_us", std::to_string(spin), std::string("latency_policy ") + policy,
         "Spin before sleeping: latency 200 µs, balanced 50 µs, efficiency 0"},
        {"max_worker_processes", std::to_string(existing.max_worker_processes + (had ? 0 : 1)),
         "max_worker_processes " + std::to_string(existing.max_worker_processes) + " (" + existing.source + ")",
         had ? "Already preloaded: courier's worker is counted" : "One more for courier's background worker"},
        {"shared_preload_libraries", "'" + join(preload, ",") + "'",
         "shared_preload_libraries '" + join(existing.preload, ",") + "' (" + existing.source + ")",
         "Preload courier; libraries already listed are kept, in order"},
    };
    return plan;
}

}  // namespace courier::config
