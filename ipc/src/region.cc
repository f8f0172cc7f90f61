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
    Region r;
    r.layout_ = layout;
    r.base_ = static_cast<std::byte *>(base);
    r.stats_ = stats;
    r.header_ = new (r.base_ + layout.header_offset) RegionHeader{};
    r.header_->magic = region_magic;
    r.header_->version = region_version;
    r.header_->slots = layout.params.slots;
    r.header_->ring_size = layout.params.ring_size;
    r.header_->max_message_size = layout.params.max_message_size;
    r.header_->region_size = layout.region_size;
    init_waiter(r.header_->dispatcher);
    r.header_->max_spinners = std::max(1u, usable_cpus() - 1);

    auto *links = reinterpret_cast<std::atomic<std::uint32_t> *>(r.base_ + layout.freelist_offset);
    auto *words = reinterpret_cast<std::atomic<std::uint64_t> *>(r.base_ + layout.doorbell_offset);
    for (std::uint32_t i = 0; i < layout.params.slots; ++i) {
        new (&links[i]) std::atomic<std::uint32_t>(0);
        SlotControl *sc = new (r.base_ + layout.slots_offset + i * layout.slot_stride) SlotControl{};
        init_waiter(sc->client);
        init_waiter(sc->server);
    }
    for (std::size_t w = 0; w < layout.doorbell_words; ++w)
        new (&words[w]) std::atomic<std::uint64_t>(0);
    r.freelist_ = FreeList(&r.header_->freelist_head, links, layout.params.slots);
    r.freelist_.init_full();
    r.doorbell_ = Doorbell(words, layout.params.slots);
    return r;
}

Status Region::attach(void *base, const RegionLayout &layout, StatsView stats, Region *out) {
    auto *h = reinterpret_cast<RegionHeader *>(static_cast<std::byte *>(base) + layout.header_offset);
    if (h->magic != region_magic || h->version != region_version ||
        h->slots != layout.params.slots || h->ring_size != layout.params.ring_size ||
        h->max_message_size != layout.params.max_message_size ||
        h->region_size != layout.region_size)
        return Status::corrupt;
    Region r;
    r.layout_ = layout;
    r.base_ = static_cast<std::byte *>(base);
    r.stats_ = stats;
    r.header_ = h;
    r.freelist_ = FreeList(&h->freelist_head,
                           reinterpret_cast<std::atomic<std::uint32_t> *>(r.base_ + layout.freelist_offset),
                           layout.params.slots);
    r.doorbell_ = Doorbell(reinterpret_cast<std::atomic<std::uint64_t> *>(r.base_ + layout.doorbell_offset),
                           layout.params.slots);
    *out = r;
    return Status::ok;
}

SlotControl *Region::slot(std::uint32_t index) const {
    if (index >= layout_.params.slots)
        return nullptr;
    return reinterpret_cast<SlotControl *>(base_ + layout_.slots_offset + index * layout_.slot_stride);
}

RingView Region::to_server(std::uint32_t index) const {
    return RingView(&slot(index)->to_server, base_ + layout_.rings_offset + index * layout_.ring_stride,
                    layout_.params.ring_size);
}

RingView Region::to_client(std::uint32_t index) const {
    return RingView(&slot(index)->to_client,
                    base_ + layout_.rings_offset + index * layout_.ring_stride + layout_.params.ring_size,
                    layout_.params.ring_size);
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
    if ((prev & held_by_server) == 0)
        push_free(handle.index);
    return Status::ok;
}

void Region::abandon(const SlotHandle &handle) {
    if (release(handle) == Status::ok && stats_.valid())
        stats_.add(GlobalCounter::abandons);
}

Status Region::begin_call(const SlotHandle &handle, std::chrono::steady_clock::time_point deadline,
                          std::uint64_t *epoch) {
    SlotControl *sc = slot(handle.index);
    if (!handle_current(sc, handle))
        return Status::stale;
    /* The previous call's server clears its bit just after its last frame. */
    for (unsigned i = 0; sc->state.load(std::memory_order_acquire) & held_by_server; ++i) {
        if (i < 256) {
            cpu_relax();
            continue;
        }
        if (std::chrono::steady_clock::now() >= deadline)
            return Status::timeout;
        std::this_thread::yield();
    }
    /* Read the epoch before claiming the server: a new epoch that starts
     * in between clears the bit, and the changed epoch fails the call. */
    const std::uint64_t e = header_->server_epoch.load(std::memory_order_acquire);
    sc->call_epoch.store(e, std::memory_order_relaxed);
    sc->state.fetch_or(held_by_server, std::memory_order_seq_cst);
    *epoch = e;
    return Status::ok;
}

void Region::ring_doorbell(const SlotHandle &handle, Waker &waker, SideCounters *counters) {
    doorbell_.ring(handle.index);
    notify(header_->dispatcher, waker, counters);
}

std::uint64_t Region::begin_server_epoch(Waker &waker) {
    const std::uint64_t epoch = header_->server_epoch.fetch_add(1, std::memory_order_acq_rel) + 1;
    for (std::uint32_t i = 0; i < layout_.params.slots; ++i) {
        SlotControl *sc = slot(i);
        std::uint32_t st = sc->state.load(std::memory_order_acquire);
        while ((st & held_by_server) && sc->call_epoch.load(std::memory_order_relaxed) != epoch) {
            const std::uint32_t next = st & ~(held_by_server | accepted_by_server);
            if (sc->state.compare_exchange_weak(st, next, std::memory_order_acq_rel)) {
                if (next == 0)
                    push_free(i);
                else
                    waker.wake(sc->client);  // it may sleep with no deadline
                break;
            }
        }
    }
    if (stats_.valid()) {
        if (epoch > 1)
            stats_.add(GlobalCounter::server_restarts);
        stats_.header().server_epoch.store(epoch, std::memory_order_relaxed);
    }
    return epoch;
}

bool Region::client_gone(std::uint32_t index, std::uint64_t generation) const {
    const SlotControl *sc = slot(index);
    return (sc->state.load(std::memory_order_acquire) & held_by_client) == 0 ||
           sc->generation.load(std::memory_order_relaxed) != generation;
}

void Region::finish_serving(std::uint32_t index) {
    const std::uint32_t prev =
        slot(index)->state.fetch_and(~(held_by_server | accepted_by_server), std::memory_order_acq_rel);
    if ((prev & held_by_server) && (prev & held_by_client) == 0)
        push_free(index);
}

std::uint32_t Region::slots_in_use() const {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < layout_.params.slots; ++i)
        n += slot(i)->state.load(std::memory_order_relaxed) != 0;
    return n;
}

}  // namespace courier::ipc
