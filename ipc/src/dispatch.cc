/*
 * dispatch.cc — idle serving threads and the doorbell (protocol in dispatch.h).
 */
#include "courier/ipc/dispatch.h"

#include "courier/ipc/region.h"

#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char *file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char *file, int line);
#endif

namespace courier::ipc {

/*
 * The kept spin's look at the request ring. A keeper whose call the session
 * took back may still look while another thread consumes that ring: its
 * head is then stale, and the mark it reads may be payload the session has
 * since written there. What it reads can only lead to a take, which fails
 * (no keep of this runtime is on the slot while this thread is its bell's
 * spinner), so the race is benign; ThreadSanitizer is told so, here only.
 * While the keep stands nobody else consumes the ring, and the read is the
 * ring's usual one.
 */
static bool kept_request_published(const RingView &requests) {
#if defined(__SANITIZE_THREAD__)
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    const bool published = requests.frame_published();
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    return published;
#else
    return requests.frame_published();
#endif
}

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

/* The watcher's pause: it stands in the slot's server Waiter, and waits for the slot's session. */
SpinPause Dispatcher::watcher_pause(std::uint32_t watch) const {
    SlotControl *sc = region_.slot(watch);
    return SpinPause(&sc->server, &sc->client, region_.stats().server_counters(watch));
}

/*
 * Polls the doorbell as this runtime's one spinner, and the watched slot's
 * state word if the watch began; the watch ends before the spinner word
 * is cleared (see the top).
 */
Dispatcher::Spun Dispatcher::spin_for_bell(std::chrono::nanoseconds spin, const StopCheck &stop,
                                           std::uint32_t watch, Waker &waker, Accepted *out) {
    Doorbell bell = region_.doorbell(runtime_);
    if (spin.count() <= 0 || bell.spinner().exchange(1, std::memory_order_seq_cst) != 0)
        return Spun::nothing;
    const bool watching = watch < region_.slots() && region_.watch(watch, runtime_);
    /* Yields now and then: a session may need this CPU to make its call; the watched one at once. */
    SpinPause pause = watching ? watcher_pause(watch) : SpinPause(nullptr, nullptr, nullptr);
    SpinBudget budget(spin);  // from the 64th poll: most spins end before
    Spun spun = Spun::nothing;
    for (unsigned i = 1;; ++i) {
        pause(i);
        if (bell.any()) {
            spun = Spun::rang;
            break;
        }
        if (watching && region_.watched_call_begun(watch))
            break;
        if ((i & 63) == 0 && (budget.spent(std::chrono::steady_clock::now()) || stop()))
            break;
    }
    if (watching && region_.end_watch(watch, runtime_, waker, &out->generation) == Status::ok) {
        out->index = watch;
        spun = Spun::took_watched;
    }
    bell.spinner().store(0, std::memory_order_seq_cst);
    if (spun == Spun::took_watched) {
        std::atomic_thread_fence(std::memory_order_seq_cst);  // the clear before the look: ringers elided for us
        if (bell.any())
            notify_idle(region_.dispatch(runtime_), bell, waker, nullptr);
    }
    return spun;
}

/*
 * Spins on a kept call (see the top), as its bell's spinner since the keep
 * (Region::keep). Returns true when it took the call's next request; else
 * it has let go of the call, or the session took it back. The let-go comes
 * after the last look at the ring, never before one: a request it did not
 * see is then the session's to begin (region.h). The take or the let-go
 * comes before the spinner word is cleared: until then no other thread
 * can keep the call, so a take never takes another thread's keep.
 */
bool Dispatcher::spin_on_kept(const Accepted &kept, std::chrono::nanoseconds spin, const StopCheck &stop,
                              Waker &waker, bool *spent) {
    Doorbell bell = region_.doorbell(runtime_);
    SideCounters *counters = region_.stats().server_counters(kept.index);
    const RingView requests = region_.to_server(kept.index);
    SpinPause pause = watcher_pause(kept.index);
    SpinBudget budget(spin);
    bool took = false;
    for (unsigned i = 1; spin.count() > 0; ++i) {
        pause(i);
        if (kept_request_published(requests)) {
            took = region_.take_kept(kept.index, runtime_);
            break;
        }
        if (bell.any())
            break;
        if (i == 64)  // the answer's notify, off the session's path: a session asleep on it wakes now
            notify(region_.slot(kept.index)->client, waker, counters);
        if ((i & 63) == 0 && ((*spent = budget.spent(std::chrono::steady_clock::now())) || stop() ||
                              region_.kept_call_ending(kept.index)))
            break;
    }
    if (!took) {
        region_.let_go(kept.index, kept.generation, runtime_, waker, counters);
        bell.spinner().store(0, std::memory_order_seq_cst);
        return false;  // this thread claims from the bell next (next)
    }
    bell.spinner().store(0, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // the clear before the look: ringers elided for us
    if (bell.any())
        notify_idle(region_.dispatch(runtime_), bell, waker, nullptr);
    bump(counters, Counter::kept_calls);
    return true;
}

Status Dispatcher::next(Waker &waker, std::chrono::nanoseconds spin, const StopCheck &stop,
                        std::chrono::steady_clock::time_point deadline, Accepted *out, std::uint32_t watch,
                        bool kept) {
    DispatchControl &d = region_.dispatch(runtime_);
    Doorbell bell = region_.doorbell(runtime_);
    if (kept) {
        bool spent = false;
        if (spin_on_kept(*out, spin, stop, waker, &spent))
            return Status::ok;
        if (spent)
            spin = std::chrono::nanoseconds(0);  // its budget went on the kept call: park
    }
    for (;;) {
        if (stop())
            return Status::stopping;
        if (claim(waker, out))
            return Status::ok;
        region_.pay_owed_wakes(0, region_.slots(), waker, nullptr);  // the bell is empty: pay what is owed
        const Spun spun = spin_for_bell(spin, stop, watch, waker, out);
        if (spun == Spun::took_watched)
            return Status::ok;
        if (spun == Spun::rang)
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
