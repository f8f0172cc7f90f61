/*
 * calls.cc — open calls and the v2 host functions on them (see calls.h).
 */
#include "calls.h"

#include <cstring>
#include <new>
#include <string>

namespace courier::worker {
namespace {

constexpr int slot_bits = 16;
static_assert((1u << slot_bits) >= ipc::max_slots);

constexpr courier_call_id make_id(std::uint64_t serial, std::uint32_t slot) {
    return (serial << slot_bits) | slot;
}

const std::byte empty_request[1] = {};

}  // namespace

struct CallTable::Entry {
    std::mutex mu;
    std::atomic<std::uint64_t> serial{0};  // of the current or last call
    std::atomic<std::uint64_t> generation{0};
    std::atomic<bool> open{false};
    std::uint32_t runtime = 0;
    std::optional<ipc::ServerCall> call;
    ipc::MessageWriter writer;
    bool writing = false;
    bool request_read = false;            // the runtime has the whole body
    std::span<const std::byte> rest;      // unread part of the frame held for read()
    char fn[ipc::max_function_name + 1] = {};
    courier_cancel_fn cancel_fn = nullptr;
    void *cancel_arg = nullptr;
    bool cancel_fired = false;
};

CallTable::CallTable(ipc::Region &region, ipc::Waker &waker, const std::atomic<bool> &stopping)
    : region_(region), waker_(waker), stopping_(stopping), entries_(new Entry[region.slots()]) {}

CallTable::~CallTable() = default;

ipc::Status CallTable::open(std::uint32_t runtime, const ipc::Accepted &accepted, const ipc::WaitPolicy &policy,
                            courier_call_info *info) {
    Entry &e = entries_[accepted.index];
    std::lock_guard<std::mutex> lock(e.mu);
    if (e.open.load(std::memory_order_relaxed))
        return ipc::Status::corrupt;  // the server cannot take a slot it still holds
    ipc::ServerCall &call = e.call.emplace(region_, accepted, waker_, policy, &stopping_);
    std::size_t fn_length = 0;
    ipc::Status s = call.read_function(e.fn, &fn_length);
    if (s == ipc::Status::ok && region_.client_gone(accepted.index, accepted.generation)) {
        s = ipc::Status::abandoned;  // given up while queued: the runtime never sees it
        if (region_.stats().valid())
            region_.stats().add(ipc::GlobalCounter::calls_dropped_unstarted);
    }
    if (s == ipc::Status::too_large && call.drain_request() == ipc::Status::ok)
        call.respond_error("request exceeds courier.max_message_size", true);
    if (s != ipc::Status::ok) {
        call.finish();
        e.call.reset();
        return s;
    }
    e.runtime = runtime;
    e.writing = false;
    e.request_read = call.request().finished();
    e.rest = {};
    e.cancel_fn = nullptr;
    e.cancel_arg = nullptr;
    e.cancel_fired = false;
    e.generation.store(accepted.generation, std::memory_order_relaxed);
    const std::uint64_t serial = e.serial.load(std::memory_order_relaxed) + 1;
    e.serial.store(serial, std::memory_order_release);
    e.open.store(true, std::memory_order_release);

    const std::span<const std::byte> first = call.first_piece();
    const std::uint64_t total = call.request().total();
    info->id = make_id(serial, accepted.index);
    info->fn = e.fn;
    info->request = first.empty() ? empty_request : first.data();
    info->request_len = first.size();
    info->request_total = total == ipc::unknown_length ? COURIER_UNKNOWN_LENGTH : total - fn_length - 1;
    info->request_complete = e.request_read ? 1 : 0;
    return ipc::Status::ok;
}

CallTable::Entry *CallTable::entry(courier_call_id id) const {
    const std::uint32_t slot = static_cast<std::uint32_t>(id & ((1u << slot_bits) - 1));
    return id != 0 && slot < region_.slots() ? &entries_[slot] : nullptr;
}

bool CallTable::is_current(const Entry &e, courier_call_id id, int *rc) const {
    const std::uint64_t serial = id >> slot_bits;
    const std::uint64_t current = e.serial.load(std::memory_order_acquire);
    *rc = serial == 0 || serial > current                               ? COURIER_INVALID
          : serial < current || !e.open.load(std::memory_order_acquire) ? COURIER_ENDED
                                                                         : COURIER_OK;
    return *rc == COURIER_OK;
}

template <typename Fn>
int CallTable::with_call(courier_call_id id, Fn &&fn) {
    Entry *e = entry(id);
    if (e == nullptr)
        return COURIER_INVALID;
    std::lock_guard<std::mutex> lock(e->mu);
    int rc = COURIER_OK;
    if (!is_current(*e, id, &rc))
        return rc;
    try {
        return fn(*e);
    } catch (const std::bad_alloc &) {
        /* An allocation in the ipc layer or the runtime's message: fail this call only. */
        if (e->call) {
            if (e->writing)
                e->writer.abort();
            (void)e->call->respond_error("out of memory in the courier worker");
            end_locked(*e);
        }
        return COURIER_NOMEM;
    }
}

/* Lets go of the slot, or keeps it if offered (true); the id is dead from here on. */
bool CallTable::end_locked(Entry &e) {
    e.call->finish();
    const bool kept = e.call->kept();
    e.call.reset();
    e.writer = ipc::MessageWriter();
    e.open.store(false, std::memory_order_release);
    return kept;
}

int CallTable::write(courier_call_id id, const void *data, std::size_t len) {
    if (data == nullptr && len != 0)
        return COURIER_MISUSE;
    return with_call(id, [&](Entry &e) {
        if (!e.request_read)
            return COURIER_MISUSE;
        if (!e.writing) {
            e.writer = e.call->respond(ipc::FrameKind::response, ipc::unknown_length);
            e.writing = true;
        }
        const ipc::Status s = e.writer.write(std::span<const std::byte>(static_cast<const std::byte *>(data), len));
        if (s == ipc::Status::ok)
            return COURIER_OK;
        if (s == ipc::Status::too_large)  // the writer aborted the response; say why
            (void)e.call->respond_error("response exceeds courier.max_message_size", true);
        end_locked(e);
        return s == ipc::Status::too_large ? COURIER_TOO_LARGE : COURIER_GONE;
    });
}

int CallTable::finish(courier_call_id id, bool *kept) {
    return with_call(id, [&](Entry &e) {
        if (!e.request_read)
            (void)e.call->drain_request();
        if (kept != nullptr)
            e.call->offer_keep();  // before the last frame, which says so
        if (e.writing)
            (void)e.writer.finish();
        else
            (void)e.call->respond_all(ipc::FrameKind::response, {});
        const bool ended_kept = end_locked(e);
        if (kept != nullptr)
            *kept = ended_kept;
        return COURIER_OK;
    });
}

int CallTable::fail(courier_call_id id, std::string_view message, bool from_host) {
    return with_call(id, [&](Entry &e) {
        if (!e.request_read)
            (void)e.call->drain_request();
        if (e.writing)
            e.writer.abort();  // the caller reads the error that follows instead of a partial response
        (void)e.call->respond_error(message, from_host);
        end_locked(e);
        return COURIER_OK;
    });
}

int CallTable::read(courier_call_id id, void *buf, std::size_t cap, std::size_t *n) {
    if (n == nullptr || (buf == nullptr && cap != 0))
        return COURIER_MISUSE;
    *n = 0;
    return with_call(id, [&](Entry &e) {
        ipc::MessageReader &reader = e.call->request();
        auto *out = static_cast<std::byte *>(buf);
        while (*n < cap && !e.request_read) {
            if (e.rest.empty()) {
                bool last = false;
                if (reader.next(&e.rest, &last) != ipc::Status::ok) {  // lets go of the frame before
                    end_locked(e);
                    return COURIER_GONE;
                }
            }
            const std::size_t k = std::min(cap - *n, e.rest.size());
            std::memcpy(out + *n, e.rest.data(), k);
            *n += k;
            e.rest = e.rest.subspan(k);
            if (e.rest.empty() && reader.finished()) {
                reader.release();
                e.request_read = true;
            }
        }
        return COURIER_OK;
    });
}

int CallTable::cancelled(courier_call_id id) const {
    const Entry *e = entry(id);
    int rc = COURIER_OK;
    if (e == nullptr || !is_current(*e, id, &rc))
        return 1;  // ended or unknown: nothing to work on
    const std::uint32_t slot = static_cast<std::uint32_t>(id & ((1u << slot_bits) - 1));
    return stopping_.load(std::memory_order_relaxed) ||
                   region_.client_gone(slot, e->generation.load(std::memory_order_relaxed))
               ? 1
               : 0;
}

int CallTable::on_cancel(courier_call_id id, courier_cancel_fn fn, void *arg) {
    if (fn == nullptr)
        return COURIER_MISUSE;
    bool now = false;
    const int rc = with_call(id, [&](Entry &e) {
        if (cancelled(id)) {
            e.cancel_fired = now = true;
        } else {
            e.cancel_fn = fn;
            e.cancel_arg = arg;
        }
        return COURIER_OK;
    });
    if (now)
        fn(arg, id);  // already gone: at once, without the lock (fn may call back in)
    return rc;
}

void CallTable::fire_cancel(std::uint32_t slot) {
    if (slot >= region_.slots())
        return;
    Entry &e = entries_[slot];
    courier_cancel_fn fn = nullptr;
    void *arg = nullptr;
    courier_call_id id = 0;
    {
        std::lock_guard<std::mutex> lock(e.mu);
        id = make_id(e.serial.load(std::memory_order_relaxed), slot);
        if (!e.open.load(std::memory_order_relaxed) || e.cancel_fired || e.cancel_fn == nullptr || !cancelled(id))
            return;
        e.cancel_fired = true;
        fn = e.cancel_fn;
        arg = e.cancel_arg;
    }
    fn(arg, id);
}

std::size_t CallTable::fail_open(std::uint32_t runtime, std::string_view why) {
    std::size_t failed = 0;
    for (std::uint32_t i = 0; i < region_.slots(); ++i) {
        Entry &e = entries_[i];
        const courier_call_id id = make_id(e.serial.load(std::memory_order_relaxed), i);
        bool mine = false;
        {
            std::lock_guard<std::mutex> lock(e.mu);
            mine = e.open.load(std::memory_order_relaxed) && e.runtime == runtime;
        }
        if (mine && fail(id, why, true) == COURIER_OK)
            ++failed;
    }
    return failed;
}

std::size_t CallTable::open_calls(std::uint32_t runtime) const {
    std::size_t n = 0;
    for (std::uint32_t i = 0; i < region_.slots(); ++i) {
        std::lock_guard<std::mutex> lock(entries_[i].mu);
        n += entries_[i].open.load(std::memory_order_relaxed) && entries_[i].runtime == runtime;
    }
    return n;
}

}  // namespace courier::worker
