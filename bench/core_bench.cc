/*
 * courier-bench-core — the ipc core alone against the alternatives, in one run.
 *
 * Two processes (fork) ping-pong 64 bytes over:
 *   floor      one atomic word each way, spinning: this machine's limit
 *   core_spin  the ipc core, default spin budget, the two sides on two CPUs
 *              (timed once the load balancer has parted them: a woken
 *              server starts on its caller's CPU)
 *   core_rings core_spin's messages through one slot's rings, one call held
 *              open: the message and wait layers without the slot protocol
 *   core_one_cpu  core_spin with both processes pinned to one CPU
 *   core_one_thread  both sides in one thread, in turn: the code's own cost
 *   core_park  the ipc core, spin 0: every wait parks on a futex
 *   pipe       two pipes
 *   socket     a Unix-domain socketpair
 *   mqueue     two Boost.Interprocess message_queues
 * and streams 1 MiB and 16 MiB requests through the core, against memcpy of
 * the same size in the same process, and what one futex wake costs the
 * waker (as a slot's side wakes its peer) when the sleeper is on the
 * waker's CPU and when it is on another: the price of every sleep in the
 * crowded rows, which on a VM depends on its host (bench/README.md).
 *
 * Round trips are timed in batches of 64 (a clock read per round trip would
 * cost as much as the floor itself); median and p99 are over batch means.
 * Output: one JSON object on stdout.
 */
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <boost/interprocess/ipc/message_queue.hpp>

#include "courier/ipc/segment.h"
#include "courier/ipc/server.h"
#include "courier/worker/placement.h"

using namespace courier::ipc;
using clock_type = std::chrono::steady_clock;
namespace bip = boost::interprocess;

namespace {

constexpr int batch = 64;
constexpr std::size_t msg = 64;

struct Figures {
    double median_ns = 0, p99_ns = 0;
};

double quantile(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

/* Round trips time_round_trips() makes, warm-up included: the peer must match. */
int total_round_trips(int rounds) { return batch * 4 + (rounds + batch - 1) / batch * batch; }

/* Runs `rounds` round trips in batches; returns per-round-trip figures. */
Figures time_round_trips(int rounds, const std::function<void()> &round_trip) {
    for (int i = 0; i < batch * 4; ++i)
        round_trip();  // warm up both sides
    std::vector<double> per;
    for (int done = 0; done < rounds; done += batch) {
        const auto t0 = clock_type::now();
        for (int i = 0; i < batch; ++i)
            round_trip();
        per.push_back(std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / batch);
    }
    return {quantile(per, 0.5), quantile(per, 0.99)};
}

void print_figures(const char *name, const Figures &f, bool comma = true) {
    std::printf("  \"%s\": {\"median_ns\": %.1f, \"p99_ns\": %.1f}%s\n", name, f.median_ns, f.p99_ns, comma ? "," : "");
}

template <typename Child>
pid_t fork_child(Child &&child) {
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        child();
        _exit(0);
    }
    return pid;
}

Figures bench_floor(int rounds) {
    auto *word = static_cast<std::atomic<std::uint64_t> *>(
        mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    word->store(0);
    const std::uint64_t total = static_cast<std::uint64_t>(total_round_trips(rounds));
    const pid_t pid = fork_child([&] {
        for (std::uint64_t i = 0; i < total; ++i) {
            while (word->load(std::memory_order_acquire) != 2 * i + 1)
                cpu_relax();
            word->store(2 * i + 2, std::memory_order_release);
        }
    });
    std::uint64_t i = 0;
    const Figures f = time_round_trips(rounds, [&] {
        word->store(2 * i + 1, std::memory_order_release);
        while (word->load(std::memory_order_acquire) != 2 * i + 2)
            cpu_relax();
        ++i;
    });
    waitpid(pid, nullptr, 0);
    munmap(word, 4096);
    return f;
}

Figures bench_fd_pair(int rounds, int a_out, int a_in, int b_out, int b_in) {
    const int total = total_round_trips(rounds);
    const pid_t pid = fork_child([&] {
        char buf[msg];
        for (int i = 0; i < total; ++i) {
            std::size_t got = 0;
            while (got < msg)
                got += static_cast<std::size_t>(read(b_in, buf + got, msg - got));
            if (write(b_out, buf, msg) != static_cast<ssize_t>(msg))
                _exit(1);
        }
    });
    char buf[msg] = {};
    const Figures f = time_round_trips(rounds, [&] {
        if (write(a_out, buf, msg) != static_cast<ssize_t>(msg))
            std::abort();
        std::size_t got = 0;
        while (got < msg)
            got += static_cast<std::size_t>(read(a_in, buf + got, msg - got));
    });
    waitpid(pid, nullptr, 0);
    return f;
}

Figures bench_pipe(int rounds) {
    int ab[2], ba[2];
    if (pipe(ab) != 0 || pipe(ba) != 0)
        std::abort();
    const Figures f = bench_fd_pair(rounds, ab[1], ba[0], ba[1], ab[0]);
    for (int fd : {ab[0], ab[1], ba[0], ba[1]})
        close(fd);
    return f;
}

Figures bench_socket(int rounds) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        std::abort();
    const Figures f = bench_fd_pair(rounds, sv[0], sv[0], sv[1], sv[1]);
    close(sv[0]);
    close(sv[1]);
    return f;
}

Figures bench_mqueue(int rounds) {
    const std::string a = "courier-bench-mq-a-" + std::to_string(getpid());
    const std::string b = "courier-bench-mq-b-" + std::to_string(getpid());
    bip::message_queue::remove(a.c_str());
    bip::message_queue::remove(b.c_str());
    bip::message_queue to_child(bip::create_only, a.c_str(), 4, msg);
    bip::message_queue to_parent(bip::create_only, b.c_str(), 4, msg);
    const int total = total_round_trips(rounds);
    const pid_t pid = fork_child([&] {
        char buf[msg];
        bip::message_queue::size_type got;
        unsigned prio;
        for (int i = 0; i < total; ++i) {
            to_child.receive(buf, msg, got, prio);
            to_parent.send(buf, got, 0);
        }
    });
    char buf[msg] = {};
    bip::message_queue::size_type got;
    unsigned prio;
    const Figures f = time_round_trips(rounds, [&] {
        to_child.send(buf, msg, 0);
        to_parent.receive(buf, msg, got, prio);
    });
    waitpid(pid, nullptr, 0);
    bip::message_queue::remove(a.c_str());
    bip::message_queue::remove(b.c_str());
    return f;
}

/* The CPUs this process may run on, lowest first. */
std::vector<int> allowed_cpus() {
    courier::worker::CpuSet set;
    std::string error;
    std::vector<int> cpus;
    if (courier::worker::allowed_cpus(&set, &error))
        for (std::size_t cpu = 0; cpu < set.size(); ++cpu)
            if (set.test(cpu))
                cpus.push_back(static_cast<int>(cpu));
    return cpus;
}

/* Pins this process (and the children it forks) to `cpu`, by default the one it runs on; restores its mask when done. */
struct PinnedHere {
    cpu_set_t old;
    explicit PinnedHere(int cpu = sched_getcpu()) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_getaffinity(0, sizeof old, &old) != 0 || sched_setaffinity(0, sizeof one, &one) != 0)
            std::abort();
    }
    ~PinnedHere() { sched_setaffinity(0, sizeof old, &old); }
};

/*
 * The waker's time in FutexWaker::wake, per wake, for a child asleep on
 * `sleeper_cpu` while this process runs on `waker_cpu`. The child parks as
 * a slot's side does (prepare, announce, park); each wake waits until it
 * has announced and then 200 µs more, so that it is asleep in the kernel.
 */
Figures bench_wake(int waker_cpu, int sleeper_cpu, int wakes) {
    struct Shared {
        Waiter w;
        std::atomic<bool> stop;
    };
    auto *shared = static_cast<Shared *>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    Waiter *w = &shared->w;
    init_waiter(*w);
    shared->stop.store(false);
    FutexWaker waker;
    const pid_t pid = fork_child([&] {
        PinnedHere pinned(sleeper_cpu);
        while (!shared->stop.load()) {
            const std::uint32_t token = waker.prepare(*w);
            w->sleeping.store(sleeping_for_data, std::memory_order_seq_cst);
            (void)waker.park(*w, token, std::chrono::nanoseconds(0));
        }
    });
    const PinnedHere pinned(waker_cpu);
    std::vector<double> ns;
    for (int i = 0; i < wakes; ++i) {
        while (w->sleeping.load(std::memory_order_acquire) == 0)
            usleep(50);
        usleep(200);
        w->sleeping.store(0, std::memory_order_relaxed);
        const auto t0 = clock_type::now();
        waker.wake(*w);
        ns.push_back(std::chrono::duration<double, std::nano>(clock_type::now() - t0).count());
    }
    shared->stop.store(true);
    while (waitpid(pid, nullptr, WNOHANG) == 0) {
        waker.wake(*w);
        usleep(100);
    }
    munmap(shared, 4096);
    return {quantile(ns, 0.5), quantile(ns, 0.99)};
}

/* A segment of two slots for this process, named `what`; exits if it cannot be made. */
std::unique_ptr<Segment> bench_segment(const char *what, std::uint64_t ring, std::uint64_t max) {
    std::string error;
    auto seg = Segment::create(std::string(what) + std::to_string(getpid()), RegionParams{2, ring, max}, 64, &error);
    if (!seg) {
        std::fprintf(stderr, "courier-bench-core: %s\n", error.c_str());
        std::exit(1);
    }
    return seg;
}

/* The core with an echo server in a child process. */
struct CoreServer {
    std::unique_ptr<Segment> seg;
    pid_t pid = -1;

    CoreServer(std::uint64_t ring, std::uint64_t max, std::chrono::nanoseconds spin) {
        seg = bench_segment("courier-bench-", ring, max);
        pid = fork_child([&] {
            FutexWaker waker;
            WaitPolicy policy;
            policy.spin = spin;
            seg->region().begin_server_epoch(waker);
            /* No per-call deadline, as in the worker (a dead client is seen by client_gone). */
            serve_inline(seg->region(), waker, policy, std::chrono::nanoseconds(0), [&] { return stop().load() != 0; },
                         [&](ServerCall &call, std::string_view, std::span<const std::byte> payload) {
                             cpu().store(sched_getcpu(), std::memory_order_relaxed);
                             /* Echo small messages; acknowledge large ones (the stream is one-way). */
                             if (payload.size() <= 4096)
                                 call.respond_all(FrameKind::response, payload);
                             else
                                 call.respond_all(FrameKind::response, {});
                         });
        });
        while (seg->region().server_epoch() == 0)
            usleep(100);
    }
    ~CoreServer() {
        FutexWaker waker;
        stop().store(1);
        Dispatcher(seg->region(), 0).wake_all(waker);
        waitpid(pid, nullptr, 0);
    }
    std::atomic<std::uint64_t> &stop() { return reinterpret_cast<std::atomic<std::uint64_t> *>(seg->caller_area())[0]; }
    /* The CPU the server answered the last call on. */
    std::atomic<std::uint64_t> &cpu() { return reinterpret_cast<std::atomic<std::uint64_t> *>(seg->caller_area())[1]; }
};

/*
 * Before timing, calls until the server has answered 256 calls in a row
 * from another CPU (at most 2 s; never on one CPU). The kernel starts a
 * woken server on its caller's CPU, and two sides that spin are parted by
 * the load balancer only after tens of ms: without this a quick run timed
 * mostly the two sides taking turns on one CPU (core_one_cpu). The round
 * trips it makes are on top of time_round_trips()'s.
 */
void settle_apart(const std::function<void()> &round_trip, const std::atomic<std::uint64_t> &server_cpu) {
    const auto settle_end = clock_type::now() + std::chrono::seconds(2);
    for (int apart = 0; apart < 256 && clock_type::now() < settle_end;) {
        round_trip();
        apart = server_cpu.load(std::memory_order_relaxed) != static_cast<std::uint64_t>(sched_getcpu()) ? apart + 1 : 0;
    }
}

Figures bench_core(int rounds, std::chrono::nanoseconds spin, bool settle = false) {
    CoreServer server(65536, 1 << 20, spin);
    FutexWaker waker;
    Client client(server.seg->region(), waker, getpid());
    if (client.open() != Status::ok)
        std::abort();
    std::vector<std::byte> req(msg, std::byte{7}), out;
    WaitPolicy policy;
    policy.spin = spin;
    FrameKind kind;
    const auto round_trip = [&] {
        if (client.call(0, "echo", req, &out, &kind, policy) != Status::ok || out.size() != msg)
            std::abort();
    };
    if (settle)
        settle_apart(round_trip, server.cpu());
    return time_round_trips(rounds, round_trip);
}

/*
 * The same messages through one slot's rings with one call held open for
 * the whole run: the message and wait layers without begin_call, the
 * watch, accept and let-go. core_spin minus this is what the slot
 * protocol adds to a call.
 */
Figures bench_core_rings(int rounds) {
    auto seg = bench_segment("courier-bench-rings-", 65536, 1 << 20);
    Region &region = seg->region();
    FutexWaker waker;
    region.begin_server_epoch(waker);
    SlotHandle slot;
    std::uint64_t epoch = 0, generation = 0;
    bool watched = false;
    if (region.lease(getpid(), &slot) != Status::ok || region.begin_call(slot, 0, &epoch, &watched) != Status::ok ||
        region.accept(slot.index, waker, &generation) != Status::ok)
        std::abort();
    WaitPolicy policy;
    policy.spin = std::chrono::microseconds(50);
    const auto endpoint = [&](bool client) {
        Endpoint ep{&region, slot.index, slot.generation, epoch, client, &waker, policy, nullptr};
        ep.whole_turns = true;
        return ep;
    };
    const auto send = [](Endpoint &ep, FrameKind kind, std::span<const std::byte> bytes) {
        MessageWriter w(ep, kind, bytes.size());
        if (w.write(bytes) != Status::ok || w.finish() != Status::ok)
            std::abort();
    };
    const auto receive = [](Endpoint &ep, std::vector<std::byte> *out) {
        MessageReader r(ep);
        if (r.read_all(out) != Status::ok || out->size() != msg)
            std::abort();
        r.release();
    };
    auto *server_cpu = reinterpret_cast<std::atomic<std::uint64_t> *>(seg->caller_area());
    const std::vector<std::byte> req(msg, std::byte{7}), stop(msg, std::byte{0});
    const pid_t pid = fork_child([&] {
        Endpoint server = endpoint(false);
        std::vector<std::byte> got;
        do {
            receive(server, &got);
            server_cpu->store(sched_getcpu(), std::memory_order_relaxed);
            send(server, FrameKind::response, got);
        } while (got != stop);
    });
    Endpoint client = endpoint(true);
    std::vector<std::byte> out;
    const auto round_trip = [&] {
        send(client, FrameKind::request, req);
        receive(client, &out);
    };
    settle_apart(round_trip, *server_cpu);
    const Figures f = time_round_trips(rounds, round_trip);
    send(client, FrameKind::request, stop);
    receive(client, &out);
    waitpid(pid, nullptr, 0);
    return f;
}

Figures bench_core_one_cpu(int rounds) {
    PinnedHere pinned;
    return bench_core(rounds, std::chrono::microseconds(50));
}

/*
 * Both sides in this one thread, taking turns: start and write the
 * request, take it (the kept call after the first, as serve_inline does
 * with a spin), answer it, read the answer. No line goes to another CPU
 * and nothing waits, so this is what the code alone costs a round trip,
 * whatever the vCPUs' placement.
 */
Figures bench_core_one_thread(int rounds) {
    auto seg = bench_segment("courier-bench-one-", 65536, 1 << 20);
    FutexWaker waker;
    seg->region().begin_server_epoch(waker);
    Client client(seg->region(), waker, getpid());
    if (client.open() != Status::ok)
        std::abort();
    Dispatcher dispatcher(seg->region(), 0);
    std::vector<std::byte> req(msg, std::byte{7}), out;
    const WaitPolicy policy;
    const auto echo = [](ServerCall &call, std::string_view, std::span<const std::byte> payload) {
        call.respond_all(FrameKind::response, payload);
    };
    Accepted accepted;
    bool kept = false;
    return time_round_trips(rounds, [&] {
        if (client.start(0, "echo", req.size(), policy) != Status::ok || client.request().write(req) != Status::ok ||
            client.finish_request() != Status::ok ||
            dispatcher.next(waker, policy.spin, [] { return false; }, clock_type::time_point::max(), &accepted,
                            nil_index, kept) != Status::ok)
            std::abort();
        ServerCall call(seg->region(), accepted, waker, policy);
        call.offer_keep();
        serve_call(call, echo);
        kept = call.kept();
        if (client.response().read_all(&out) != Status::ok || out.size() != msg)
            std::abort();
        client.end(Status::ok);
    });
}

/* Bytes per second through the core (one way, request) and through memcpy. */
std::pair<double, double> bench_stream(std::size_t size, int messages) {
    CoreServer server(65536, size + 64, std::chrono::microseconds(50));
    FutexWaker waker;
    Client client(server.seg->region(), waker, getpid());
    if (client.open() != Status::ok)
        std::abort();
    std::vector<std::byte> req(size, std::byte{3}), out, copy(size);
    WaitPolicy policy;
    FrameKind kind;
    auto one = [&] {
        if (client.call(0, "sink", req, &out, &kind, policy) != Status::ok)
            std::abort();
    };
    one();
    auto t0 = clock_type::now();
    for (int i = 0; i < messages; ++i)
        one();
    const double core = static_cast<double>(size) * messages / std::chrono::duration<double>(clock_type::now() - t0).count();
    std::memcpy(copy.data(), req.data(), size);
    t0 = clock_type::now();
    for (int i = 0; i < messages; ++i) {
        std::memcpy(copy.data(), req.data(), size);
        asm volatile("" : : "r"(copy.data()) : "memory");
    }
    const double mem = static_cast<double>(size) * messages / std::chrono::duration<double>(clock_type::now() - t0).count();
    return {core, mem};
}

}  // namespace

int main(int argc, char **argv) {
    int rounds = 200000;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--quick") == 0) {
            rounds = 5000;
        } else if (std::strcmp(argv[i], "--core-only") == 0) {
            /* For profilers: only the spinning core ping-pong. */
            const Figures f = bench_core(rounds * 5, std::chrono::microseconds(50), true);
            std::printf("core_spin median %.1f ns\n", f.median_ns);
            return 0;
        } else {
            std::fprintf(stderr, "usage: %s [--quick | --core-only]\n", argv[0]);
            return 2;
        }
    }
    std::printf("{\n  \"rtt_64B\": {\n");
    print_figures("floor", bench_floor(rounds));
    print_figures("core_spin", bench_core(rounds, std::chrono::microseconds(50), true));
    print_figures("core_rings", bench_core_rings(rounds));
    print_figures("core_one_cpu", bench_core_one_cpu(rounds / 4));
    print_figures("core_one_thread", bench_core_one_thread(rounds));
    print_figures("core_park", bench_core(rounds / 4, std::chrono::nanoseconds(0)));
    print_figures("pipe", bench_pipe(rounds / 4));
    print_figures("socket", bench_socket(rounds / 4));
    print_figures("mqueue", bench_mqueue(rounds / 4), false);
    std::printf("  },\n  \"stream\": {\n");
    const int big = rounds >= 200000 ? 1 : 0;
    const auto [core1, mem1] = bench_stream(1 << 20, big ? 400 : 20);
    const auto [core16, mem16] = bench_stream(16 << 20, big ? 25 : 2);
    std::printf("    \"1MiB\": {\"core_bytes_per_s\": %.0f, \"memcpy_bytes_per_s\": %.0f},\n", core1, mem1);
    std::printf("    \"16MiB\": {\"core_bytes_per_s\": %.0f, \"memcpy_bytes_per_s\": %.0f}\n", core16, mem16);
    std::printf("  },\n  \"wake\": {\n");
    const std::vector<int> cpus = allowed_cpus();
    const int wakes = big ? 2000 : 200;
    print_figures("same_cpu", bench_wake(cpus.at(0), cpus.at(0), wakes), cpus.size() > 1);
    if (cpus.size() > 1)
        print_figures("other_cpu", bench_wake(cpus.at(0), cpus.at(1), wakes), false);
    std::printf("  }\n}\n");
    return 0;
}
