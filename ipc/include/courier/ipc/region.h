/*
 * region.h — the control region: slots, their ownership, and epochs.
 *
 * Slot ownership is one atomic word per slot:
 *
 *   held_by_client      set by lease(), cleared by release() or abandon()
 *   held_by_server      set by the client when a call starts (before the
 *                       doorbell rings), cleared by the server when it has
 *                       published its last frame for that call
 *   accepted_by_server  set by the one serving thread that took the call
 *                       from the doorbell, cleared with held_by_server
 *   watched_by_server   set by a spinning serving thread while the slot's
 *                       session is between calls (the word is exactly
 *                       held_by_client): it polls the word, so the next
 *                       call needs no doorbell (dispatch.h); cleared by
 *                       that thread when it takes the call or gives up.
 *                       Bits 8..15 name its runtime meanwhile.
 *   recalled_by_client  set by a session whose previous call a thread
 *                       kept (below), and that begins its next call the
 *                       usual way; cleared with held_by_server
 *   kept_by_server      set by a serving thread after the answer that
 *                       says it keeps the call (below), with its runtime
 *                       in bits 16-23; cleared by that thread when it
 *                       takes the next request or lets go, or by the
 *                       session when it takes the call back
 *
 * The slot goes back to the free list when the word drops to zero, and
 * exactly the party whose clear made it zero pushes it ("release is by
 * whoever touched the slot last"). Hence a slot is never reused while the
 * server may still write into it: the server's bit is set for the whole
 * time it may touch the rings. A client that stops waiting (cancel,
 * timeout, ERROR, exit) calls abandon(), which wakes a server thread
 * parked on the slot's rings and rings the cancel bell for the worker's
 * cancel watcher (the runtime may hold the call with no thread on the
 * slot); the server drops its late response, and its clear returns the
 * slot.
 *
 * A session keeps its slot between calls. The next call may begin only
 * once the server has let go of the previous one: begin_call() says
 * would_block until then, and the server wakes a client that sleeps on it
 * (ServerCall::finish lets go first, then wakes).
 *
 * The watched slot: begin_call()'s fetch_or returns the word, so a session
 * learns in the RMW it does anyway whether a thread watches its slot, and
 * for which runtime (in the same word: two runtimes' spinners may race for
 * one slot, and only the winner's runtime may be read). If it is the
 * call's runtime, the session does not ring; its request notifies
 * the slot's server Waiter, as every request does (a thread may take a
 * call before its request is written). The watcher ends the watch with one
 * RMW that takes a call begun under it (if it is for its runtime:
 * call_runtime, written before the session's fetch_or) or clears the bit.
 * Both sides' RMWs are on one word, so no call falls between them.
 *
 * The kept call: a serving thread that answers a call and will spin for
 * the next may keep the call instead of letting go: held_by_server and
 * accepted_by_server stay set, the answer's last frame says so
 * (frame_kept), and then it sets kept_by_server. The session's next call, if it
 * is for the same runtime, fits one frame and finds the server epoch
 * unchanged, is written straight into the request ring, with no
 * begin_call and no bell: the keeper polls that ring's next frame, and
 * takes the request by clearing kept_by_server (take_kept). So the
 * session does not write the state word at all, and the keeper's two
 * RMWs find the line in its own cache. Who holds the call while the
 * request waits is settled by that bit alone, in RMWs on the one word:
 *   - the keeper takes the request (take_kept), and serves it;
 *   - or it stops keeping (the bell rang, its spin ran out, recalled,
 *     the client gone, the worker stopping) and lets go (let_go: a CAS
 *     that clears the serving bits only while kept_by_server is set,
 *     then the wake). It looks at the request ring before, never after;
 *   - or the session takes the call back (revoke_kept, the same CAS): its
 *     wait for the answer found the request not taken at its 64th poll or
 *     before it parks, so the keeper is not running (preempted among more
 *     sessions than CPUs) and the call must not wait for it.
 * A thread keeps only as the spinner of the call's bell (may_keep; one
 * that cannot be, because another thread is, answers without keeping),
 * and it stops being the spinner only after its take or let-go: so while
 * it may take, no other thread sets the bit, and a take finds its own
 * keep or none: the keep names its runtime, because after a take-back the
 * session's next call may be another runtime's, kept by that bell's
 * spinner (and a slot with the bit set is never free). Between the
 * answer and the keep it releases the request
 * frame: a session that takes the call back rings for a thread that reads
 * the request ring from its head, which must be past the old request. A
 * session that reads the answer before the keep cannot take the call back
 * yet, and waits, as for a keeper that runs.
 * The keeper that took a request sets the bit again when it keeps the
 * call after answering it, maybe before the session has looked: so every
 * keep flips kept_phase too, the answer carries the phase
 * (frame_kept_phase), and the session takes back only the keep of the
 * answer it read. One bit is enough: the next keep but one comes after
 * the session's next request, which comes after it read this answer.
 * In the last two cases the session, finding held_by_server clear and no
 * answer in its ring, knows the request was not read: it begins the call
 * then and rings the bell for it (Endpoint::begin_after_let_go), with the
 * request already in the ring. A keeper whose take finds the bit clear
 * serves nothing. A session that may not take the kept path (another
 * runtime, a longer request) sets recalled_by_client, which the keeper
 * reads every 64th poll, and waits in begin_call as after any call; the
 * recall is a CAS that sets the bit only while held_by_server is set, so
 * a recall after the let-go leaves nothing behind. model/slots.pml
 * (-DKEEP) checks this.
 *
 * Owed wakes: a serving thread that lets go of a call whose client
 * sleeps, while more calls wait in its runtime's bell, does not wake that
 * client: it sets the slot's bit in the owed-wakes bitmap (laid out as a
 * bell) and goes on to the next call. In the default placement the wake
 * syscall was where the worker lost its CPU, to the session it woke, with
 * calls waiting behind it: 0.26 times a call at 64 sessions, and nearly
 * every call slept for its answer (bench/README.md). Owed, the wake is
 * made by a session ending a call (up to owed_wakes_per_call; it has a
 * CPU, and a session it lets run takes that CPU from a session, not from
 * the worker), by a serving thread that finds its bell empty (all of
 * them, before it spins or parks), and, when every thread that could make
 * it is inside a long call, by the client itself: a slot's client parks
 * for owed_wake_recheck at a time, backing off (wait.h). A paid wake is a
 * notify, so a client that woke by itself meanwhile is not woken, and one
 * whose slot has changed hands gets a spurious wakeup; a slot owed twice
 * is paid once. A wake is never owed with the bell empty, so with fewer
 * calls than threads nothing changes (model/slots.pml checks that a wake
 * is left to the backstop only while a thread is inside a call).
 *
 * Generations: lease() bumps the slot's generation; a handle is (index,
 * generation), and every frame carries the generation of its call, so a
 * stale handle or a late frame is detected in O(1).
 *
 * Epochs: a serving process calls begin_server_epoch() when it starts,
 * before any of its threads may take a call. It clears the server's bits
 * on every slot (the old server will never finish those calls), releases
 * slots whose client is gone too, and wakes every client on a slot, not
 * only those whose call it cleared (a server may have published its
 * response and let go, then died before its wake). Those still waiting
 * see the epoch change, fail the call with server_restarted and abandon
 * the slot, whose rings may hold the dead server's bytes. A
 * client that read the old epoch just before the scan and set its bit just
 * after it is caught by accept(), which refuses (and lets go of) any call
 * whose epoch is not the current one. It also forgets the dead process's
 * idle threads (DispatchControl, and the bell's spinner word): one that
 * died spinning would otherwise leave every later ring elided; and their
 * watches: it clears watched_by_server on every slot and rings the bell
 * for a call of the new epoch begun under a dead watcher, which did not
 * ring. Hence it runs before any serving thread of the new process starts.
 *
 * Who writes what: the free-list head and links, ownership words and
 * doorbells are written by clients and servers with atomic RMWs; owner_pid
 * and generation by the leasing client; call_epoch by the client before it
 * sets held_by_server (release), read by the server after it sees the bit
 * (acquire); the server epoch only by begin_server_epoch().
 *
 * The region stores indexes and offsets only, never pointers, so the same
 * code works over PostgreSQL's fixed shared memory (same address in every
 * backend) and Boost.Interprocess segments (different addresses).
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "courier/ipc/dispatch.h"
#include "courier/ipc/doorbell.h"
#include "courier/ipc/freelist.h"
#include "courier/ipc/layout.h"
#include "courier/ipc/ring.h"
#include "courier/ipc/stats.h"
#include "courier/ipc/status.h"
#include "courier/ipc/wait.h"

namespace courier::ipc {

inline constexpr std::uint64_t region_magic = 0x4e4f494745524f43ull;  // "COREGION"
inline constexpr std::uint32_t region_version = 7;

/* How long a client parks before it looks again for an answer whose wake may be owed (wait.h). */
inline constexpr std::chrono::nanoseconds owed_wake_recheck = std::chrono::milliseconds(1);

/* Owed wakes a session pays when it ends a call (see the top). */
inline constexpr std::uint32_t owed_wakes_per_call = 2;

enum SlotStateBits : std::uint32_t {
    held_by_client = 1u << 0,
    held_by_server = 1u << 1,
    accepted_by_server = 1u << 2,  // a server thread took the call
    watched_by_server = 1u << 3,   // a spinning server thread polls this word (see the top)
    recalled_by_client = 1u << 4,  // the session wants its kept call let go (see the top)
    kept_by_server = 1u << 5,      // the serving thread keeps the call, its next request not taken (see the top)
    kept_phase = 1u << 6,          // flipped by every keep (see the top)
};
inline constexpr unsigned kept_runtime_shift = 16;
inline constexpr std::uint32_t kept_runtime_bits = 0xffu << kept_runtime_shift;
/* A keep names its runtime: a thread of another runtime's bell may keep the call after a take-back. */
inline constexpr std::uint32_t kept_for(std::uint32_t runtime) {
    return kept_by_server | runtime << kept_runtime_shift;
}
/* What finish_serving clears: everything the server's side holds. */
inline constexpr std::uint32_t serving_bits =
    held_by_server | accepted_by_server | recalled_by_client | kept_by_server | kept_phase | kept_runtime_bits;
inline constexpr unsigned watch_runtime_shift = 8;
inline constexpr std::uint32_t watch_bits = watched_by_server | 0xffu << watch_runtime_shift;
inline constexpr std::uint32_t watched_by(std::uint32_t runtime) {
    return watched_by_server | runtime << watch_runtime_shift;
}
inline constexpr std::uint32_t watching_runtime(std::uint32_t state) { return (state >> watch_runtime_shift) & 0xffu; }

struct alignas(cache_line) RegionHeader {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t slots;
    std::uint64_t ring_size;
    std::uint64_t max_message_size;
    std::uint64_t region_size;
    std::uint32_t runtimes;
    /* The cap on Waiters spinning at once: spinners_per_cpu a usable CPU, or no_spinner_cap. Read at every
     * wait, so not on the line of the count, which the waiters write. */
    std::uint32_t max_spinners;
    alignas(cache_line) std::atomic<std::uint64_t> freelist_head;
    alignas(cache_line) std::atomic<std::uint64_t> server_epoch;
    Waiter cancels;  // the worker's cancel watcher parks here (futex)
    /* Waiters spinning right now. */
    alignas(cache_line) std::atomic<std::uint32_t> spinners;
};

/*
 * One slot. Writer → reader, and the edge that orders them:
 *   state        SlotStateBits; client and server, atomic RMWs only (the
 *                party whose clear makes it zero pushes the slot free)
 *   owner_pid    the leasing client, after lease(); read by courier.slots()
 *                and the exporter only (relaxed: a label, not a protocol)
 *   generation   bumped by lease() before the handle is returned; read by
 *                the server after accept() (acquire on state) and checked
 *                against every frame
 *   call_epoch   the client, before it sets held_by_server (seq_cst RMW);
 *                the server after it sees the bit, and begin_server_epoch()
 *   call_runtime the same, for the runtime the call is for
 *   client       the backend's Waiter: it alone parks on it, the server wakes it
 *   server       the serving thread's Waiter while it holds the call
 *   to_server    request ring: the client produces, the server consumes
 *   to_client    response ring: the server produces, the client consumes
 */
struct alignas(cache_line) SlotControl {
    std::atomic<std::uint32_t> state;
    std::atomic<std::int32_t> owner_pid;
    std::atomic<std::uint64_t> generation;
    std::atomic<std::uint64_t> call_epoch;  // server epoch the call started in
    std::atomic<std::uint32_t> call_runtime;
    Waiter client;
    Waiter server;
    RingHeader to_server;
    RingHeader to_client;
};

struct SlotHandle {
    std::uint32_t index = nil_index;
    std::uint64_t generation = 0;
    bool valid() const { return index != nil_index; }
};

class Region {
public:
    Region() = default;
    /* Formats `base` (layout.region_size bytes). Only before sharing. */
    static Region create(void *base, const RegionLayout &layout, StatsView stats);
    /* Validates an existing region against layout; corrupt if it does not match. */
    static Status attach(void *base, const RegionLayout &layout, StatsView stats, Region *out);

    const RegionLayout &layout() const { return layout_; }
    RegionHeader &header() const { return *header_; }
    const StatsView &stats() const { return stats_; }
    std::uint32_t slots() const { return layout_.params.slots; }
    std::uint32_t runtimes() const { return layout_.params.runtimes; }
    std::uint64_t max_message_size() const { return layout_.params.max_message_size; }
    /* Calls waiting for runtime r; runtime == runtimes() is the cancel bell. */
    Doorbell doorbell(std::uint32_t runtime) const { return bell_at(std::min(runtime, runtimes())); }
    Doorbell cancel_bell() const { return doorbell(runtimes()); }
    /* Slots whose sleeping client a serving thread left for others to wake (see the top). */
    Doorbell owed_wakes() const { return bell_at(runtimes() + 1); }
    DispatchControl &dispatch(std::uint32_t runtime) const;
    /* The policy with the region's cap on concurrent spinners applied. */
    WaitPolicy with_spinner_cap(WaitPolicy policy) const {
        if (header_->max_spinners == no_spinner_cap)
            return policy;
        policy.spinners = &header_->spinners;
        policy.max_spinners = header_->max_spinners;
        return policy;
    }
    /*
     * For a host whose server runs on CPUs no client runs on: a spinning
     * client takes no CPU from the server there, so any number may spin
     * (wait.h). Before clients attach.
     */
    void lift_spinner_cap() { header_->max_spinners = no_spinner_cap; }
    FreeList freelist() const { return freelist_; }

    /*
     * Where things are. Defined here, as every accessor a call uses many
     * times: an out-of-line call for an address sum cost more than the sum.
     */
    SlotControl *slot(std::uint32_t index) const { return index < layout_.params.slots ? slot_at(index) : nullptr; }
    RingView to_server(std::uint32_t index) const {
        return RingView(&slot_at(index)->to_server, base_ + layout_.rings_offset + index * layout_.ring_stride,
                        layout_.params.ring_size);
    }
    RingView to_client(std::uint32_t index) const {
        return RingView(&slot_at(index)->to_client,
                        base_ + layout_.rings_offset + index * layout_.ring_stride + layout_.params.ring_size,
                        layout_.params.ring_size);
    }

    /* --- client side --- */
    /* no_slot when the free list is empty (counted); corrupt on a bad index. */
    Status lease(std::int32_t pid, SlotHandle *out);
    /* Gives back a slot with no call in flight. */
    Status release(const SlotHandle &handle);
    /*
     * Marks the start of a call for `runtime` and returns its epoch: sets
     * held_by_server. would_block while the previous call's server has not
     * let go (wait on the slot's client Waiter: the server wakes it). The
     * rings are empty between calls, so nothing is reset. *watched: a
     * thread of `runtime` watches the slot, so the call must not ring.
     */
    Status begin_call(const SlotHandle &handle, std::uint32_t runtime, std::uint64_t *epoch,
                      bool *watched = nullptr);
    /* The client stops waiting; the slot is no longer the caller's. */
    void abandon(const SlotHandle &handle, Waker &waker);
    /* Asks the thread that kept the slot's call to let go (see the top); nothing if it has. */
    void recall(const SlotHandle &handle);
    /* Rings runtime's doorbell for `handle`; wakes one idle server thread if needed. */
    void ring_doorbell(std::uint32_t runtime, const SlotHandle &handle, Waker &waker,
                       SideCounters *counters);

    /* --- server side --- */
    /* Cancels the calls of the previous epoch and wakes their clients. */
    std::uint64_t begin_server_epoch(Waker &waker);
    std::uint64_t server_epoch() const {
        return header_->server_epoch.load(std::memory_order_acquire);
    }
    /*
     * Claims the call on `index` for the calling thread: ok with the
     * lease's generation; stale when there is none or another thread took
     * it; server_restarted (and the call let go, its client woken) when it
     * began in an earlier epoch.
     */
    Status accept(std::uint32_t index, Waker &waker, std::uint64_t *generation);
    /* Whether the client of the call `generation` on `index` has gone. */
    bool client_gone(std::uint32_t index, std::uint64_t generation) const {
        const SlotControl *sc = slot_at(index);
        return (sc->state.load(std::memory_order_acquire) & held_by_client) == 0 ||
               sc->generation.load(std::memory_order_relaxed) != generation;
    }
    /* The server is done with the call; returns the slot if abandoned. */
    void finish_serving(std::uint32_t index);
    /*
     * Before the answer that says so: the serving thread becomes the
     * spinner of the call's bell, to keep the call on `index` (see the
     * top); false if another thread spins there. *phase: the phase of the
     * keep to come, which the answer carries (frame_kept_phase): only this
     * thread changes it until then (the session takes back only a keep).
     */
    bool may_keep(std::uint32_t index, bool *phase);
    /* After that answer: keeps the call (sets kept_for its runtime, flips kept_phase). */
    void keep(std::uint32_t index) {
        SlotControl *sc = slot_at(index);
        sc->state.fetch_xor(kept_for(sc->call_runtime.load(std::memory_order_relaxed)) | kept_phase,
                            std::memory_order_acq_rel);
    }
    /* The keeper of `runtime` takes the kept call's next request; false if it no longer holds the call. */
    bool take_kept(std::uint32_t index, std::uint32_t runtime);
    /*
     * The keeper lets go of the kept call on `index`, unless the session
     * took it back: then wakes its client, or owes the wake (wake_or_owe),
     * unless the client has gone.
     */
    void let_go(std::uint32_t index, std::uint64_t generation, std::uint32_t runtime, Waker &waker,
                SideCounters *counters);
    /*
     * The session takes back its kept call, of the keep by `runtime` of
     * `phase`, whose request the keeper has not taken; true if it did.
     */
    bool revoke_kept(const SlotHandle &handle, std::uint32_t runtime, bool phase);
    /* Whether the kept call on `index` should be let go: recalled, or its client gone (one load). */
    bool kept_call_ending(std::uint32_t index) const {
        return (slot_at(index)->state.load(std::memory_order_relaxed) & (held_by_client | recalled_by_client)) !=
               held_by_client;
    }
    /* Starts watching `index` for `runtime` if its session is between calls. */
    bool watch(std::uint32_t index, std::uint32_t runtime);
    /* Whether a call has begun on a watched slot (one load: the watcher polls it). */
    bool watched_call_begun(std::uint32_t index) const {
        return (slot_at(index)->state.load(std::memory_order_relaxed) & held_by_server) != 0;
    }
    /*
     * Ends the watch: takes a call of `runtime` begun under it (as accept()
     * does: ok, or server_restarted), else clears the watch (stale).
     */
    Status end_watch(std::uint32_t index, std::uint32_t runtime, Waker &waker, std::uint64_t *generation);
    /*
     * After the let-go of a call for `runtime`: the Dekker half of notify
     * for the slot's client, which is woken if it sleeps, unless calls wait
     * in runtime's bell: then its wake is owed (see the top).
     */
    void wake_or_owe(std::uint32_t index, std::uint32_t runtime, Waker &waker, SideCounters *counters);
    /* Pays up to `most` owed wakes, looking from slot `from` on; returns how many. */
    std::uint32_t pay_owed_wakes(std::uint32_t from, std::uint32_t most, Waker &waker, SideCounters *counters);
    /* Wakes every server thread parked on a slot (the worker is stopping). */
    void wake_servers(Waker &waker);

    /* Slots leased or being served (for slots_in_use and tests). */
    std::uint32_t slots_in_use() const;

private:
    bool end_kept(std::uint32_t index, std::uint32_t mask, std::uint32_t want);
    /* An index the caller knows is in range (a leased or accepted slot's). */
    SlotControl *slot_at(std::uint32_t index) const {
        return reinterpret_cast<SlotControl *>(base_ + layout_.slots_offset + index * layout_.slot_stride);
    }
    Doorbell bell_at(std::uint32_t k) const {
        auto *words = reinterpret_cast<std::atomic<std::uint64_t> *>(base_ + layout_.bells_offset + k * layout_.bell_stride);
        return Doorbell(words, layout_.params.slots);
    }
    void push_free(std::uint32_t index);
    Status admit(std::uint32_t index, Waker &waker, std::uint64_t *generation);
    void forget_dead_watch(std::uint32_t index, std::uint64_t epoch);

    RegionLayout layout_{};
    std::byte *base_ = nullptr;
    RegionHeader *header_ = nullptr;
    FreeList freelist_;
    StatsView stats_;
};

}  // namespace courier::ipc
