/*
 * worker_main.cc — the courier background worker's PostgreSQL side.
 *
 * Main thread (the only one that calls PostgreSQL beyond SetLatch):
 *   1. installs SIGTERM/SIGHUP handlers the PostgreSQL way, unblocks signals;
 *   2. takes courier.worker_cpus, if set, before any thread starts; then
 *      runs a courier::worker::Worker (worker/: PostgreSQL-free) over the
 *      region, with the latch waker: it begins a new server epoch (calls
 *      left by a predecessor fail, never hang), loads courier.runtimes
 *      with dlopen after fork (init with signals blocked), and starts the
 *      threads that take calls — every one with all signals blocked, so
 *      SIGURG (latches), SIGTERM and SIGHUP keep arriving on this thread;
 *   3. sleeps on its latch, handling only reloads, shutdown and postmaster
 *      death: it is not on the path of a call. It wakes every
 *      ipc::heartbeat_interval to write a heartbeat into the stats segment,
 *      by which the exporter tells a hung worker from an idle one.
 *
 * On SIGTERM the Worker stops in order (runtime.h: cancel, a grace period
 * of a second, then shutdown only when no thread can still be inside the
 * runtime), and the process exits with status 1 so that the postmaster
 * starts it again after 1 s unless the server is shutting down.
 *
 * C++ and PostgreSQL: the Worker lives in static storage and every call
 * into it is inside a try block that keeps its message in a char buffer;
 * ereport runs only after the C++ scope is left.
 */
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

#include "host.h"

extern "C" {
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

PGDLLEXPORT void courier_worker_main(Datum arg);
}

namespace courier::ext {
namespace {

LatchWaker waker;
std::optional<worker::Worker> running;
char failure[512];

/* The exporter calls the worker hung when this stops moving (a stopped or stuck main loop). */
void beat(ipc::StatsHeader &stats) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch();
    stats.heartbeat_ns.store(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()),
                             std::memory_order_relaxed);
}

/* Whatever way the worker exits (SIGTERM, ERROR, FATAL), it is down. */
void mark_down(int, Datum) {
    if (ipc::Region *region = shared_region())
        region->stats().header().server_up.store(0, std::memory_order_relaxed);
}

/* Runs fn; an escaped exception becomes false and `failure`. */
template <typename Fn>
bool guarded(Fn &&fn) {
    try {
        fn();
        return true;
    } catch (const std::exception &e) {
        snprintf(failure, sizeof failure, "%s", e.what());
    } catch (...) {
        snprintf(failure, sizeof failure, "an exception of unknown type");
    }
    return false;
}

void log_runtimes() {
    for (const worker::RuntimeReport &r : running->runtimes()) {
        if (!r.warning.empty())
            ereport(WARNING, (errmsg("%s", r.warning.c_str())));
        if (r.error.empty())
            ereport(LOG, (errmsg("courier runtime \"%s\" loaded from \"%s\" (ABI v%d, %s mode)", r.name.c_str(),
                                 r.path.c_str(), r.abi, r.driven ? "driven" : "callback")));
        else
            ereport(LOG, (errmsg("%s", r.error.c_str()),
                          errdetail("Every call to courier runtime \"%s\" fails with this error until the "
                                    "library is fixed and the server restarted.",
                                    r.name.c_str()),
                          errhint("courier.runtimes names libraries in %s, or absolute paths.", pkglib_path)));
    }
}

void log_stop(const worker::StopReport &report) {
    if (report.calls_failed > 0)
        ereport(LOG, (errmsg("courier worker failed %zu calls still open at shutdown", report.calls_failed)));
    for (const std::string &why : report.not_shut_down)
        ereport(LOG, (errmsg("courier runtime not shut down: %s", why.c_str()),
                      errdetail("The runtime's shutdown() was skipped so that nothing it frees is still in use; "
                                "the process exits under it.")));
}

/* courier.worker_cpus: before any thread starts, so that the pools and the runtimes' threads inherit them. */
void take_worker_cpus() {
    if (worker_cpu_set().none())
        return;
    std::string error;
    if (!guarded([&] {
            if (!worker::run_on(worker_cpu_set(), &error))
                throw std::runtime_error(error);
        }))
        ereport(WARNING, (errmsg("courier worker could not take courier.worker_cpus: %s", failure),
                          errdetail("It runs where the postmaster left it, beside the sessions; calls are served.")));
}

}  // namespace
}  // namespace courier::ext

using namespace courier;
using namespace courier::ext;

extern "C" void courier_worker_main(Datum) {
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();

    ipc::Region *region = shared_region();
    if (region == nullptr)
        ereport(ERROR, (errmsg("courier worker started without courier's shared memory")));
    ipc::StatsHeader &stats = region->stats().header();
    on_shmem_exit(mark_down, 0);
    stats.server_pid.store(static_cast<std::uint64_t>(MyProcPid), std::memory_order_relaxed);

    take_worker_cpus();
    std::uint64_t epoch = 0;
    const bool started = guarded([&] {
        worker::Config config{runtime_specs(), pkglib_path, guc_worker_threads, spin_budget(),
                              std::chrono::milliseconds(1000)};
        running.emplace(*region, waker, std::move(config));
        epoch = running->start();
    });
    if (!started)
        ereport(FATAL, (errmsg("courier worker could not start: %s", failure)));
    log_runtimes();
    stats.server_up.store(1, std::memory_order_relaxed);
    ereport(LOG, (errmsg("courier worker started: %zu runtime(s), %d threads each, epoch %llu",
                         runtime_specs().size(), guc_worker_threads, static_cast<unsigned long long>(epoch))));

    const long heartbeat_ms = std::chrono::milliseconds(ipc::heartbeat_interval).count();
    while (!ShutdownRequestPending) {
        beat(stats);
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, heartbeat_ms, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            const int spin_before = guc_spin_us;
            ProcessConfigFile(PGC_SIGHUP);
            running->set_spin(spin_budget());
            if (guc_spin_us != spin_before)
                ereport(LOG, (errmsg("courier worker reloaded: courier.spin_us is now %d", guc_spin_us)));
        }
    }

    mark_down(0, 0);  // new calls wait for the successor instead of starting on a worker that is going
    worker::StopReport report;
    if (!guarded([&] { report = running->stop(); }))
        ereport(LOG, (errmsg("courier worker stopped with an error: %s", failure)));
    log_stop(report);
    ereport(LOG, (errmsg("courier worker shutting down")));
    proc_exit(1);
}
