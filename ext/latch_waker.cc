/*
 * latch_waker.cc — ipc's wait protocol on PostgreSQL latches.
 *
 * prepare() is ResetLatch(MyLatch): the ipc core re-checks its condition
 * after it, so a SetLatch that raced with the reset is never lost — the
 * latch stays set and WaitLatch returns at once. A cancel or terminate
 * that arrives just before the reset is not lost either: its handler set
 * InterruptPending, which interrupted() reports while spinning and before
 * parking, and park() after WaitLatch; the caller then runs
 * CHECK_FOR_INTERRUPTS() outside of any C++ frame and resumes the wait.
 */
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

static bool sleeps_on_latch(const ipc::Waiter &w) { return w.latch_proc.load(std::memory_order_relaxed) >= 0; }

std::uint32_t LatchWaker::prepare(ipc::Waiter &self) {
    if (!sleeps_on_latch(self))
        return futex_.prepare(self);
    ResetLatch(MyLatch);
    return 0;
}

bool LatchWaker::interrupted(const ipc::Waiter &self) const {
    return sleeps_on_latch(self) && InterruptPending && INTERRUPTS_CAN_BE_PROCESSED();
}

ipc::ParkResult LatchWaker::park(ipc::Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) {
    if (!sleeps_on_latch(self))
        return futex_.park(self, token, timeout);
    if (interrupted(self))
        return ipc::ParkResult::interrupted;
    int events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
    long ms = -1;
    if (timeout.count() > 0) {
        events |= WL_TIMEOUT;
        ms = static_cast<long>((timeout.count() + 999'999) / 1'000'000);
    }
    const int rc = WaitLatch(MyLatch, events, ms, PG_WAIT_EXTENSION);
    if (interrupted(self))
        return ipc::ParkResult::interrupted;
    return (rc & WL_TIMEOUT) ? ipc::ParkResult::timeout : ipc::ParkResult::woken;
}

void LatchWaker::wake(ipc::Waiter &peer) {
    const std::int32_t proc = peer.latch_proc.load(std::memory_order_relaxed);
    if (proc >= 0 && ProcGlobal != nullptr && static_cast<std::uint32_t>(proc) < ProcGlobal->allProcCount)
        SetLatch(&GetPGProcByNumber(proc)->procLatch);
    else
        futex_.wake(peer);
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
