/*
 * latch_waker.cc — ipc's wait protocol for backends: the futex word first,
 * then the latch.
 *
 * A backend's park has two phases. For up to futex_phase it sleeps on its
 * Waiter's futex word, like the worker's threads: a wake then costs the
 * waker one futex syscall. SetLatch would cost a signal (kill, then the
 * backend's signal handler, its self-pipe or signalfd and epoll), which
 * with many sessions was the worker's largest cost (perf: a fifth of all
 * CPU at 64 sessions, in kill()). Most waits end within the phase: a call
 * queued behind others, a worker busy for a moment. If none came, park()
 * arms the latch and sleeps on MyLatch, which a cancel, a terminate and
 * the postmaster's death end at once; from then on a wake costs SetLatch.
 *
 * prepare() reads the futex word (the token); a wake bumps it, so a wake
 * between prepare() and either phase makes it return at once: the futex
 * compares the word, and the latch phase checks it after arming. Arming
 * is a Dekker handshake with wake(): the backend stores latch_armed = 1,
 * fences, re-reads the word; the waker bumps the word, fences, reads
 * latch_armed. One of them sees the other's store: the backend returns,
 * or the waker sets the latch. ResetLatch comes before arming, so a
 * SetLatch after it is never lost.
 *
 * Interrupts: a cancel or terminate while on the futex is seen when the
 * phase ends (its handler set InterruptPending; park() checks it before
 * either phase and after each); at most futex_phase late. interrupted()
 * reports it while spinning; the caller runs CHECK_FOR_INTERRUPTS()
 * outside of any C++ frame and resumes the wait.
 */
#include <algorithm>
#include <chrono>

#include "courier/latch_waker.h"

extern "C" {
#include "postgres.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/wait_event.h"
}

namespace courier::ext {

/* Short enough that a cancel is not noticeably late; long enough to cover a queued call. */
constexpr std::chrono::milliseconds futex_phase{1};

static bool sleeps_on_latch(const ipc::Waiter &w) { return w.latch_proc.load(std::memory_order_relaxed) >= 0; }

std::uint32_t LatchWaker::prepare(ipc::Waiter &self) { return futex_.prepare(self); }

bool LatchWaker::interrupted(const ipc::Waiter &self) const {
    return sleeps_on_latch(self) && InterruptPending && INTERRUPTS_CAN_BE_PROCESSED();
}

/* The second phase: MyLatch, until a wake, an interrupt or `ms` (-1: none). */
ipc::ParkResult LatchWaker::park_on_latch(ipc::Waiter &self, std::uint32_t token, long ms) {
    ResetLatch(MyLatch);
    self.latch_armed.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    int rc = 0;
    if (self.futex_word.load(std::memory_order_relaxed) == token && !interrupted(self))
        rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (ms >= 0 ? WL_TIMEOUT : 0), ms,
                       PG_WAIT_EXTENSION);
    self.latch_armed.store(0, std::memory_order_relaxed);
    if (interrupted(self))
        return ipc::ParkResult::interrupted;
    return (rc & WL_TIMEOUT) ? ipc::ParkResult::timeout : ipc::ParkResult::woken;
}

ipc::ParkResult LatchWaker::park(ipc::Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) {
    if (!sleeps_on_latch(self))
        return futex_.park(self, token, timeout);
    if (interrupted(self))
        return ipc::ParkResult::interrupted;
    const bool bounded = timeout.count() > 0;
    const std::chrono::nanoseconds first = bounded ? std::min<std::chrono::nanoseconds>(timeout, futex_phase) : futex_phase;
    const ipc::ParkResult r = futex_.park(self, token, first);
    if (interrupted(self))
        return ipc::ParkResult::interrupted;
    if (r == ipc::ParkResult::woken || self.futex_word.load(std::memory_order_relaxed) != token)
        return ipc::ParkResult::woken;
    if (bounded && timeout <= futex_phase)
        return ipc::ParkResult::timeout;
    const long ms = bounded ? static_cast<long>((timeout - first).count() + 999'999) / 1'000'000 : -1;
    return park_on_latch(self, token, ms);
}

void LatchWaker::wake(ipc::Waiter &peer) {
    futex_.wake(peer);
    if (!sleeps_on_latch(peer))
        return;
    std::atomic_thread_fence(std::memory_order_seq_cst);  // the word's bump before reading latch_armed
    const std::int32_t proc = peer.latch_proc.load(std::memory_order_relaxed);
    if (peer.latch_armed.load(std::memory_order_relaxed) != 0 && ProcGlobal != nullptr &&
        static_cast<std::uint32_t>(proc) < ProcGlobal->allProcCount)
        SetLatch(&GetPGProcByNumber(proc)->procLatch);
}

void LatchWaker::wake_all(ipc::Waiter &peer) {
    if (sleeps_on_latch(peer))
        wake(peer);
    else
        futex_.wake_all(peer);
}

int my_proc_number() {
#if PG_VERSION_NUM >= 170000
    return MyProcNumber;
#else
    return MyProc->pgprocno;
#endif
}

}  // namespace courier::ext
