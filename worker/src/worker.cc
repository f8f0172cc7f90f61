/*
 * worker.cc — starting and stopping the serving side (see worker.h).
 *
 * start():  the epoch first, so that no thread of ours ever takes a call
 *           of a dead predecessor and none of its calls is left hanging;
 *           then the runtimes, each init() with signals blocked (a driven
 *           runtime's threads may call next_call() from here on); then a
 *           pool per callback-mode runtime and the cancel watcher.
 * stop():   stopping is set and every thread is woken (idle ones, ones
 *           parked on a slot, the watcher, which runs every cancel
 *           callback); each v2 runtime's stop(); the grace period for
 *           running calls and pool threads; the calls still open are
 *           failed; shutdown() only for runtimes no thread can still be in.
 */
#include <thread>

#include "pool.h"
#include "state.h"
#include "watcher.h"

namespace courier::worker {
namespace {

constexpr const char *shutting_down = "the courier worker is shutting down; the call was cancelled";

}  // namespace

Worker::State::State(ipc::Region &r, ipc::Waker &w, Config c)
    : region(r), waker(w), config(std::move(c)), spin_ns(config.spin.count()), table(r, w, stopping) {}

Worker::State::~State() = default;

ipc::WaitPolicy Worker::State::call_policy() const {
    ipc::WaitPolicy p;
    p.spin = std::chrono::nanoseconds(spin_ns.load(std::memory_order_relaxed));
    return p;
}

Worker::Worker(ipc::Region &region, ipc::Waker &waker, Config config)
    : state_(std::make_unique<State>(region, waker, std::move(config))) {}

Worker::~Worker() {
    stop();
    /* A thread left inside a runtime still uses the state: keep it (the process is ending). */
    if (state_->threads_left_behind)
        (void)state_.release();
}

const std::vector<RuntimeReport> &Worker::runtimes() const { return state_->reports; }

void Worker::set_spin(std::chrono::nanoseconds spin) { state_->spin_ns.store(spin.count(), std::memory_order_relaxed); }

std::uint64_t Worker::start() {
    State &w = *state_;
    const std::uint32_t count = std::min<std::uint32_t>(static_cast<std::uint32_t>(w.config.runtimes.size()),
                                                        w.region.runtimes());
    for (std::uint32_t r = 0; r < count; ++r)
        w.dispatchers.push_back(std::make_unique<ipc::Dispatcher>(w.region, r));
    w.runtimes.resize(count);
    set_running(&w);
    w.phase = State::Phase::running;
    const std::uint64_t epoch = w.region.begin_server_epoch(w.waker);

    for (std::uint32_t r = 0; r < count; ++r) {
        const RuntimeSpec &spec = w.config.runtimes[r];
        LoadedRuntime &rt = w.runtimes[r];
        rt.name = spec.name;
        rt.path = resolve_runtime_path(spec.library, w.config.libdir);
        InitContext context{host_v1(), host_v2(),
                            courier_init_args{sizeof(courier_init_args), rt.name.c_str(), r, w.config.threads,
                                              w.region.slots(), w.region.max_message_size()}};
        load_runtime(&rt, context);
        if (w.region.stats().valid())
            w.region.stats().set_runtime_state(r, rt.loaded() ? ipc::RuntimeState::loaded : ipc::RuntimeState::failed);
        w.reports.push_back(RuntimeReport{rt.name, rt.path, rt.error, rt.warning, rt.abi(), rt.driven()});
    }
    for (std::uint32_t r = 0; r < count; ++r) {
        if (w.runtimes[r].driven()) {
            w.pools.push_back(nullptr);
            continue;
        }
        w.pools.push_back(std::make_unique<Pool>(w, r));
        w.pools.back()->start(w.runtimes[r].loaded() ? w.config.threads : 1);
    }
    w.watcher = std::make_unique<CancelWatcher>(w);
    w.watcher->start();
    return epoch;
}

/* Waits until no call is open and no runtime thread is in the host, or `until`. */
static bool drained(Worker::State &w, std::chrono::steady_clock::time_point until) {
    for (;;) {
        std::size_t open = 0;
        for (std::uint32_t r = 0; r < w.runtimes.size(); ++r)
            open += w.table.open_calls(r);
        if (open == 0 && w.in_host.load(std::memory_order_acquire) == 0)
            return true;
        if (std::chrono::steady_clock::now() >= until)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // shutdown only, not a call's path
    }
}

StopReport Worker::stop() {
    State &w = *state_;
    StopReport report;
    if (w.phase != State::Phase::running)
        return report;
    w.phase = State::Phase::stopped;
    w.stopping.store(true, std::memory_order_seq_cst);
    for (auto &d : w.dispatchers)
        d->wake_all(w.waker);
    w.region.wake_servers(w.waker);
    w.watcher->poke();
    for (const LoadedRuntime &rt : w.runtimes)
        if (rt.v2 != nullptr && rt.v2->stop != nullptr)
            rt.v2->stop(rt.state);

    const auto until = std::chrono::steady_clock::now() + w.config.grace;
    std::vector<bool> pool_done(w.runtimes.size(), true);
    for (std::size_t r = 0; r < w.pools.size(); ++r)
        if (w.pools[r] != nullptr)
            pool_done[r] = w.pools[r]->stop(until);
    const bool quiet = drained(w, until);
    for (std::uint32_t r = 0; r < w.runtimes.size(); ++r)
        report.calls_failed += w.table.fail_open(r, shutting_down);

    for (std::size_t r = 0; r < w.runtimes.size(); ++r) {
        const LoadedRuntime &rt = w.runtimes[r];
        if (!rt.loaded())
            continue;
        if (!pool_done[r] || (rt.driven() && !quiet)) {
            w.threads_left_behind = true;
            report.not_shut_down.push_back(rt.name + ": a thread was still inside the runtime after " +
                                           std::to_string(w.config.grace.count()) + " ms");
            continue;
        }
        if (rt.v2 != nullptr && rt.v2->shutdown != nullptr)
            rt.v2->shutdown(rt.state);
        else if (rt.v1 != nullptr && rt.v1->shutdown != nullptr)
            rt.v1->shutdown(rt.state);
    }
    w.watcher->quit();
    if (!w.threads_left_behind)
        set_running(nullptr);
    return report;
}

}  // namespace courier::worker
