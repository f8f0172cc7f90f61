/*
 * wait.cc — the standalone waker: futex on Linux, naps elsewhere.
 *
 * The futex word is a sequence number: prepare() reads it, wake() bumps it
 * before FUTEX_WAKE, and park() sleeps only while the word still holds the
 * value prepare() read. A wake that lands between prepare() and park()
 * therefore makes park() return at once. The futex is not private: the
 * word is in memory shared between processes.
 */
#include "courier/ipc/wait.h"

#include <cerrno>
#include <climits>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

namespace courier::ipc {

unsigned usable_cpus() {
    unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        cpus = static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
    /* A container's CPU quota (cgroup v2): its cores are visible, its time is not. */
    std::ifstream f("/sys/fs/cgroup/cpu.max");
    std::string quota, period;
    if (f >> quota >> period && quota != "max") {
        const double limit = std::stod(quota) / std::stod(period);
        cpus = std::min(cpus, static_cast<unsigned>(std::max(1.0, std::ceil(limit))));
    }
#endif
    return cpus;
}

void init_waiter(Waiter &waiter) {
    waiter.sleeping.store(0, std::memory_order_relaxed);
    waiter.futex_word.store(0, std::memory_order_relaxed);
    waiter.latch_proc.store(-1, std::memory_order_relaxed);
    waiter.spin_shift.store(0, std::memory_order_relaxed);
    waiter.latch_armed.store(0, std::memory_order_relaxed);
    waiter.cpu.store(-1, std::memory_order_relaxed);
}

#if defined(__linux__)
static_assert(sizeof(CpuMask) == sizeof(cpu_set_t), "a CpuMask is a cpu_set_t");

bool read_cpu_mask(CpuMask *out) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return false;
    std::memcpy(out->bits.data(), &set, sizeof set);
    return true;
}

bool write_cpu_mask(const CpuMask &mask) {
    cpu_set_t set;
    std::memcpy(&set, mask.bits.data(), sizeof set);
    return sched_setaffinity(0, sizeof set, &set) == 0;
}
#else
bool read_cpu_mask(CpuMask *) { return false; }
bool write_cpu_mask(const CpuMask &) { return false; }
#endif

unsigned cpu_count(const CpuMask &mask) {
    unsigned cpus = 0;
    for (const std::uint64_t w : mask.bits)
        cpus += static_cast<unsigned>(__builtin_popcountll(w));
    return cpus;
}

bool without_cpu(CpuMask *mask, int cpu) {
    if (cpu < 0 || cpu >= static_cast<int>(sizeof(CpuMask) * 8))
        return false;
    std::uint64_t &word = mask->bits[static_cast<unsigned>(cpu) / 64];
    const std::uint64_t bit = std::uint64_t{1} << (static_cast<unsigned>(cpu) % 64);
    if (!(word & bit))
        return false;
    if (cpu_count(*mask) < 2)
        return false;
    word &= ~bit;
    return true;
}

int current_cpu() {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}

namespace {
/* Each CPU's core as package << 16 | core_id, from sysfs; a CPU it does not describe counts as a core of its own. */
std::vector<long> read_cores() {
    std::vector<long> cores;
#if defined(__linux__)
    const long cpus = std::min(sysconf(_SC_NPROCESSORS_CONF), 4096L);
    for (long cpu = 0; cpu < cpus; ++cpu) {
        const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
        long package = -1, core = -1;
        std::ifstream(dir + "physical_package_id") >> package;
        std::ifstream(dir + "core_id") >> core;
        cores.push_back(package >= 0 && core >= 0 ? (package << 16 | core) : -1 - cpu);
    }
#endif
    return cores;
}
}  // namespace

bool cores_apart(int a, int b) {
    if (a < 0 || b < 0 || a == b)
        return false;
    static const std::vector<long> cores = read_cores();
    const auto n = static_cast<int>(cores.size());
    return a >= n || b >= n || cores[a] != cores[b];
}

std::uint32_t FutexWaker::prepare(Waiter &self) {
    return self.futex_word.load(std::memory_order_acquire);
}

#if defined(__linux__)

ParkResult FutexWaker::park(Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) {
    struct timespec ts;
    struct timespec *tsp = nullptr;
    if (timeout.count() > 0) {
        ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
        tsp = &ts;
    }
    const long r = syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&self.futex_word),
                           FUTEX_WAIT, token, tsp, nullptr, 0);
    if (r == -1 && errno == ETIMEDOUT)
        return ParkResult::timeout;
    /* EAGAIN (word moved: a wake came first) and EINTR are both "look again". */
    return ParkResult::woken;
}

static void futex_wake(Waiter &peer, int threads) {
    peer.futex_word.fetch_add(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<std::uint32_t *>(&peer.futex_word), FUTEX_WAKE, threads, nullptr,
            nullptr, 0);
}

/* One: a slot has one sleeper per side; a runtime's idle threads are woken one per call. */
void FutexWaker::wake(Waiter &peer) { futex_wake(peer, 1); }
void FutexWaker::wake_all(Waiter &peer) { futex_wake(peer, INT_MAX); }

#else

ParkResult FutexWaker::park(Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) {
    using clock = std::chrono::steady_clock;
    const auto end = timeout.count() > 0 ? clock::now() + timeout : clock::time_point::max();
    auto nap = std::chrono::microseconds(1);
    while (self.futex_word.load(std::memory_order_acquire) == token) {
        if (clock::now() >= end)
            return ParkResult::timeout;
        std::this_thread::sleep_for(nap);
        nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
    return ParkResult::woken;
}

void FutexWaker::wake(Waiter &peer) { peer.futex_word.fetch_add(1, std::memory_order_release); }
void FutexWaker::wake_all(Waiter &peer) { wake(peer); }

#endif

}  // namespace courier::ipc
