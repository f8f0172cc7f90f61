/*
 * host.h — what the extension shares with the worker inside courier.so.
 *
 * The postmaster formats the region and the stats segment in its shmem
 * startup hook; every child inherits both mappings and the globals below
 * through fork(), so a backend or the worker finds them ready.
 *
 * Include C++ and ipc headers before this one: PostgreSQL's c.h defines
 * macros that confuse the standard library when it comes first.
 */
#pragma once

#include "courier/ipc/region.h"
#include "courier/ipc/wait.h"

extern "C" {
#include "postgres.h"
}

namespace courier::ext {

/* GUCs (see courier.cc for units, bounds and help). */
extern int guc_slots;
extern int guc_ring_size_kb;
extern int guc_max_message_size_kb;
extern char *guc_runtime;
extern int guc_worker_threads;
extern int guc_spin_us;
extern int guc_call_timeout_ms;
extern int guc_slot_wait_timeout_ms;
extern bool guc_enabled;

/* The region of this cluster, or nullptr when courier was not preloaded. */
ipc::Region *shared_region();

/*
 * The PostgreSQL waker. Parking on the latch is for the threads that own
 * MyLatch (backends, the worker's main thread); pool threads park on the
 * futex. Waking handles both kinds of Waiter: SetLatch on the PGPROC whose
 * number the Waiter holds (range-checked), the futex otherwise. SetLatch is
 * the one PostgreSQL call that is safe from the worker's pool threads.
 */
class LatchWaker final : public ipc::Waker {
public:
    explicit LatchWaker(bool park_on_latch) : park_on_latch_(park_on_latch) {}
    std::uint32_t prepare(ipc::Waiter &self) override;
    ipc::ParkResult park(ipc::Waiter &self, std::uint32_t token,
                         std::chrono::nanoseconds timeout) override;
    void wake(ipc::Waiter &peer) override;

private:
    bool park_on_latch_;
    ipc::FutexWaker futex_;
};

/* This process's PGPROC number (the field moved in PostgreSQL 17). */
int my_proc_number();

/* courier.spin_us as a duration. */
std::chrono::nanoseconds spin_budget();

}  // namespace courier::ext
