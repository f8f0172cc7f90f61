/*
 * server.cc — serving calls: one call (serve_call), the pool's loop
 * (Dispatch), and the one-thread case (serve_inline). See server.h.
 */
#include "courier/ipc/server.h"

#include <string>
#include <vector>

namespace courier::ipc {

void serve_call(ServerCall &call, const CallHandler &handler) {
    /* Reused by every call this thread serves: no allocation per call. */
    thread_local std::string fn;
    thread_local std::vector<std::byte> payload;
    Status s = call.read_function(&fn);
    if (s == Status::ok)
        s = call.read_payload(&payload);
    if (s == Status::ok) {
        handler(call, fn, payload);
    } else if (s == Status::too_large && call.request().skip_rest() == Status::ok) {
        call.respond_error("request exceeds the maximum message size of the server");
    }
    /* abandoned, server_restarted, corrupt: nobody to answer; finish() frees the slot. */
    call.finish();
}

void serve_inline(Region &region, Waker &waker, const WaitPolicy &policy,
                  std::chrono::nanoseconds call_timeout, const std::function<bool()> &stop,
                  const CallHandler &handler) {
    Dispatch dispatch(region);
    const std::atomic<std::int64_t> spin_ns{policy.spin.count()};
    dispatch.serve(waker, spin_ns, call_timeout, stop, [&](ServerCall &call) { serve_call(call, handler); });
}

bool Dispatch::pop(Job *job) {
    if (queued_.load(std::memory_order_relaxed) == 0)
        return false;
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.empty())
        return false;
    *job = queue_.front();
    queue_.pop_front();
    queued_.store(queue_.size(), std::memory_order_relaxed);
    return true;
}

std::uint32_t Dispatch::drain() {
    std::uint32_t accepted = 0;
    region_.doorbell().drain([&](std::uint32_t index) {
        std::uint64_t generation = 0;
        if (!accept_call(region_, index, &generation))
            return;
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back({index, generation});
        queued_.store(queue_.size(), std::memory_order_relaxed);
        ++accepted;
    });
    return accepted;
}

void Dispatch::serve(Waker &waker, const std::atomic<std::int64_t> &spin_ns,
                     std::chrono::nanoseconds call_timeout, const std::function<bool()> &stop,
                     const std::function<void(ServerCall &)> &run) {
    Waiter &waiter = region_.header().dispatcher;
    Doorbell bell = region_.doorbell();
    WaitPolicy policy;
    while (!stop()) {
        Job job;
        if (pop(&job) || (drain() > 0 && pop(&job))) {
            if (queued_.load(std::memory_order_relaxed) > 0)
                notify(waiter, waker, nullptr);  // more than one call: bring a helper
            WaitPolicy call_policy;
            call_policy.spin = std::chrono::nanoseconds(spin_ns.load(std::memory_order_relaxed));
            if (call_timeout.count() > 0)
                call_policy.deadline = std::chrono::steady_clock::now() + call_timeout;
            ServerCall call(region_, job.index, job.generation, waker, call_policy);
            run(call);
            continue;
        }
        const bool leader = !leader_taken_.exchange(true, std::memory_order_acq_rel);
        policy.spin = std::chrono::nanoseconds(leader ? spin_ns.load(std::memory_order_relaxed) : 0);
        wait_until(waiter, waker, policy, nullptr, [&] {
            return bell.any() || queued_.load(std::memory_order_relaxed) > 0 || stop() ? Status::ok
                                                                                      : Status::would_block;
        });
        if (leader)
            leader_taken_.store(false, std::memory_order_release);
    }
}

void Dispatch::wake_all(Waker &waker, int threads) {
    for (int i = 0; i < threads; ++i)
        waker.wake(region_.header().dispatcher);
}

}  // namespace courier::ipc
