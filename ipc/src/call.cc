/*
 * call.cc — client and server halves of a call (protocol in call.h).
 */
#include "courier/ipc/call.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace courier::ipc {
namespace {

constexpr std::size_t max_function_name = 255;

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

SideCounters *client_counters(const Region &r, std::uint32_t index) {
    SlotStats *s = r.stats().valid() ? r.stats().slot(index) : nullptr;
    return s != nullptr ? &s->client : nullptr;
}

SideCounters *server_counters(const Region &r, std::uint32_t index) {
    SlotStats *s = r.stats().valid() ? r.stats().slot(index) : nullptr;
    return s != nullptr ? &s->server : nullptr;
}

}  // namespace

/* ---------------------------------------------------------------- client */

Status Client::open() {
    if (handle_.valid())
        return Status::ok;
    const Status s = region_->lease(pid_, &handle_);
    if (s != Status::ok) {
        handle_ = SlotHandle{};
        return s;
    }
    region_->slot(handle_.index)->client.latch_proc.store(latch_proc_, std::memory_order_relaxed);
    return Status::ok;
}

void Client::close() {
    if (handle_.valid())
        region_->release(handle_);
    handle_ = SlotHandle{};
}

void Client::abandon() {
    if (handle_.valid())
        region_->abandon(handle_);
    handle_ = SlotHandle{};
}

Status Client::start(std::string_view fn, std::uint64_t payload_total, const WaitPolicy &policy) {
    if (!handle_.valid() || fn.empty() || fn.size() > max_function_name ||
        fn.find('\0') != std::string_view::npos)
        return Status::bad_argument;
    std::uint64_t total = unknown_length;
    if (payload_total != unknown_length) {
        total = fn.size() + 1 + payload_total;
        if (payload_total > region_->max_message_size() || total > region_->max_message_size()) {
            if (region_->stats().valid())
                region_->stats().add(GlobalCounter::too_large);
            return Status::too_large;  // refused before anything was sent
        }
    }
    started_ns_ = now_ns();
    std::uint64_t epoch = 0;
    if (Status s = region_->begin_call(handle_, policy.deadline, &epoch); s != Status::ok) {
        end(s);
        return s;
    }
    ep_ = Endpoint{region_, handle_.index, handle_.generation, epoch, true, waker_, policy,
                   client_counters(*region_, handle_.index)};
    writer_ = MessageWriter(ep_, FrameKind::request, total);
    region_->ring_doorbell(handle_, *waker_, ep_.counters);
    std::byte name[max_function_name + 1];
    std::memcpy(name, fn.data(), fn.size());
    name[fn.size()] = std::byte{0};
    const Status s = writer_.write(std::span<const std::byte>(name, fn.size() + 1));
    if (s != Status::ok)
        end(s);
    return s;
}

Status Client::finish_request() {
    const Status s = writer_.finish();
    if (s != Status::ok) {
        end(s);
        return s;
    }
    reader_ = MessageReader(ep_);
    return Status::ok;
}

void Client::end(Status outcome) {
    if (region_->stats().valid() && handle_.valid())
        region_->stats().record_call(handle_.index, now_ns() - started_ns_,
                                     outcome != Status::ok || reader_.kind() == FrameKind::error);
    if (outcome != Status::ok)
        abandon();
}

Status Client::call(std::string_view fn, std::span<const std::byte> payload,
                    std::vector<std::byte> *out, FrameKind *kind, const WaitPolicy &policy) {
    reader_ = MessageReader();
    if (Status s = start(fn, payload.size(), policy); s != Status::ok)
        return s;
    Status s = writer_.write(payload);
    if (s == Status::ok)
        s = finish_request();
    else
        end(s);
    if (s != Status::ok)
        return s;
    s = reader_.read_all(out);
    end(s);
    if (s == Status::ok)
        *kind = reader_.kind();
    return s;
}

/* ---------------------------------------------------------------- server */

bool accept_call(Region &region, std::uint32_t index, std::uint64_t *generation) {
    SlotControl *sc = region.slot(index);
    if (sc == nullptr)
        return false;
    std::uint32_t st = sc->state.load(std::memory_order_acquire);
    do {
        if (!(st & held_by_server) || (st & accepted_by_server))
            return false;
    } while (!sc->state.compare_exchange_weak(st, st | accepted_by_server, std::memory_order_acq_rel));
    *generation = sc->generation.load(std::memory_order_acquire);
    return true;
}

ServerCall::ServerCall(Region &region, std::uint32_t index, std::uint64_t generation, Waker &waker,
                       const WaitPolicy &policy)
    : ep_{&region, index, generation, 0, false, &waker, policy, server_counters(region, index)},
      reader_(ep_) {}

Status ServerCall::read_function(std::string *fn) {
    fn->clear();
    for (;;) {
        std::span<const std::byte> chunk;
        bool last = false;
        if (Status s = reader_.next(&chunk, &last); s != Status::ok)
            return s;
        const auto *begin = reinterpret_cast<const char *>(chunk.data());
        const auto *nul = static_cast<const char *>(std::memchr(begin, 0, chunk.size()));
        const std::size_t name_bytes = nul != nullptr ? static_cast<std::size_t>(nul - begin) : chunk.size();
        fn->append(begin, name_bytes);
        if (fn->size() > max_function_name)
            return Status::corrupt;
        if (nul != nullptr) {
            pending_ = chunk.subspan(name_bytes + 1);  // the frame stays held until read_payload
            return Status::ok;
        }
        if (last)
            return Status::corrupt;
    }
}

Status ServerCall::read_payload(std::vector<std::byte> *out) {
    out->assign(pending_.begin(), pending_.end());
    pending_ = {};
    if (reader_.total() != unknown_length && reader_.total() <= ep_.region->max_message_size())
        out->reserve(reader_.total());
    while (!reader_.finished()) {
        std::span<const std::byte> chunk;
        bool last = false;
        if (Status s = reader_.next(&chunk, &last); s != Status::ok)
            return s;
        out->insert(out->end(), chunk.begin(), chunk.end());
    }
    reader_.release();
    return Status::ok;
}

MessageWriter ServerCall::respond(FrameKind kind, std::uint64_t total) {
    MessageWriter w(ep_, kind, total);
    w.defer_last_notify();  // finish() wakes the client once the slot is let go
    return w;
}

Status ServerCall::respond_all(FrameKind kind, std::span<const std::byte> bytes) {
    MessageWriter w = respond(kind, bytes.size());
    Status s = w.write(bytes);
    return s == Status::ok ? w.finish() : s;
}

Status ServerCall::respond_error(std::string_view message) {
    message = message.substr(0, std::min<std::size_t>(message.size(), ep_.region->max_message_size()));
    return respond_all(FrameKind::error,
                       std::span<const std::byte>(reinterpret_cast<const std::byte *>(message.data()),
                                                  message.size()));
}

/*
 * Order matters here. The client may start its next call the moment it sees
 * our last frame, and begin_call() waits until this call has let go of the
 * slot. Waking the client (a syscall, after which the woken backend often
 * preempts this thread) before letting go made every client wait on a
 * preempted server thread. So: decide whether a wake is needed (the Dekker
 * half of notify), let go, then wake. A wake that lands after the slot was
 * abandoned and leased again is a spurious wakeup, which waiters tolerate.
 */
void ServerCall::finish() {
    if (finished_)
        return;
    finished_ = true;
    const bool gone = ep_.region->client_gone(ep_.index, ep_.generation);
    if (gone && ep_.region->stats().valid())
        ep_.region->stats().add(GlobalCounter::late_responses_dropped);
    Waiter &client = ep_.peer();
    bool wake = false;
    if (!gone) {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        wake = client.sleeping.load(std::memory_order_relaxed) != 0;
        bump(ep_.counters, wake ? Counter::wakeups_sent : Counter::wakeups_elided);
    }
    ep_.region->finish_serving(ep_.index);
    if (wake)
        ep_.waker->wake(client);
}

}  // namespace courier::ipc
