/*
 * courier-ipc-demo — the ipc core end to end, without PostgreSQL.
 *
 * Creates a Boost.Interprocess segment, forks a server process, and runs
 * round trips of mixed sizes from a client process twice: once with the
 * default spin budget on both sides, once with spin 0 (every exchange
 * parks on a futex). Prints latency per size and the counters.
 */
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "courier/ipc/segment.h"
#include "courier/ipc/server.h"

using namespace courier::ipc;
using clock_type = std::chrono::steady_clock;

namespace {

struct Options {
    int calls = 4000;
    std::uint32_t slots = 4;
    std::uint64_t ring = 64 * 1024;
    std::chrono::nanoseconds spin = std::chrono::microseconds(50);
};

[[noreturn]] void usage(const char *argv0, const char *why) {
    std::fprintf(stderr,
                 "%s: %s\nusage: %s [--calls N] [--ring BYTES] [--spin-us US]\n"
                 "  --calls N       round trips per mode (default 4000)\n"
                 "  --ring BYTES    ring size, a power of two >= 4096 (default 65536)\n"
                 "  --spin-us US    spin budget of the spinning mode (default 50)\n",
                 argv0, why, argv0);
    std::exit(2);
}

Options parse(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            usage(argv[0], ("missing value for " + a).c_str());
        char *end = nullptr;
        const long long v = std::strtoll(argv[++i], &end, 10);
        if (*end != '\0' || v <= 0)
            usage(argv[0], (a + " needs a positive integer").c_str());
        if (a == "--calls")
            o.calls = static_cast<int>(v);
        else if (a == "--ring")
            o.ring = static_cast<std::uint64_t>(v);
        else if (a == "--spin-us")
            o.spin = std::chrono::microseconds(v);
        else
            usage(argv[0], ("unknown option " + a).c_str());
    }
    return o;
}

struct Result {
    std::size_t size;
    std::vector<double> us;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

std::atomic<std::uint64_t> &stop_word(Segment &seg) {
    return *reinterpret_cast<std::atomic<std::uint64_t> *>(seg.caller_area());
}

pid_t start_server(Segment &seg, std::chrono::nanoseconds spin) {
    stop_word(seg).store(0);
    const pid_t pid = fork();
    if (pid == 0) {
        FutexWaker waker;
        WaitPolicy policy;
        policy.spin = spin;
        seg.region().begin_server_epoch(waker);
        serve_inline(seg.region(), waker, policy, std::chrono::seconds(10),
                     [&] { return stop_word(seg).load() != 0; },
                     [](ServerCall &call, std::string_view, std::span<const std::byte> payload) {
                         call.respond_all(FrameKind::response, payload);
                     });
        _exit(0);
    }
    return pid;
}

void stop_server(Segment &seg, pid_t pid) {
    FutexWaker waker;
    stop_word(seg).store(1);
    Dispatcher(seg.region(), 0).wake_all(waker);
    waitpid(pid, nullptr, 0);
}

bool run_mode(Segment &seg, const Options &o, std::chrono::nanoseconds spin, std::vector<Result> *results) {
    const pid_t server = start_server(seg, spin);
    while (seg.region().server_epoch() == 0)
        usleep(100);
    FutexWaker waker;
    Client client(seg.region(), waker, getpid());
    if (client.open() != Status::ok) {
        std::fprintf(stderr, "no free slot\n");
        return false;
    }
    const std::size_t sizes[] = {64, 1024, 16 * 1024, 4 * o.ring};
    results->clear();
    for (std::size_t n : sizes)
        results->push_back({n, {}});
    std::vector<std::byte> req(4 * o.ring), out;
    for (std::size_t i = 0; i < req.size(); ++i)
        req[i] = static_cast<std::byte>(i * 131 + 7);
    WaitPolicy policy;
    policy.spin = spin;
    for (int i = 0; i < o.calls; ++i) {
        Result &r = (*results)[static_cast<std::size_t>(i) % results->size()];
        /* Large messages are few: they take most of the time. */
        if (r.size > 16 * 1024 && i % 16 != 3)
            continue;
        policy.deadline = clock_type::now() + std::chrono::seconds(10);
        FrameKind kind{};
        const auto t0 = clock_type::now();
        const Status s = client.call(0, "echo", std::span(req).first(r.size), &out, &kind, policy);
        const auto t1 = clock_type::now();
        if (s != Status::ok || out.size() != r.size ||
            std::memcmp(out.data(), req.data(), r.size) != 0) {
            std::fprintf(stderr, "call %d (%zu bytes) failed: %s\n", i, r.size, describe(s));
            stop_server(seg, server);
            return false;
        }
        r.us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    client.close();
    stop_server(seg, server);
    return true;
}

void print_mode(const char *name, const std::vector<Result> &results) {
    std::printf("\n%s\n  %10s %8s %12s %12s %12s\n", name, "size", "calls", "median µs", "p99 µs", "MB/s");
    for (const Result &r : results) {
        const double med = percentile(r.us, 0.5);
        std::printf("  %10zu %8zu %12.2f %12.2f %12.1f\n", r.size, r.us.size(), med, percentile(r.us, 0.99),
                    med > 0 ? 2.0 * static_cast<double>(r.size) / med : 0.0);
    }
}

}  // namespace

int main(int argc, char **argv) {
    const Options o = parse(argc, argv);
    std::string error;
    const RegionParams params{o.slots, o.ring, 16 * o.ring};
    auto seg = Segment::create("courier-demo-" + std::to_string(getpid()), params, 64, &error);
    if (!seg) {
        std::fprintf(stderr, "courier-ipc-demo: %s\n", error.c_str());
        return 1;
    }
    std::printf("courier ipc demo: %u slots, %llu-byte rings, region %zu bytes, stats %zu bytes\n",
                o.slots, static_cast<unsigned long long>(o.ring), seg->layout().region_size,
                seg->layout().stats_size);
    std::vector<Result> spinning, parking;
    if (!run_mode(*seg, o, o.spin, &spinning) || !run_mode(*seg, o, std::chrono::nanoseconds(0), &parking))
        return 1;
    print_mode(("spinning (spin budget " + std::to_string(o.spin.count() / 1000) + " µs)").c_str(), spinning);
    print_mode("parking (spin budget 0: every wait sleeps on a futex)", parking);

    std::printf("\ncounters (both modes)\n");
    for (const StatRow &row : stat_rows(read_stats(seg->region().stats())))
        if (row.value != 0)
            std::printf("  %-32s %14llu\n", row.name.c_str(), static_cast<unsigned long long>(row.value));
    return 0;
}
