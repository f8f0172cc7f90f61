/*
 * region.cc — slot ownership and epochs (protocol in region.h).
 */
#include "courier/ipc/region.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>

namespace courier::ipc {

Region Region::create(void *base, const RegionLayout &layout, StatsView stats) {
    std::memset(base, 0, layout.region_size);
    auto *bytes = static_cast<std::byte *>(base);
    auto *h = new (bytes + layout.header_offset) RegionHeader{};
    h->magic = region_magic;
    h->version = region_version;
    h->slots = layout.params.slots;
    h->ring_size = layout.params.ring_size;
    h->max_message_size = layout.params.max_message_size;
    h->region_size = layout.region_size;
    h->runtimes = layout.params.runtimes;
    init_waiter(h->cancels);
    /*
     * The cap was CPUs - 1, to leave the serving side a CPU, then one per
     * CPU once a spinner yielded every few µs (bench/README.md, "One
     * spinner per CPU"). Since sessions pay each other's owed wakes, a
     * session that may not spin parks and costs a futex wake, which the
     * spinners' yields do not: four per CPU (spinners_per_cpu, wait.h).
     */
    h->max_spinners = spinners_per_cpu * usable_cpus();
    for (std::uint32_t r = 0; r < layout.params.runtimes; ++r) {
        auto *d = new (bytes + layout.dispatch_offset + r * sizeof(DispatchControl)) DispatchControl{};
        init_waiter(d->idle);
    }
    auto *links = reinterpret_cast<std::atomic<std::uint32_t> *>(bytes + layout.freelist_offset);
    for (std::uint32_t i = 0; i < layout.params.slots; ++i) {
        new (&links[i]) std::atomic<std::uint32_t>(0);
        SlotControl *sc = new (bytes + layout.slots_offset + i * layout.slot_stride) SlotControl{};
        init_waiter(sc->client);
        init_waiter(sc->server);
    }
    auto *words = reinterpret_cast<std::atomic<std::uint64_t> *>(bytes + layout.bells_offset);
    for (std::size_t w = 0; w < layout.bell_stride / sizeof(std::uint64_t) * (layout.params.runtimes + extra_bells); ++w)
        new (&words[w]) std::atomic<std::uint64_t>(0);
    Region r;
    r.layout_ = layout;
    r.base_ = bytes;
    r.header_ = h;
    r.stats_ = stats;
    r.freelist_ = FreeList(&h->freelist_head, links, layout.params.slots);
    r.freelist_.init_full();
    return r;
}

Status Region::attach(void *base, const RegionLayout &layout, StatsView stats, Region *out) {
    auto *bytes = static_cast<std::byte *>(base);
    auto *h = reinterpret_cast<RegionHeader *>(bytes + layout.header_offset);
    if (h->magic != region_magic || h->version != region_version ||
        h->slots != layout.params.slots || h->ring_size != layout.params.ring_size ||
        h->max_message_size != layout.params.max_message_size ||
        h->region_size != layout.region_size || h->runtimes != layout.params.runtimes)
        return Status::corrupt;
    Region r;
    r.layout_ = layout;
    r.base_ = bytes;
    r.header_ = h;
    r.stats_ = stats;
    r.freelist_ = FreeList(&h->freelist_head,
                           reinterpret_cast<std::atomic<std::uint32_t> *>(bytes + layout.freelist_offset),
                           layout.params.slots);
    *out = r;
    return Status::ok;
}

DispatchControl &Region::dispatch(std::uint32_t runtime) const {
    return *reinterpret_cast<DispatchControl *>(base_ + layout_.dispatch_offset +
                                                std::min(runtime, runtimes() - 1) * sizeof(DispatchControl));
}

Status Region::lease(std::int32_t pid, SlotHandle *out) {
    FreeListCounts counts;
    std::uint32_t index = nil_index;
    const Status s = freelist_.pop(&index, &counts);
    if (stats_.valid() && counts.cas_retries != 0)
        stats_.add(GlobalCounter::freelist_cas_retries, counts.cas_retries);
    if (s == Status::no_slot) {
        if (stats_.valid())
            stats_.add(GlobalCounter::freelist_empty);
        return s;
    }
    if (s != Status::ok) {
        if (stats_.valid())
            stats_.add(GlobalCounter::corrupt_frames);
        return s;
    }
    SlotControl *sc = slot(index);
    std::uint32_t expected = 0;
    /* A slot on the free list is owned by nobody; anything else is corruption. */
    if (!sc->state.compare_exchange_strong(expected, held_by_client, std::memory_order_acq_rel)) {
        if (stats_.valid())
            stats_.add(GlobalCounter::corrupt_frames);
        return Status::corrupt;
    }
    to_server(index).discard();
    to_client(index).discard();
    init_waiter(sc->client);
    init_waiter(sc->server);
    sc->owner_pid.store(pid, std::memory_order_relaxed);
    const std::uint64_t gen = sc->generation.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (stats_.valid()) {
        stats_.add(GlobalCounter::leases);
        stats_.header().slots_in_use.fetch_add(1, std::memory_order_relaxed);
    }
    *out = SlotHandle{index, gen};
    return Status::ok;
}

void Region::push_free(std::uint32_t index) {
    slot(index)->owner_pid.store(0, std::memory_order_relaxed);
    FreeListCounts counts;
    if (freelist_.push(index, &counts) != Status::ok && stats_.valid())
        stats_.add(GlobalCounter::corrupt_frames);
    if (stats_.valid()) {
        if (counts.cas_retries != 0)
            stats_.add(GlobalCounter::freelist_cas_retries, counts.cas_retries);
        stats_.add(GlobalCounter::releases);
        stats_.header().slots_in_use.fetch_sub(1, std::memory_order_relaxed);
    }
}

static bool handle_current(const SlotControl *sc, const SlotHandle &h) {
    return sc != nullptr && sc->generation.load(std::memory_order_acquire) == h.generation;
}

Status Region::release(const SlotHandle &handle) {
    SlotControl *sc = slot(handle.index);
    if (!handle_current(sc, handle))
        return Status::stale;
    const std::uint32_t prev = sc->state.fetch_and(~held_by_client, std::memory_order_acq_rel);
    if ((prev & held_by_client) == 0)
        return Status::stale;
    if ((prev & ~held_by_client) == 0)
        push_free(handle.index);  // else the server's let-go, or a watcher's end, frees it
    return Status::ok;
}

/*
 * The server may be parked on this slot's rings (a full response ring, a
 * request still coming): wake it, so that it sees the client gone. The
 * runtime may also hold the call with no thread on the slot at all: the
 * cancel bell tells the worker's watcher, which tells the runtime.
 */
void Region::abandon(const SlotHandle &handle, Waker &waker) {
    SlotControl *sc = slot(handle.index);
    if (!handle_current(sc, handle))
        return;
    const std::uint32_t prev = sc->state.fetch_and(~held_by_client, std::memory_order_acq_rel);
    if ((prev & held_by_client) == 0)
        return;
    if (stats_.valid())
        stats_.add(GlobalCounter::abandons);
    if ((prev & held_by_server) == 0) {
        if ((prev & ~held_by_client) == 0)
            push_free(handle.index);  // else a watcher's end frees it
        return;
    }
    cancel_bell().ring(handle.index);
    notify(header_->cancels, waker, nullptr);
    notify(sc->server, waker, nullptr);
}

Status Region::begin_call(const SlotHandle &handle, std::uint32_t runtime, std::uint64_t *epoch,
                          bool *watched) {
    SlotControl *sc = slot(handle.index);
    if (!handle_current(sc, handle))
        return Status::stale;
    if (sc->state.load(std::memory_order_acquire) & held_by_server)
        return Status::would_block;  // the previous call's server has not let go yet
    /* Read the epoch before claiming the server: a new epoch that starts
     * in between either clears the bit in its scan or, if the scan came
     * first, accept() refuses the call; either way it fails, never hangs. */
    const std::uint64_t e = header_->server_epoch.load(std::memory_order_acquire);
    sc->call_epoch.store(e, std::memory_order_relaxed);
    sc->call_runtime.store(runtime, std::memory_order_relaxed);
    const std::uint32_t prev = sc->state.fetch_or(held_by_server, std::memory_order_seq_cst);
    if (watched != nullptr)
        *watched = (prev & watched_by_server) && watching_runtime(prev) == runtime;
    *epoch = e;
    return Status::ok;
}

/*
 * A thread may already have taken this call and parked on the slot for its
 * first frame: a bit a dead server left in the bell (begin_server_epoch
 * fails those calls but cannot clear the bit) names the slot again once a
 * new lease begins a call on it, and the new server's thread accepts that
 * call before its frame is published. The frame's publisher wakes it; the
 * fence in notify_idle orders the frame before the read of `sleeping`, the
 * Dekker pair with the server's announce (model/slots.pml, NO_FIRST_NOTIFY).
 * On the fast path this is one load of a line nobody writes.
 */
void Region::ring_doorbell(std::uint32_t runtime, const SlotHandle &handle, Waker &waker,
                           SideCounters *counters) {
    Doorbell bell = doorbell(runtime);
    bell.ring(handle.index);
    notify_idle(dispatch(runtime), bell, waker, counters);
    Waiter &server = slot(handle.index)->server;
    if (server.sleeping.load(std::memory_order_relaxed) != 0) {
        waker.wake(server);
        bump(counters, Counter::wakeups_sent);
    }
}

/* Owed wakes: see the top of region.h. The bell's look is all that notify() lacks. */
void Region::wake_or_owe(std::uint32_t index, std::uint32_t runtime, Waker &waker, SideCounters *counters) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    Waiter &client = slot(index)->client;
    if (client.sleeping.load(std::memory_order_relaxed) == 0) {
        bump(counters, Counter::wakeups_elided);
    } else if (doorbell(runtime).any()) {
        owed_wakes().ring(index);
        bump(counters, Counter::wakeups_owed);
    } else {
        waker.wake(client);
        bump(counters, Counter::wakeups_sent);
    }
}

std::uint32_t Region::pay_owed_wakes(std::uint32_t from, std::uint32_t most, Waker &waker, SideCounters *counters) {
    Doorbell owed = owed_wakes();
    std::uint32_t paid = 0;
    for (std::uint32_t index = 0; paid < most && owed.claim(from, &index); ++paid) {
        notify(slot(index)->client, waker, counters);
        bump(counters, Counter::owed_wakeups_paid);
    }
    return paid;
}

std::uint64_t Region::begin_server_epoch(Waker &waker) {
    const std::uint64_t epoch = header_->server_epoch.fetch_add(1, std::memory_order_acq_rel) + 1;
    for (std::uint32_t i = 0; i < layout_.params.slots; ++i) {
        SlotControl *sc = slot(i);
        forget_dead_watch(i, epoch);
        std::uint32_t st = sc->state.load(std::memory_order_acquire);
        while ((st & held_by_server) && sc->call_epoch.load(std::memory_order_relaxed) != epoch) {
            const std::uint32_t next = st & ~serving_bits;
            if (sc->state.compare_exchange_weak(st, next, std::memory_order_acq_rel)) {
                if (next == 0)
                    push_free(i);
                break;
            }
        }
        /* Every client still on a slot, not only those whose call we just cleared: the dead server
         * may have published a response and let go, then died before its wake (model/slots.pml). */
        if (sc->state.load(std::memory_order_acquire) & held_by_client)
            notify(sc->client, waker, nullptr);
    }
    /* No thread of ours serves yet, and the dead process's are gone: a thread that died spinning would
     * leave its bell's spinner word set and every later ring elided, one that died parked a stale count
     * (model/slots.pml). */
    for (std::uint32_t r = 0; r < runtimes(); ++r) {
        doorbell(r).spinner().store(0, std::memory_order_relaxed);
        dispatch(r).idle.sleeping.store(0, std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (stats_.valid()) {
        if (epoch > 1)
            stats_.add(GlobalCounter::server_restarts);
        stats_.header().server_epoch.store(epoch, std::memory_order_relaxed);
    }
    return epoch;
}

/*
 * A watcher of the dead process never ends its watch: the call begun under
 * it did not ring (if its runtime was the watcher's), so ring for it; then
 * clear the bit, and free the slot if that made the word zero (its session
 * left while watched). Runs before the epoch's own scan of the slot.
 */
void Region::forget_dead_watch(std::uint32_t index, std::uint64_t epoch) {
    SlotControl *sc = slot(index);
    std::uint32_t st = sc->state.load(std::memory_order_acquire);
    do {
        if (!(st & watched_by_server))
            return;
    } while (!sc->state.compare_exchange_weak(st, st & ~watch_bits, std::memory_order_acq_rel));
    /* st is the word the bit left: a call begun under it is in st, a later one saw no watch and rings. */
    const std::uint32_t runtime = sc->call_runtime.load(std::memory_order_relaxed);
    if ((st & (held_by_server | accepted_by_server)) == held_by_server &&
        sc->call_epoch.load(std::memory_order_relaxed) == epoch && runtime == watching_runtime(st) &&
        runtime < runtimes())
        doorbell(runtime).ring(index);
    if ((st & ~watch_bits) == 0)
        push_free(index);
}

/* The call on `index` is now this thread's (accepted_by_server is set): is it of this epoch? */
Status Region::admit(std::uint32_t index, Waker &waker, std::uint64_t *generation) {
    SlotControl *sc = slot(index);
    *generation = sc->generation.load(std::memory_order_acquire);
    if (sc->call_epoch.load(std::memory_order_relaxed) == server_epoch())
        return Status::ok;
    finish_serving(index);  // begun under a dead server: its client fails it
    notify(sc->client, waker, nullptr);
    return Status::server_restarted;
}

Status Region::accept(std::uint32_t index, Waker &waker, std::uint64_t *generation) {
    SlotControl *sc = slot(index);
    if (sc == nullptr)
        return Status::corrupt;
    std::uint32_t st = sc->state.load(std::memory_order_acquire);
    do {
        if (!(st & held_by_server) || (st & accepted_by_server))
            return Status::stale;
    } while (!sc->state.compare_exchange_weak(st, st | accepted_by_server, std::memory_order_acq_rel));
    return admit(index, waker, generation);
}

bool Region::watch(std::uint32_t index, std::uint32_t runtime) {
    SlotControl *sc = slot(index);
    if (sc == nullptr || sc->state.load(std::memory_order_relaxed) != held_by_client)
        return false;
    std::uint32_t idle = held_by_client;
    return sc->state.compare_exchange_strong(idle, held_by_client | watched_by(runtime), std::memory_order_acq_rel);
}

Status Region::end_watch(std::uint32_t index, std::uint32_t runtime, Waker &waker, std::uint64_t *generation) {
    SlotControl *sc = slot(index);
    std::uint32_t st = sc->state.load(std::memory_order_acquire);
    bool take = false;
    do {
        if (!(st & watched_by_server))
            return Status::stale;
        take = (st & (held_by_server | accepted_by_server)) == held_by_server &&
               sc->call_runtime.load(std::memory_order_relaxed) == runtime;
    } while (!sc->state.compare_exchange_weak(st, (st & ~watch_bits) | (take ? std::uint32_t{accepted_by_server} : 0u),
                                              std::memory_order_acq_rel));
    if (!take) {
        if ((st & ~watch_bits) == 0)
            push_free(index);  // its session left while watched: this made the word zero
        return Status::stale;
    }
    if (stats_.valid())
        bump(&stats_.slot(index)->server, Counter::watched_calls);
    return admit(index, waker, generation);
}

void Region::finish_serving(std::uint32_t index) {
    const std::uint32_t prev = slot(index)->state.fetch_and(~serving_bits, std::memory_order_acq_rel);
    if ((prev & held_by_server) && (prev & ~serving_bits) == 0)
        push_free(index);
}

/*
 * Clears the serving bits of a kept call whose request nobody took, if
 * its bits under `mask` are `want`, and frees the slot if that made the
 * word zero; false if they were not (the other side took the call). The keeper's let-go and
 * the session's revoke: exactly one of them, or the keeper's take, wins.
 */
bool Region::end_kept(std::uint32_t index, std::uint32_t mask, std::uint32_t want) {
    SlotControl *sc = slot(index);
    std::uint32_t st = sc->state.load(std::memory_order_relaxed);
    do {
        if ((st & mask) != want)
            return false;
    } while (!sc->state.compare_exchange_weak(st, st & ~serving_bits, std::memory_order_acq_rel));
    if ((st & ~serving_bits) == 0)
        push_free(index);
    return true;
}

bool Region::take_kept(std::uint32_t index, std::uint32_t runtime) {
    SlotControl *sc = slot(index);
    std::uint32_t st = sc->state.load(std::memory_order_relaxed);
    do {
        if ((st & (kept_by_server | kept_runtime_bits)) != kept_for(runtime))
            return false;
    } while (!sc->state.compare_exchange_weak(st, st & ~(kept_by_server | kept_runtime_bits),
                                              std::memory_order_acq_rel));
    return true;
}

void Region::let_go(std::uint32_t index, std::uint64_t generation, std::uint32_t runtime, Waker &waker,
                    SideCounters *counters) {
    const bool gone = client_gone(index, generation);
    if (end_kept(index, kept_by_server | kept_runtime_bits, kept_for(runtime)) && !gone)
        wake_or_owe(index, runtime, waker, counters);
}

bool Region::may_keep(std::uint32_t index, bool *phase) {
    SlotControl *sc = slot(index);
    const std::uint32_t runtime = sc->call_runtime.load(std::memory_order_relaxed);
    if (runtime >= runtimes() || doorbell(runtime).spinner().exchange(1, std::memory_order_seq_cst) != 0)
        return false;
    *phase = (sc->state.load(std::memory_order_relaxed) & kept_phase) == 0;
    return true;
}

bool Region::revoke_kept(const SlotHandle &handle, std::uint32_t runtime, bool phase) {
    return handle_current(slot(handle.index), handle) &&
           end_kept(handle.index, kept_by_server | kept_runtime_bits | kept_phase,
                    kept_for(runtime) | (phase ? kept_phase : 0u));
}

/* A CAS, not a fetch_or: after the let-go the bit would stay on an idle slot's word (see the top). */
void Region::recall(const SlotHandle &handle) {
    SlotControl *sc = slot(handle.index);
    if (!handle_current(sc, handle))
        return;
    std::uint32_t st = sc->state.load(std::memory_order_relaxed);
    while ((st & (held_by_server | recalled_by_client)) == held_by_server &&
           !sc->state.compare_exchange_weak(st, st | recalled_by_client, std::memory_order_relaxed)) {
    }
}

void Region::wake_servers(Waker &waker) {
    for (std::uint32_t i = 0; i < slots(); ++i)
        notify(slot(i)->server, waker, nullptr);
}

std::uint32_t Region::slots_in_use() const {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < layout_.params.slots; ++i)
        n += slot(i)->state.load(std::memory_order_relaxed) != 0;
    return n;
}

}  // namespace courier::ipc
