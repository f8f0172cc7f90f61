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
 *   4. loops: park on its latch until a doorbell rings (no polling timer:
 *      an idle worker sleeps), drain the doorbell, accept each call, queue
 *      it for the pool.
 * Pool threads run calls through the runtime; their only PostgreSQL call
 * is SetLatch (through LatchWaker::wake) to wake a backend.
 *
 * On SIGTERM it tells the runtime to cancel (cancelled() turns true), gives
 * running calls a second, and exits with status 1, so the postmaster starts
 * it again after 1 s unless the server is shutting down. Calls still queued
 * or running when it exits fail with "worker restarted" once the next
 * worker begins its epoch.
 */
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "courier/ipc/server.h"
#include "runtime_host.h"
#include "../ext/host.h"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"

PGDLLEXPORT void courier_worker_main(Datum arg);
}

namespace courier::worker {
namespace {

struct Job {
    std::uint32_t index;
    std::uint64_t generation;
};

class Pool {
public:
    Pool(ipc::Region &region, const RuntimeHost &runtime) : region_(region), runtime_(runtime) {}

    void start(int threads) {
        /* Threads inherit the creator's mask: block everything while creating them. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        for (int i = 0; i < threads; ++i)
            threads_.emplace_back([this] { run(); });
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }

    void submit(Job job) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            queue_.push_back(job);
        }
        ready_.notify_one();
    }

    /*
     * Stops taking calls and waits up to `grace` for the running ones (the
     * runtime sees cancelled() and should return early). Threads still busy
     * after that are left behind: the process exits under them, and the
     * next worker's epoch fails their calls.
     */
    void stop(std::chrono::milliseconds grace) {
        std::unique_lock<std::mutex> lock(mutex_);
        stopping_ = true;
        ready_.notify_all();
        const bool all_done = idle_.wait_for(lock, grace, [this] { return exited_ == threads_.size(); });
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
        ext::LatchWaker waker(false);  // park on futexes; wake backends' latches
        for (;;) {
            Job job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
                if (stopping_) {
                    ++exited_;
                    idle_.notify_all();
                    return;
                }
                job = queue_.front();
                queue_.pop_front();
            }
            ipc::WaitPolicy policy;
            policy.spin = ext::spin_budget();
            ipc::ServerCall call(region_, job.index, job.generation, waker, policy);
            runtime_.run_call(call);
        }
    }

    ipc::Region &region_;
    const RuntimeHost &runtime_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::condition_variable idle_;
    std::deque<Job> queue_;
    std::size_t exited_ = 0;
    bool stopping_ = false;
};

RuntimeHost runtime;

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
    region->header().dispatcher.latch_proc.store(ext::my_proc_number(), std::memory_order_relaxed);
    stats.server_pid.store(static_cast<std::uint64_t>(MyProcPid), std::memory_order_relaxed);

    if (!worker::runtime.load(ext::guc_runtime, pkglib_path, ext::guc_worker_threads))
        ereport(LOG, (errmsg("%s", worker::runtime.error().c_str()),
                      errdetail("Every courier call will fail with this error until the library is fixed "
                                "and the server restarted."),
                      errhint("Set courier.runtime to a courier runtime library in %s or an absolute path.",
                              pkglib_path)));
    worker::Pool pool(*region, worker::runtime);
    pool.start(ext::guc_worker_threads);

    ext::LatchWaker main_waker(true);
    const std::uint64_t epoch = region->begin_server_epoch(main_waker);
    stats.server_up.store(1, std::memory_order_relaxed);
    ereport(LOG, (errmsg("courier worker started: runtime \"%s\"%s, %d threads, epoch %llu",
                         worker::runtime.path().c_str(), worker::runtime.loaded() ? "" : " (not loaded)",
                         ext::guc_worker_threads, static_cast<unsigned long long>(epoch))));

    ipc::Doorbell bell = region->doorbell();
    const auto stop = [] { return ShutdownRequestPending || ConfigReloadPending; };
    while (!ShutdownRequestPending) {
        ipc::WaitPolicy policy;
        policy.spin = ext::spin_budget();
        if (ipc::wait_for_doorbell(*region, main_waker, policy, stop) == ipc::Status::interrupted)
            CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        bell.drain([&](std::uint32_t index) {
            std::uint64_t generation = 0;
            if (ipc::accept_call(*region, index, &generation))
                pool.submit({index, generation});
        });
    }

    stats.server_up.store(0, std::memory_order_relaxed);
    worker::runtime.begin_shutdown();
    pool.stop(std::chrono::seconds(1));
    worker::runtime.shutdown();
    ereport(LOG, (errmsg("courier worker shutting down")));
    proc_exit(1);
}
