/*
 * watcher.cc — the cancel watcher (see watcher.h).
 */
#include "watcher.h"

namespace courier::worker {

void CancelWatcher::start() { thread_ = start_quiet_thread([this] { run(); }); }

void CancelWatcher::poke() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    w_.waker.wake(w_.region.header().cancels);
}

void CancelWatcher::quit() {
    if (!thread_.joinable())
        return;
    quit_.store(true, std::memory_order_seq_cst);
    poke();
    thread_.join();
}

void CancelWatcher::run() {
    ipc::Waiter &self = w_.region.header().cancels;
    ipc::Doorbell bell = w_.region.cancel_bell();
    ipc::WaitPolicy policy;
    policy.spin = std::chrono::nanoseconds(0);  // cancels are rare: park at once
    bool stop_seen = false;
    while (!quit_.load(std::memory_order_relaxed)) {
        (void)ipc::wait_until(self, w_.waker, policy, nullptr, [&] {
            const bool work = bell.any() || quit_.load(std::memory_order_relaxed) ||
                              (w_.stop_requested() && !stop_seen);
            return work ? ipc::Status::ok : ipc::Status::would_block;
        });
        bell.drain([&](std::uint32_t slot) { w_.table.fire_cancel(slot); });
        if (w_.stop_requested() && !stop_seen) {
            stop_seen = true;
            for (std::uint32_t slot = 0; slot < w_.region.slots(); ++slot)
                w_.table.fire_cancel(slot);
        }
    }
}

}  // namespace courier::worker
