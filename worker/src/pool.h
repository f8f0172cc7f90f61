/*
 * pool.h — threads that take a callback-mode runtime's calls.
 *
 * Each thread loops: take the next call of its runtime from the doorbell
 * (ipc::Dispatcher: idle threads are woken one per call), open it, and hand
 * it to the runtime — handle() for v2 (which may return with the call
 * still open), handle() for v1 with the whole request (the call ends when
 * it returns), or the load error when the runtime failed to load. An
 * exception or allocation failure fails that one call.
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
    void serve(const courier_call_info &call);
    void serve_v1(const courier_call_info &call);

    Worker::State &w_;
    std::uint32_t runtime_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable exited_cv_;
    std::size_t exited_ = 0;
};

}  // namespace courier::worker
