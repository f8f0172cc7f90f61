/*
 * latch_waker.h — ipc's Waker on PostgreSQL latches (ext/latch_waker.cc).
 *
 * A Waiter with a PGPROC number (a backend's side of its slot) sleeps on
 * its futex word for a moment, then on MyLatch, which only its own backend
 * does; any other (the worker's threads) on the futex word alone. Waking
 * handles both: the futex always, and SetLatch on the PGPROC whose number
 * the Waiter holds (range-checked) once that backend sleeps on its latch.
 * SetLatch is the one PostgreSQL call made from the worker's threads. Interrupts are reported only to latch waiters: the worker's
 * threads never see the main thread's InterruptPending.
 *
 * Threads: prepare(), park() and interrupted() on a latch Waiter run on
 * the backend's main thread only (they touch MyLatch and InterruptPending);
 * wake() and wake_all() on any thread of any process that maps the region.
 *
 * A public header because tests/pg's probe library runs the Waker
 * conformance suite on it: the probe does not link a copy, its calls bind
 * to courier.so's own, loaded by shared_preload_libraries.
 */
#pragma once

#include <chrono>
#include <cstdint>

#include "courier/ipc/wait.h"

namespace courier::ext {

class LatchWaker final : public ipc::Waker {
public:
    std::uint32_t prepare(ipc::Waiter &self) override;
    ipc::ParkResult park(ipc::Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) override;
    void wake(ipc::Waiter &peer) override;
    void wake_all(ipc::Waiter &peer) override;
    bool interrupted(const ipc::Waiter &self) const override;

private:
    ipc::ParkResult park_on_latch(ipc::Waiter &self, std::uint32_t token, long ms);

    ipc::FutexWaker futex_;
};

/* This process's PGPROC number (the field moved in PostgreSQL 17): what a latch Waiter holds. */
int my_proc_number();

}  // namespace courier::ext
