/*
 * worker.cc — the courier background worker.
 *
 * Main thread (the only one that calls PostgreSQL):
 *   1. installs SIGTERM/SIGHUP handlers the PostgreSQL way, unblocks signals;
 *   2. loads the runtime (dlopen, after fork) and starts the pool threads
 *      with every signal blocked, so SIGURG (latches), SIGTERM and SIGHUP
 *      keep arriving on this thread;
 *   3. begins a new server epoch: calls left by a predecessor are cancelled
 *      and their callers woken with an ERROR, never left hanging;
 *   4. sleeps on its latch, handling only configuration reloads, shutdown
 *      and postmaster death — it is not on the path of a call.
 *
 * Pool threads take calls from the doorbell themselves (ipc::Dispatch): a
 * backend's request goes to a waiting pool thread with no hand-over through
 * this process's main thread. DESIGN.md has the main thread drain the
 * doorbell; measured on 2 cores that hop (doorbell → main thread → condition
 * variable → pool thread) cost more than the whole round trip of the core,
 * so the pool drains it. Their only PostgreSQL call is SetLatch (through
 * LatchWaker::wake) to wake a backend; they park on the region's futex.
 *
 * On SIGTERM the worker tells the runtime to cancel (cancelled() turns
 * true), gives running calls a second, and exits with status 1, so the
 * postmaster starts it again after 1 s unless the server is shutting down.
 * Calls still queued or running when it exits fail with "worker restarted"
 * once the next worker begins its epoch.
 */
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "courier/ipc/server.h"
#include "runtime_host.h"
#include "../ext/host.h"

extern "C" {
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

PGDLLEXPORT void courier_worker_main(Datum arg);
}

namespace courier::worker {
namespace {

class Pool {
public:
    Pool(ipc::Region &region, const RuntimeHost &runtime) : dispatch_(region), runtime_(runtime) {}

    void start(int threads) {
        /* Threads inherit the creator's mask: block everything while creating them. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        for (int i = 0; i < threads; ++i)
            threads_.emplace_back([this] { run(); });
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }

    void set_spin(std::chrono::nanoseconds spin) { spin_ns_.store(spin.count(), std::memory_order_relaxed); }

    /*
     * Stops taking calls and waits up to `grace` for the running ones (the
     * runtime sees cancelled() and should return early). Threads still busy
     * after that are left behind: the process exits under them, and the
     * next worker's epoch fails their calls.
     */
    void stop(std::chrono::milliseconds grace) {
        stopping_.store(true, std::memory_order_relaxed);
        ext::LatchWaker waker(false);
        dispatch_.wake_all(waker, static_cast<int>(threads_.size()));
        std::unique_lock<std::mutex> lock(mutex_);
        const bool all_done = exited_cv_.wait_for(lock, grace, [this] { return exited_ == threads_.size(); });
        lock.unlock();
        for (auto &t : threads_) {
            if (all_done)
                t.join();
            else
                t.detach();
        }
        threads_.clear();
    }

private:
    void run() {
        ext::LatchWaker waker(false);  // park on the futex; wake backends' latches
        dispatch_.serve(
            waker, spin_ns_, std::chrono::nanoseconds(0), [this] { return stopping_.load(std::memory_order_relaxed); },
            [this](ipc::ServerCall &call) { runtime_.run_call(call); });
        std::lock_guard<std::mutex> lock(mutex_);
        ++exited_;
        exited_cv_.notify_all();
    }

    ipc::Dispatch dispatch_;
    const RuntimeHost &runtime_;
    std::vector<std::thread> threads_;
    std::atomic<std::int64_t> spin_ns_{0};
    std::atomic<bool> stopping_{false};
    std::mutex mutex_;
    std::condition_variable exited_cv_;
    std::size_t exited_ = 0;
};

RuntimeHost runtime;

/* Whatever way the worker exits (SIGTERM, ERROR, FATAL), it is down. */
void mark_down(int, Datum) {
    if (ipc::Region *region = ext::shared_region())
        region->stats().header().server_up.store(0, std::memory_order_relaxed);
}

}  // namespace
}  // namespace courier::worker

using namespace courier;

extern "C" void courier_worker_main(Datum) {
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();

    ipc::Region *region = ext::shared_region();
    if (region == nullptr)
        ereport(ERROR, (errmsg("courier worker started without courier's shared memory")));
    ipc::StatsHeader &stats = region->stats().header();
    on_shmem_exit(worker::mark_down, 0);
    region->header().dispatcher.latch_proc.store(-1, std::memory_order_relaxed);  // pool threads: futex
    stats.server_pid.store(static_cast<std::uint64_t>(MyProcPid), std::memory_order_relaxed);

    if (!worker::runtime.load(ext::guc_runtime, pkglib_path, ext::guc_worker_threads))
        ereport(LOG, (errmsg("%s", worker::runtime.error().c_str()),
                      errdetail("Every courier call will fail with this error until the library is fixed "
                                "and the server restarted."),
                      errhint("Set courier.runtime to a courier runtime library in %s or an absolute path.",
                              pkglib_path)));
    worker::Pool pool(*region, worker::runtime);
    pool.set_spin(ext::spin_budget());
    pool.start(ext::guc_worker_threads);

    ext::LatchWaker main_waker(true);
    const std::uint64_t epoch = region->begin_server_epoch(main_waker);
    stats.server_up.store(1, std::memory_order_relaxed);
    ereport(LOG, (errmsg("courier worker started: runtime \"%s\"%s, %d threads, epoch %llu",
                         worker::runtime.path().c_str(), worker::runtime.loaded() ? "" : " (not loaded)",
                         ext::guc_worker_threads, static_cast<unsigned long long>(epoch))));

    while (!ShutdownRequestPending) {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            pool.set_spin(ext::spin_budget());
        }
    }

    worker::runtime.begin_shutdown();
    pool.stop(std::chrono::seconds(1));
    worker::runtime.shutdown();
    ereport(LOG, (errmsg("courier worker shutting down")));
    proc_exit(1);
}
