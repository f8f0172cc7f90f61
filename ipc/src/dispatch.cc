/*
 * dispatch.cc — idle serving threads and the doorbell (protocol in dispatch.h).
 */
#include "courier/ipc/dispatch.h"

#include "courier/ipc/region.h"

namespace courier::ipc {

void notify_idle(DispatchControl &d, const Doorbell &bell, Waker &waker, SideCounters *counters) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (bell.spinner().load(std::memory_order_relaxed) == 0 &&
        d.idle.sleeping.load(std::memory_order_relaxed) != 0) {
        waker.wake(d.idle);
        bump(counters, Counter::wakeups_sent);
    } else {
        bump(counters, Counter::wakeups_elided);
    }
}

bool Dispatcher::claim(Waker &waker, Accepted *out) {
    Doorbell bell = region_.doorbell(runtime_);
    std::uint32_t index = 0;
    while (bell.claim(cursor_.load(std::memory_order_relaxed), &index)) {
        cursor_.store(index + 1 < region_.slots() ? index + 1 : 0, std::memory_order_relaxed);
        if (region_.accept(index, waker, &out->generation) != Status::ok)
            continue;  // a stale bit, or a call of a dead server's epoch
        out->index = index;
        if (bell.any())
            notify_idle(region_.dispatch(runtime_), bell, waker, nullptr);  // more calls: one more thread
        return true;
    }
    return false;
}

/* Polls the doorbell as this runtime's one spinner; true when it rang. */
bool Dispatcher::spin_for_bell(std::chrono::nanoseconds spin, const StopCheck &stop) {
    Doorbell bell = region_.doorbell(runtime_);
    if (spin.count() <= 0 || bell.spinner().exchange(1, std::memory_order_seq_cst) != 0)
        return false;
    const auto end = std::chrono::steady_clock::now() + spin;
    bool rang = false;
    for (unsigned i = 1;; ++i) {
        cpu_relax();
        if (bell.any()) {
            rang = true;
            break;
        }
        if ((i & 63) == 0 && (std::chrono::steady_clock::now() >= end || stop()))
            break;
    }
    bell.spinner().store(0, std::memory_order_seq_cst);
    return rang;
}

Status Dispatcher::next(Waker &waker, std::chrono::nanoseconds spin, const StopCheck &stop,
                        std::chrono::steady_clock::time_point deadline, Accepted *out) {
    DispatchControl &d = region_.dispatch(runtime_);
    Doorbell bell = region_.doorbell(runtime_);
    for (;;) {
        if (stop())
            return Status::stopping;
        if (claim(waker, out))
            return Status::ok;
        if (spin_for_bell(spin, stop))
            continue;
        const std::uint32_t token = waker.prepare(d.idle);
        d.idle.sleeping.fetch_add(1, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        std::chrono::nanoseconds timeout{0};
        Status s = Status::would_block;
        if (bell.any() || stop()) {
            s = Status::ok;  // look again
        } else if (deadline != std::chrono::steady_clock::time_point::max()) {
            const auto now = std::chrono::steady_clock::now();
            if (now >= deadline)
                s = Status::timeout;
            timeout = deadline - now;
        }
        if (s == Status::would_block)
            (void)waker.park(d.idle, token, timeout);
        d.idle.sleeping.fetch_sub(1, std::memory_order_seq_cst);
        if (s == Status::timeout)
            return s;
    }
}

void Dispatcher::wake_all(Waker &waker) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    waker.wake_all(region_.dispatch(runtime_).idle);
}

}  // namespace courier::ipc
