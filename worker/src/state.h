/*
 * state.h — what a running Worker holds, shared by its parts.
 *
 * Written on the main thread by Worker::start() before any thread of the
 * Worker exists (the threads' creation orders it before their reads);
 * after that, only the atomics change.
 */
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "calls.h"
#include "courier/ipc/dispatch.h"
#include "courier/worker/worker.h"
#include "loader.h"

/* runtime.h's opaque v1 type: lives on the pool thread's stack for one handle(). */
struct courier_response {
    courier_call_id id;
    bool wrote;
};

namespace courier::worker {

class Pool;
class CancelWatcher;

struct Worker::State {
    State(ipc::Region &r, ipc::Waker &w, Config c);
    ~State();

    /* The policy of a call's waits: spin as configured; ended by abandon or stop, no deadline. */
    ipc::WaitPolicy call_policy() const;
    bool stop_requested() const { return stopping.load(std::memory_order_relaxed); }

    ipc::Region &region;
    ipc::Waker &waker;
    const Config config;
    /* Read by every thread: stop() has begun (the one flag threads look at). */
    std::atomic<bool> stopping{false};
    std::atomic<std::int64_t> spin_ns;
    CallTable table;
    std::vector<LoadedRuntime> runtimes;
    std::vector<RuntimeReport> reports;
    std::vector<std::unique_ptr<ipc::Dispatcher>> dispatchers;  // per runtime
    std::vector<std::unique_ptr<Pool>> pools;                   // per runtime; null when driven
    std::unique_ptr<CancelWatcher> watcher;
    std::atomic<int> in_host{0};  // runtime threads inside a host function
    /* Where start() and stop() are, on the owner's thread only: stop() runs once, after a start(). */
    enum class Phase { created, running, stopped } phase = Phase::created;
    bool threads_left_behind = false;
};

/* The host tables runtimes get; they act on the running Worker. */
const courier_host *host_v1();
const courier_host2 *host_v2();
void set_running(Worker::State *state);

/* Starts a thread with every signal blocked (PostgreSQL's stay on the main thread). */
template <typename Fn>
std::thread start_quiet_thread(Fn &&fn);

}  // namespace courier::worker

#include <pthread.h>
#include <signal.h>

template <typename Fn>
std::thread courier::worker::start_quiet_thread(Fn &&fn) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    std::thread t(std::forward<Fn>(fn));
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return t;
}
