/*
 * server.h — the serving side's main loop, for a host without a pool.
 *
 * Serving threads park on the region's dispatcher Waiter until a doorbell
 * rings, drain the doorbell, accept each rung slot that has a call no one
 * took yet, and run it (Dispatch below). serve_inline() is one such thread,
 * which is what the demo, the tests and the benchmarks need.
 */
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>

#include "courier/ipc/call.h"

namespace courier::ipc {

/*
 * Handles one call: the request has been read whole. The handler responds
 * through `call` (respond_all, respond_error or a streaming writer).
 */
using CallHandler =
    std::function<void(ServerCall &call, std::string_view fn, std::span<const std::byte> payload)>;

/* Reads the request, calls the handler, finishes the call. */
void serve_call(ServerCall &call, const CallHandler &handler);

/*
 * Serves calls on this thread until stop() returns true: a Dispatch of one
 * thread. A call whose client stops sending for longer than call_timeout
 * (0: never) is given up, so one dead client cannot stall the loop; its
 * slot stays leased to it.
 */
void serve_inline(Region &region, Waker &waker, const WaitPolicy &policy,
                  std::chrono::nanoseconds call_timeout, const std::function<bool()> &stop,
                  const CallHandler &handler);

/*
 * Dispatch — serving threads that take calls from the doorbell themselves.
 *
 * Every thread of a pool runs serve() with the same Dispatch. There is no
 * dispatcher thread to hand calls over: a thread that finds nothing queued
 * drains the doorbell itself, accepts the rung calls into a small queue in
 * this process, and runs the first; when it queued more than one it wakes
 * another thread for the rest. Waiting threads park on the region's
 * dispatcher Waiter (which must be a futex Waiter, latch_proc -1); only one
 * of them, the leader, spins first, so idle threads do not take the CPU the
 * busy ones and the callers need.
 */
class Dispatch {
public:
    explicit Dispatch(Region &region) : region_(region) {}

    /*
     * One thread's loop; returns when stop() holds. spin_ns is read on every
     * wait, so a host can change it while threads run. A call whose client
     * stops sending for longer than call_timeout (0: never) is given up.
     */
    void serve(Waker &waker, const std::atomic<std::int64_t> &spin_ns, std::chrono::nanoseconds call_timeout,
               const std::function<bool()> &stop, const std::function<void(ServerCall &)> &run);
    /* Wakes `threads` parked threads (to let them see stop()). */
    void wake_all(Waker &waker, int threads);

private:
    struct Job {
        std::uint32_t index;
        std::uint64_t generation;
    };
    bool pop(Job *job);
    std::uint32_t drain();

    Region &region_;
    std::mutex mutex_;
    std::deque<Job> queue_;
    std::atomic<std::size_t> queued_{0};
    std::atomic<bool> leader_taken_{false};
};

}  // namespace courier::ipc
