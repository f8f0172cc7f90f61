/*
 * wait.h — spin, then announce, re-check and park; wake only a sleeper.
 *
 * A waiter (the side that needs data, or room in a full ring) runs:
 *
 *   1. spin on its condition for up to a time budget (not an iteration
 *      count: the cost of an iteration differs by machine and load); a
 *      full budget starts at the 64th poll, the first clock read, since
 *      most waits end before it (a read is 32 ns in a guest; skipping it
 *      made the core round trip 1.6 % faster, bench/README.md). A budget
 *      the adaptation below has shrunk starts at once: counted from the
 *      64th poll, a shrunk budget of a few polls doubled, and sessions
 *      that outnumber the cores spun that much longer (16 sessions lost
 *      a quarter of their calls);
 *   2. token = waker.prepare(self)   — read the futex sequence word (the
 *                                      latch waker too: it sleeps on the
 *                                      word first, then on its latch);
 *   3. self.sleeping = 1; full fence; re-check the condition;
 *   4. waker.park(self, token)       — returns at once if a wake happened
 *                                      after step 2, so none is lost;
 *   5. self.sleeping = 0; re-check; a wake with nothing to do is spurious.
 *
 * Adaptive spinning: spinning pays only when the peer answers within the
 * budget. Each Waiter keeps a shift: a wait that ends within the full budget
 * halves it (spin more next time), one that takes longer doubles it (spin
 * less), from the full budget down to nothing. Under light load waits are
 * short and every wait spins; when callers queue behind each other, waits
 * grow and spinning stops by itself instead of stealing the CPU the server
 * needs. Together with the region-wide cap on concurrent spinners this is
 * how spinning backs off when sessions outnumber cores: with neither, every
 * session spinning its whole budget, 64 sessions on 2 vCPUs made 0.40 times
 * the calls (bench/README.md, "Who loses the CPU in the crowded rows").
 *
 * The cap is for clients and server on the same CPUs. When the server has
 * CPUs of its own (courier.worker_cpus, courier/worker/placement.h), a
 * spinning client takes CPU only from other clients, and its yields give
 * that back, while a client that may not spin pays a futex call for an
 * answer that comes within a µs. The host lifts the cap then: 4, 16 and 64
 * sessions on one vCPU with the worker on the other made 0.47-1.06M,
 * 0.38-0.75M and 0.36-0.68M calls/s with the cap of one (a preempted
 * spinner keeps its place in it) and 1.50M, 1.47M and 1.42M without, every
 * call a spin hit (bench/README.md).
 *
 * A spinner counts against the cap only from its uncounted_polls-th poll
 * (0.3-0.5 µs), and a waiter the cap refuses parks then. Counting is two
 * RMWs on one line that every waiter of the region writes: counted from
 * the first poll, the two sides of a call took that line from each other
 * at every wait, and a round trip through a slot's rings took 0.48 µs
 * instead of 0.36 (core_rings, bench/README.md). The waits of a spinning
 * call end before that poll; a crowd's do not, and are counted.
 *
 * A spinner also yields its CPU every polls_per_yield polls (a few µs).
 * With more runnable threads than cores, a spinner otherwise keeps its CPU
 * to the end of its budget while a woken peer waits behind it in the run
 * queue: a session whose answer is ready, a serving thread with a call.
 * That made the spinning session the fast one and the rest wait (at 64
 * sessions on 2 vCPUs one session got up to 3 × another's calls; with the
 * yield 1.1-1.5 ×, bench/README.md). With nothing else runnable the yield
 * returns at once (0.5 µs here), and a short wait never reaches it.
 *
 * A spinner whose peer shares its CPU yields at once, once per wait. Each
 * side notes in its Waiter the CPU it runs on when it publishes and while
 * it spins (a store only when that changed: the peer reads the line). A
 * peer last seen on the spinner's own CPU is not running, and cannot be
 * until the spinner lets it: spinning on only delays it. The kernel starts
 * a woken thread on its waker's CPU when it can, so a session that calls
 * now and then wakes a parked thread of the worker that starts beside it,
 * and two sides that spin on one CPU stay there for tens of ms until the
 * load balancer parts them. A round trip on one CPU took 17.6 µs with only
 * the periodic yield, 3.6 µs with this (bench/README.md). Once is enough:
 * the peer, given the CPU, answers and yields back in its own wait. A
 * yield on every poll sent the spinner behind every runnable thread (16
 * sessions: a quarter of the calls), and a waker that noted its own CPU
 * for the side it woke, as a guess, made the worker's threads give away
 * the CPU all the sessions needed (4 sessions: 0.56 ×). A stale note costs
 * one yield, 0.5 µs.
 *
 * A yield only takes turns, and the two sides stay on one CPU: a new
 * PostgreSQL session often ran beside a worker thread for its first tens
 * of ms while the other CPU idled, at 10-20 µs a call (10 of 24 runs of
 * 22000 calls had a p99 over 3 µs, bench/README.md). The kernel's balancer
 * is loath to move a task that ran in the last 0.5 ms (cache-hot), and
 * these never stop running. A session that calls back to back therefore
 * leaves its worker thread's CPU (call.h, "Leaving the worker's CPU"),
 * with the helpers below. That replaced a rule by which the worker's
 * thread moved off a CPU it kept sharing with its session: the sessions'
 * rule covers that case too, and a worker thread's move only made its
 * sessions move after it.
 *
 * The other side, after publishing (a release store of a ring cursor),
 * issues a full fence and reads peer.sleeping: only a peer that announced
 * sleeping is woken; otherwise the wakeup is elided and counted. The two
 * fences make the pair a Dekker handshake: either the waiter's re-check sees
 * the publication, or the publisher sees the sleeping flag.
 *
 * A wait may give a probe besides its check: a look at the one cache line
 * the peer's publication changes (a frame's mark). While spinning, check()
 * runs when the probe says so and on every 64th poll; the announce-and-park
 * path always runs check(). A check also reads lines the peer writes during
 * the call (the slot's state at accept and let-go, the ring's tail): read on
 * every poll, each of those writes had to take the line back from the
 * spinner and the spinner to fetch it again (bench/README.md). The probe is
 * no part of the handshake: the re-check after announcing is check(). The
 * first look of a wait is the probe's too: a check there read the ring's
 * tail just before the peer wrote it, once a message each way, and a round
 * trip through a slot's rings took 0.54 µs instead of 0.48 (core_rings,
 * bench/README.md).
 *
 * A wait may be bounded (policy.recheck): a client's wake may be owed
 * (region.h), left by a busy serving thread for others to make, and all
 * of those others may be inside long calls. Its park then ends after
 * recheck (1 ms for a slot's client), twice that the next time, up to
 * max_recheck, and it looks again: an owed wake held up costs the client
 * at most as long again as it has waited, and never more than 64 ms; a
 * client of a long call wakes about log2(its wait / 1 ms) + its wait / 64 ms
 * times for nothing. A look that finds the answer is counted
 * (owed_wakeups_late): a number that grows says owed wakes wait too long.
 *
 * Every wait has a way out: the condition itself reports why the call is
 * over (the peer abandoned it, the server restarted or is stopping), the
 * policy's deadline ends it, and the Waker reports interrupts (a
 * PostgreSQL cancel or terminate) both while spinning and instead of
 * parking, so the caller can handle them and resume the wait.
 *
 * Waiter lives in shared memory; how to wake it is the Waker's business.
 * A Waiter with latch_proc >= 0 sleeps on a PostgreSQL latch (the ext's
 * waker); otherwise on the futex word (FutexWaker, usable from any thread).
 * A slot's Waiters have one sleeper each, so `sleeping` is 0 or what it
 * parked for (data, or room in a full ring: a consumer's release wakes only
 * the latter); a runtime's idle Waiter counts its parked threads (dispatch.h).
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "courier/ipc/layout.h"
#include "courier/ipc/stats.h"
#include "courier/ipc/status.h"

namespace courier::ipc {

/* What a slot's parked side waits for (Waiter::sleeping); 0 is awake. */
enum SleepingFor : std::uint32_t { sleeping_for_data = 1, sleeping_for_room = 2 };

struct alignas(cache_line) Waiter {
    /* 0, or what the side parked for: a consumer's release wakes only a producer stopped on a full ring. */
    std::atomic<std::uint32_t> sleeping;
    std::atomic<std::uint32_t> futex_word;
    std::atomic<std::int32_t> latch_proc;  // PGPROC number, or -1 for futex
    /* The spin budget is policy.spin >> spin_shift: see wait_until. */
    std::atomic<std::uint32_t> spin_shift;
    /* 1 while a latch Waiter sleeps on its latch rather than the futex word (ext/latch_waker.cc). */
    std::atomic<std::uint32_t> latch_armed;
    /* The CPU this side's thread last noted it ran on, or -1 (see the top). */
    std::atomic<std::int32_t> cpu;
};
static_assert(sizeof(Waiter) == cache_line);

void init_waiter(Waiter &waiter);

enum class ParkResult : std::uint8_t { woken, timeout, interrupted };

/*
 * How a host sleeps and wakes. The correct way to implement one:
 *
 *   - prepare() captures, before the waiter announces sleeping, whatever
 *     park() needs to notice a wake that comes after it (the futex word's
 *     value; a reset latch). A wake between prepare() and park() must make
 *     park() return at once: that is what makes the handshake lossless.
 *   - park() returns `interrupted` without sleeping when interrupted(self)
 *     is true, and as soon as an interrupt arrives while it sleeps.
 *   - wake() may be called from any thread of any process that maps the
 *     Waiter, and wakes at least one thread parked on it (a count of
 *     sleepers may have more than one; never all of them).
 *
 * What must be avoided: consuming an interrupt in prepare() or park() (the
 * caller handles it, outside the ipc code); sleeping in park() when the
 * token is stale; blocking in wake(); and anything in wake() that is not
 * safe on a thread the host did not create.
 */
class Waker {
public:
    virtual ~Waker() = default;
    /* Step 2 above. The token is passed back to park(). */
    virtual std::uint32_t prepare(Waiter &self) = 0;
    /* Blocks until woken, the timeout (<= 0: none) or an interrupt. */
    virtual ParkResult park(Waiter &self, std::uint32_t token,
                            std::chrono::nanoseconds timeout) = 0;
    /* Wakes a waiter that announced sleeping. */
    virtual void wake(Waiter &peer) = 0;
    /* Wakes every thread parked on a Waiter that counts several (shutdown). */
    virtual void wake_all(Waiter &peer) { wake(peer); }
    /* An interrupt is pending that `self`'s owner must handle (cheap; polled while spinning). */
    virtual bool interrupted(const Waiter &) const { return false; }
};

/*
 * Futex on Linux (shared, not private: the word lives in memory mapped by
 * several processes); elsewhere a portable fallback that sleeps in short,
 * growing naps and re-checks the word.
 */
class FutexWaker final : public Waker {
public:
    std::uint32_t prepare(Waiter &self) override;
    ParkResult park(Waiter &self, std::uint32_t token,
                    std::chrono::nanoseconds timeout) override;
    void wake(Waiter &peer) override;
    void wake_all(Waiter &peer) override;
};

struct WaitPolicy {
    std::chrono::nanoseconds spin{std::chrono::microseconds(50)};
    /*
     * Optional cap on how many waiters spin at once (shared, e.g. in the
     * region): a waiter that finds max_spinners already spinning parks at
     * once. With more waiters than cores, spinning only steals the CPU that
     * the peers being waited for need.
     */
    std::atomic<std::uint32_t> *spinners = nullptr;
    std::uint32_t max_spinners = 0;
    /* Optional: the Waiter of the side this wait waits for; a spinner yields to it on a shared CPU. */
    const Waiter *peer = nullptr;
    /*
     * Optional bound on a park, for waits whose wake may be owed
     * (region.h): the waiter looks again after this long, then after
     * twice as long, up to max_recheck (see the top). 0: park until woken.
     */
    std::chrono::nanoseconds recheck{0};
    /* Absolute deadline; time_point::max() waits forever. */
    std::chrono::steady_clock::time_point deadline =
        std::chrono::steady_clock::time_point::max();
};

/* The longest a bounded park sleeps before it looks again (WaitPolicy::recheck). */
inline constexpr std::chrono::nanoseconds max_recheck = std::chrono::milliseconds(64);

/*
 * A region's cap: spinners per CPU it may use (usable_cpus). More than one
 * a CPU take turns through their yields, and a yield is cheaper than the
 * futex wake a parked waiter needs: on 2 vCPUs, 64 sessions made 680k-874k
 * calls/s with four a CPU and 325k-400k with one (bench/README.md, "Four
 * spinners per CPU").
 */
inline constexpr std::uint32_t spinners_per_cpu = 4;

/* A region's max_spinners when any number may spin (Region::lift_spinner_cap). */
inline constexpr std::uint32_t no_spinner_cap = ~std::uint32_t{0};

/* Polls between two yields of a spinner's CPU (see the top): 6 µs of pause here. */
inline constexpr unsigned polls_per_yield = 256;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/* The CPU the calling thread runs on, or -1 where that is unknown (3 ns with glibc's rseq). */
int current_cpu();

/* Whether two CPUs are on different cores as the kernel sees them (not one core's SMT threads); false if either is -1. */
bool cores_apart(int a, int b);

/* Records where this side runs, for its peer's spin; a store only when it moved (the peer reads the line). */
inline int note_cpu(Waiter &self) {
    const int cpu = current_cpu();
    if (self.cpu.load(std::memory_order_relaxed) != cpu)
        self.cpu.store(cpu, std::memory_order_relaxed);
    return cpu;
}

/* The CPUs a thread may run on, whole (the kernel's mask of 1024), to be put back as it was. */
struct CpuMask {
    std::array<std::uint64_t, 16> bits{};
    bool operator==(const CpuMask &) const = default;
};
/* The calling thread's mask; false where it cannot be read or set (not Linux). */
bool read_cpu_mask(CpuMask *out);
/* Sets the calling thread's mask; one system call, so safe in a signal handler. */
bool write_cpu_mask(const CpuMask &mask);
/* How many CPUs *mask has. */
unsigned cpu_count(const CpuMask &mask);
/* Takes `cpu` out of *mask if the mask has it and another CPU besides; false, *mask unchanged, otherwise. */
bool without_cpu(CpuMask *mask, int cpu);

/*
 * A spin's time budget, counted from its first look at the clock, which a
 * spinner takes at its 64th poll (see the top) unless it starts it sooner.
 */
class SpinBudget {
public:
    using clock = std::chrono::steady_clock;
    explicit SpinBudget(std::chrono::nanoseconds spin) : spin_(spin) {}
    void start(clock::time_point now) { end_ = now + spin_; }
    /* At a poll that reads the clock: whether the budget is spent (the first such read starts it). */
    bool spent(clock::time_point now) {
        if (end_ == clock::time_point{})
            start(now);
        return now >= end_;
    }
    /* When the budget started; only after start() or spent(). */
    clock::time_point started() const { return end_ - spin_; }

private:
    std::chrono::nanoseconds spin_;
    clock::time_point end_{};
};

/*
 * A spinner's pause before each poll: every polls_per_yield-th poll offers
 * the CPU too, and so does the first one that finds the peer on this CPU
 * (see the top). `peer` may be null (no one in particular is waited for).
 */
class SpinPause {
public:
    SpinPause(Waiter *self, const Waiter *peer, SideCounters *counters)
        : self_(self), peer_(peer), counters_(counters), cpu_(self != nullptr ? note_cpu(*self) : -1) {}
    void operator()(unsigned poll) {
        cpu_relax();
        if (!handed_over_ && peer_shares_cpu()) {
            handed_over_ = true;
            bump(counters_, Counter::shared_cpu_spins);
            std::this_thread::yield();
        } else if (poll % polls_per_yield == 0) {
            std::this_thread::yield();
        }
        if (poll % 64 == 0 && self_ != nullptr)
            cpu_ = note_cpu(*self_);  // the scheduler may have moved either side
    }

private:
    /* The peer last ran on this CPU, which this thread holds now: the peer is not running. */
    bool peer_shares_cpu() const {
        return peer_ != nullptr && cpu_ >= 0 && peer_->cpu.load(std::memory_order_relaxed) == cpu_;
    }
    Waiter *self_;
    const Waiter *peer_;
    SideCounters *counters_;
    int cpu_;
    bool handed_over_ = false;
};

/*
 * The publisher's half: call after the release store that makes progress
 * visible to the peer.
 */
inline void notify(Waiter &peer, Waker &waker, SideCounters *counters) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (peer.sleeping.load(std::memory_order_relaxed)) {
        waker.wake(peer);
        bump(counters, Counter::wakeups_sent);
    } else {
        bump(counters, Counter::wakeups_elided);
    }
}

/* The polls a spinner makes before it counts against the cap (see the top). */
inline constexpr unsigned uncounted_polls = 32;

inline bool enter_spin(const WaitPolicy &policy) {
    if (policy.spinners == nullptr)
        return true;
    if (policy.spinners->fetch_add(1, std::memory_order_relaxed) < policy.max_spinners)
        return true;
    policy.spinners->fetch_sub(1, std::memory_order_relaxed);
    return false;
}

inline void leave_spin(const WaitPolicy &policy) {
    if (policy.spinners != nullptr)
        policy.spinners->fetch_sub(1, std::memory_order_relaxed);
}

/* CPUs this process may use: its affinity mask (cgroup cpusets included), limited by a cgroup v2 cpu.max quota. */
unsigned usable_cpus();

/*
 * The waiter's half. `check` returns Status::ok when the condition holds,
 * would_block while it does not, and any other status to stop waiting
 * (abandoned, server_restarted, corrupt): that status is returned. `probe`
 * (wait_until_probed) returns true when check() may have something to say
 * (see the top).
 */
inline constexpr std::uint32_t max_spin_shift = 12;

/* Learns from how long a wait took (see the comment at the top). */
inline void adapt_spin(Waiter &self, std::chrono::nanoseconds waited, std::chrono::nanoseconds budget) {
    const std::uint32_t shift = self.spin_shift.load(std::memory_order_relaxed);
    if (waited <= budget) {
        if (shift > 0)
            self.spin_shift.store(shift - 1, std::memory_order_relaxed);
    } else if (shift < max_spin_shift) {
        self.spin_shift.store(shift + 1, std::memory_order_relaxed);
    }
}

/* Spins for this Waiter's share of the budget; true, with *s, if check() resolved meanwhile. */
template <typename Probe, typename Check>
bool spin_on(Waiter &self, Waker &waker, const WaitPolicy &policy, SideCounters *counters,
             std::chrono::steady_clock::time_point *started, Probe &probe, Check &check, Status *s) {
    using clock = std::chrono::steady_clock;
    const std::uint32_t shift = self.spin_shift.load(std::memory_order_relaxed);
    const std::chrono::nanoseconds spin =
        shift >= max_spin_shift ? std::chrono::nanoseconds(0) : policy.spin / (1u << shift);
    if (spin.count() <= 0)
        return false;
    SpinBudget budget(spin);
    if (shift > 0)
        budget.start(clock::now());  // a shrunk budget counts from now, or it would grow by 64 polls (see the top)
    SpinPause pause(&self, policy.peer, counters);
    bool counted = false;
    for (unsigned i = 1;; ++i) {
        pause(i);
        if (i == uncounted_polls) {
            if (!enter_spin(policy))
                return false;
            counted = true;
        }
        if ((i & 63) != 0 && !probe())
            continue;
        *s = check();
        if (*s != Status::would_block) {
            if (counted)
                leave_spin(policy);
            /* A hit comes within this wait's spin, at most the full budget: no clock read (32 ns) to learn that. */
            adapt_spin(self, std::chrono::nanoseconds(0), policy.spin);
            bump(counters, Counter::spin_hits);
            return true;
        }
        if ((i & 63) == 0 && (budget.spent(clock::now()) || waker.interrupted(self)))
            break;
    }
    if (counted)
        leave_spin(policy);
    *started = budget.started();  // a full budget's, 64 polls late: most waits end before
    return false;
}

/*
 * How long the next park may sleep: until the deadline (0: no limit), and
 * a bounded park (*recheck > 0) at most *recheck, which then doubles up to
 * max_recheck; *bounded when the bound is what ends it. False once the
 * deadline has passed.
 */
inline bool park_time(const WaitPolicy &policy, std::chrono::nanoseconds *recheck, std::chrono::nanoseconds *timeout,
                      bool *bounded) {
    using clock = std::chrono::steady_clock;
    *timeout = std::chrono::nanoseconds(0);
    if (policy.deadline != clock::time_point::max()) {
        const auto now = clock::now();
        if (now >= policy.deadline)
            return false;
        *timeout = policy.deadline - now;
    }
    *bounded = recheck->count() > 0 && (timeout->count() == 0 || *recheck < *timeout);
    if (*bounded) {
        *timeout = *recheck;
        *recheck = std::min<std::chrono::nanoseconds>(*recheck * 2, max_recheck);
    }
    return true;
}

template <typename Probe, typename Check>
Status wait_until_probed(Waiter &self, Waker &waker, const WaitPolicy &policy, SideCounters *counters,
                         Probe &&probe, Check &&check, SleepingFor why = sleeping_for_data) {
    using clock = std::chrono::steady_clock;
    /* The first look is the probe's too: a check reads lines the peer is about to write (see the top). */
    Status s = probe() ? check() : Status::would_block;
    if (s != Status::would_block)
        return s;

    clock::time_point started{};
    if (spin_on(self, waker, policy, counters, &started, probe, check, &s))
        return s;
    if (started == clock::time_point{})
        started = clock::now();
    /* Whatever happens below, this wait outlived the spin it was given. */
    struct Learn {
        Waiter &self;
        clock::time_point started;
        std::chrono::nanoseconds budget;
        ~Learn() { adapt_spin(self, clock::now() - started, budget); }
    } learn{self, started, policy.spin};

    std::chrono::nanoseconds recheck = policy.recheck;
    for (;;) {
        const std::uint32_t token = waker.prepare(self);
        self.sleeping.store(why, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        s = check();
        if (s != Status::would_block) {
            self.sleeping.store(0, std::memory_order_relaxed);
            return s;
        }
        std::chrono::nanoseconds timeout{0};
        bool bounded = false;
        if (!park_time(policy, &recheck, &timeout, &bounded)) {
            self.sleeping.store(0, std::memory_order_relaxed);
            return Status::timeout;
        }
        if (waker.interrupted(self)) {
            self.sleeping.store(0, std::memory_order_relaxed);
            return Status::interrupted;
        }
        bump(counters, Counter::sleeps);
        const ParkResult r = waker.park(self, token, timeout);
        self.sleeping.store(0, std::memory_order_relaxed);
        s = check();
        if (s != Status::would_block) {
            if (bounded && r == ParkResult::timeout)
                bump(counters, Counter::owed_wakeups_late);
            return s;
        }
        if (r == ParkResult::interrupted)
            return Status::interrupted;
        if (r == ParkResult::woken)
            bump(counters, Counter::spurious_wakeups);
    }
}

/* A wait whose check is cheap enough to run on every poll. */
template <typename Check>
Status wait_until(Waiter &self, Waker &waker, const WaitPolicy &policy, SideCounters *counters, Check &&check,
                  SleepingFor why = sleeping_for_data) {
    return wait_until_probed(self, waker, policy, counters, [] { return true; }, check, why);
}

}  // namespace courier::ipc
