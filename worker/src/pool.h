/*
 * pool.h — threads that take a callback-mode runtime's calls.
 *
 * Each thread loops: take the next call of its runtime from the doorbell
 * (ipc::Dispatcher: idle threads are woken one per call), open it, and hand
 * it to the runtime — handle() for v2 (which may return with the call
 * still open), handle() for v1 with the whole request (the call ends when
 * it returns), or the load error when the runtime failed to load. An
 * exception or allocation failure fails that one call.
 *
 * A thread that will spin next keeps the v1 call it answered (ipc/region.h:
 * the kept call), and hands it to Dispatcher::next, which spins on it: the
 * session's next call to this runtime then comes straight to this thread.
 * v2 calls are not kept: handle() may go on after it finished the call,
 * or finish it on another thread, and the session's next request would
 * wait for a thread that is not looking.
 */
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "state.h"

namespace courier::worker {

class Pool {
public:
    Pool(Worker::State &worker, std::uint32_t runtime) : w_(worker), runtime_(runtime) {}

    void start(int threads);
    /* Waits until `until` for the threads to return (stop is requested); true when all did. */
    bool stop(std::chrono::steady_clock::time_point until);

private:
    void run();
    /* offer_keep: this thread spins next; true if it kept the call (see the top). */
    bool serve(const courier_call_info &call, bool offer_keep);
    bool serve_v1(const courier_call_info &call, bool offer_keep);

    Worker::State &w_;
    std::uint32_t runtime_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable exited_cv_;
    std::size_t exited_ = 0;
};

}  // namespace courier::worker
