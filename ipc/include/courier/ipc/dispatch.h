/*
 * dispatch.h — serving threads take calls from a runtime's doorbell.
 *
 * Every runtime has a doorbell (a bitmap of slots whose call waits for it)
 * and a DispatchControl: the threads that serve it (a pool, or the
 * runtime's own threads) and are idle right now. A serving thread is in
 * one of three states:
 *
 *   busy       running a call; it claims from the doorbell again before it
 *              may become idle, so it needs no wakeup
 *   spinning   idle and polling the doorbell (at most one per runtime:
 *              the bell's spinner word is 0 or 1); it will see a ring by
 *              itself
 *   parked     idle and asleep on `idle` (a futex Waiter whose `sleeping`
 *              counts the parked threads)
 *
 * The ringer (ring_doorbell) sets its bit, issues a full fence and reads
 * the spinner word and `idle.sleeping`: a spinner will find the call, so the
 * wakeup is elided; otherwise one parked thread, if any, is woken — one
 * per call, never all. A thread about to park first increments
 * `idle.sleeping`, fences, and looks at the doorbell once more; a thread
 * that stops spinning clears the spinner word before that. These are Dekker
 * pairs: either the ringer sees a spinner or a sleeper, or the thread's
 * last look sees the bit. Hence no call waits while a thread is idle.
 *
 * A thread that claims a call and sees more rung bits wakes one more
 * parked thread (a chain), so a burst of calls spreads over the idle
 * threads one at a time. A ringer that reads a sleeper who has just been
 * woken by someone else wakes a second one or nobody; both are spurious
 * wakeups, never lost ones.
 *
 * The single "sleeping" flag of one Waiter cannot do this: once one of two
 * parked threads is woken and clears it, the flag says that nobody sleeps,
 * and the next ring is elided while the other thread sleeps through it.
 * That is why `sleeping` here is a count, and why a spinner is announced
 * apart from sleepers.
 *
 * A thread that finds the bell empty pays the region's owed wakes
 * (region.h) before it spins or parks: the wakes the busy threads left.
 *
 * Claiming is one fetch_and per call (Doorbell::claim) starting at a
 * cursor that moves past every claimed slot, so sessions are served in
 * turn rather than lowest slot first. A claimed slot is accepted only if
 * its call was started in the current server epoch (Region::accept).
 *
 * The spinner also watches the slot its thread served last, if that
 * session is between calls (Region::watch, region.h): it polls the slot's
 * state word beside the bell, and the session's next call, seeing the
 * watch in its begin_call, does not ring. A session that calls in a loop
 * then moves no doorbell line at all: its ring (the bell's line to the
 * session) and the spinner's claim (back) were two of the eight line
 * transfers of a spinning call (bench/README.md). The watch ends before
 * the spinner stops spinning, in one RMW that takes a call begun under it
 * (Region::end_watch): when the call begins, when the bell rings, when
 * the spin runs out. A spinner that takes the watched call while the bell
 * has rung wakes one more thread: those ringers saw the spinner and did
 * not wake anyone.
 *
 * A thread that kept the call it served (region.h, call.h) spins on that
 * call instead, as the runtime's spinner: it became the spinner when it
 * kept the call, and a thread that cannot (another one is) does not keep.
 * It polls the slot's request ring for the next frame, the bell beside it,
 * and every 64th poll the slot's state word for a recall or the client
 * gone. The request takes it straight back to work, with one RMW on a line
 * it holds (take_kept), unless the session took the call back. Anything
 * else lets the call go, then the thread goes on as any idle thread; one
 * that spun its whole budget on the kept call parks without spinning
 * again. It stops being the spinner only after its take or let-go, so no
 * other thread keeps the call while it may still take: a take finds its
 * own keep or none.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

#include "courier/ipc/doorbell.h"
#include "courier/ipc/freelist.h"
#include "courier/ipc/layout.h"
#include "courier/ipc/status.h"
#include "courier/ipc/wait.h"

namespace courier::ipc {

class Region;

/* The spinner word lives in the doorbell's line (doorbell.h), beside the bits a ringer sets. */
struct alignas(cache_line) DispatchControl {
    Waiter idle;  // futex word; sleeping counts parked threads
};

/* A call taken from a doorbell: the slot and the generation of its lease. */
struct Accepted {
    std::uint32_t index = 0;
    std::uint64_t generation = 0;
};

using StopCheck = std::function<bool()>;

/* The ringer's half: wakes one parked thread unless a spinner will see the bell. */
void notify_idle(DispatchControl &d, const Doorbell &bell, Waker &waker, SideCounters *counters);

/*
 * One runtime's end of the doorbell. Any number of threads may call next()
 * at once on one Dispatcher (or on several for the same runtime).
 */
class Dispatcher {
public:
    Dispatcher(Region &region, std::uint32_t runtime) : region_(region), runtime_(runtime) {}

    /*
     * Takes the next call, spinning up to `spin` (if no other thread
     * spins, watching slot `watch` meanwhile: the one this thread served
     * last, or nil_index) and then parking. Returns ok with *out set,
     * stopping once stop() holds, or timeout at the deadline. kept: this
     * thread kept the call *out (ServerCall::kept), which it lets go
     * unless that call's next request comes within its spin (see the
     * top); on ok, *out is that call again or another.
     */
    Status next(Waker &waker, std::chrono::nanoseconds spin, const StopCheck &stop,
                std::chrono::steady_clock::time_point deadline, Accepted *out,
                std::uint32_t watch = nil_index, bool kept = false);
    /* Wakes every parked thread, so that they look at stop() (set it first). */
    void wake_all(Waker &waker);

private:
    enum class Spun : std::uint8_t { nothing, rang, took_watched };

    bool claim(Waker &waker, Accepted *out);
    Spun spin_for_bell(std::chrono::nanoseconds spin, const StopCheck &stop, std::uint32_t watch, Waker &waker,
                       Accepted *out);
    bool spin_on_kept(const Accepted &kept, std::chrono::nanoseconds spin, const StopCheck &stop, Waker &waker,
                      bool *spent);
    SpinPause watcher_pause(std::uint32_t watch) const;

    Region &region_;
    std::uint32_t runtime_;
    std::atomic<std::uint32_t> cursor_{0};  // where the next claim starts looking
};

}  // namespace courier::ipc
