/*
 * call.cc — client and server halves of a call (protocol in call.h).
 */
#include "courier/ipc/call.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "courier/ipc/clock.h"

namespace courier::ipc {
namespace {

/* b - a, or 0 when the clock stepped back (clock.h). */
std::uint64_t since(std::uint64_t a, std::uint64_t b) { return b > a ? b - a : 0; }

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
    /* The slot's side of every call's Endpoint; start() sets the call's. */
    ep_ = Endpoint{region_, handle_.index, handle_.generation, 0, true, waker_, {},
                   region_->stats().client_counters(handle_.index)};
    ep_.whole_turns = true;
    return Status::ok;
}

void Client::close() {
    if (handle_.valid())
        region_->release(handle_);  // a keeper sees its client gone and lets go
    handle_ = SlotHandle{};
    kept_runtime_ = -1;
}

void Client::abandon() {
    if (handle_.valid())
        region_->abandon(handle_, *waker_);
    handle_ = SlotHandle{};
    kept_runtime_ = -1;
}

/*
 * The kept path (see the top): the same runtime, a request of one frame,
 * and the epoch of the kept call (a new one has cleared it). Otherwise the
 * kept call is recalled, and this call begins as usual.
 */
bool Client::write_to_keeper(std::uint32_t runtime, std::string_view fn, std::uint64_t payload_total) {
    const std::int32_t kept = kept_runtime_;
    kept_runtime_ = -1;
    const bool one_frame = payload_total != unknown_length &&
                           fn.size() + 1 + payload_total <= region_->to_server(handle_.index).max_chunk();
    if (kept == static_cast<std::int32_t>(runtime) && one_frame && region_->server_epoch() == ep_.epoch) {
        ep_.kept_runtime = kept;
        ep_.kept_phase = kept_phase_;
        ep_.ring_runtime = -1;  // the keeper polls the ring; its publish notifies the slot's server Waiter
        bump(ep_.counters, Counter::kept_calls);
        return true;
    }
    region_->recall(handle_);
    return false;
}

Status Client::start(std::uint32_t runtime, std::string_view fn, std::uint64_t payload_total,
                     const WaitPolicy &policy) {
    if (!handle_.valid() || runtime >= region_->runtimes() || fn.empty() || fn.size() > max_function_name ||
        fn.find('\0') != std::string_view::npos)
        return Status::bad_argument;
    if (!attempted_) {
        attempted_ = true;  // from here on the call counts, failed or not
        started_ns_ = call_clock_ns();
        runtime_ = runtime;
    }
    if (payload_total != unknown_length && payload_total > region_->max_message_size()) {
        if (region_->stats().valid())
            region_->stats().add(GlobalCounter::too_large);
        return Status::too_large;  // refused before anything was sent
    }
    /* The call's fields only, in place: an Endpoint built whole and copied in stalled on store forwarding. */
    ep_.policy = policy;
    if (kept_runtime_ >= 0 && write_to_keeper(runtime, fn, payload_total))
        return write_name(fn, payload_total);
    ep_.epoch = 0;
    ep_.ring_runtime = -1;
    ep_.kept_runtime = -1;
    std::uint64_t epoch = 0;
    bool watched = false;
    const Status s = wait_until(ep_.self(), *waker_, ep_.wait_policy(), ep_.counters,
                                [&] { return region_->begin_call(handle_, runtime, &epoch, &watched); });
    if (s != Status::ok)
        return s;
    ep_.epoch = epoch;
    /* A watched call is seen by its watcher without a ring; its request notifies the slot as any does. */
    ep_.ring_runtime = watched ? -1 : static_cast<std::int32_t>(runtime);
    if (watched)
        bump(ep_.counters, Counter::watched_calls);
    return write_name(fn, payload_total);
}

/* The name travels in the first frame; the payload limit is the payload's alone. */
Status Client::write_name(std::string_view fn, std::uint64_t payload_total) {
    const std::uint64_t total = payload_total == unknown_length ? unknown_length : fn.size() + 1 + payload_total;
    writer_ = MessageWriter(ep_, FrameKind::request, total, fn.size() + 1);
    std::byte name[max_function_name + 1];
    std::memcpy(name, fn.data(), fn.size());
    name[fn.size()] = std::byte{0};
    return writer_.write(std::span<const std::byte>(name, fn.size() + 1));
}

Status Client::finish_request() {
    if (Status s = writer_.finish(); s != Status::ok)
        return s;
    reader_ = MessageReader(ep_);
    return Status::ok;
}

Status Client::read_abort_reason(std::vector<std::byte> *why) {
    reader_.release();
    reader_ = MessageReader(ep_);
    const Status s = reader_.read_all(why);
    if (s == Status::ok && reader_.kind() != FrameKind::error)
        return Status::corrupt;
    return s;
}

void Client::end(Status outcome) {
    const std::uint64_t now = call_clock_ns();
    if (attempted_) {
        const std::uint64_t took = since(started_ns_, now);
        if (region_->stats().valid() && handle_.valid())
            region_->stats().record_call(handle_.index, runtime_, took,
                                         outcome != Status::ok || reader_.kind() == FrameKind::error);
        note_gap(since(last_end_ns_, started_ns_), took);
    }
    /* Read to its last frame, which says whether the thread kept the call (see the top). */
    kept_runtime_ = attempted_ && outcome == Status::ok && reader_.finished() && reader_.kept()
                        ? static_cast<std::int32_t>(runtime_)
                        : -1;
    kept_phase_ = reader_.kept_phase();
    attempted_ = false;
    const std::uint32_t index = handle_.valid() ? handle_.index : 0;
    SideCounters *counters = handle_.valid() ? region_->stats().client_counters(index) : nullptr;
    if (outcome != Status::ok)
        abandon();
    /* Sessions wake each other while the worker is busy (region.h): this one has a CPU now. */
    region_->pay_owed_wakes(index + 1, owed_wakes_per_call, *waker_, counters);
    take_turns(now, counters);
}

/*
 * A call counts as the worker's when the time since the previous call
 * ended is shorter than the call took, times the other CPUs of the
 * session's mask: the share of its time this session waits on the
 * worker is then at least one CPU's worth of its mask (see the top).
 */
void Client::note_gap(std::uint64_t gap_ns, std::uint64_t took_ns) {
    ++calls_since_look_;
    if (own_cpu_count_ > 1 && gap_ns < took_ns * (own_cpu_count_ - 1))
        ++worker_bound_calls_;
}

/*
 * Turns among sessions (see the top): only a run of calls with no pause
 * longer than a turn between them counts, so a session that calls now and
 * then, or that slept for its answer, never yields here.
 */
void Client::take_turns(std::uint64_t now, SideCounters *counters) {
    constexpr std::uint64_t turn_ns = std::chrono::nanoseconds(session_turn).count();
    if (since(last_end_ns_, now) > turn_ns) {
        turn_started_ns_ = now;
    } else {
        if (since(turn_started_ns_, now) >= turn_ns) {
            std::this_thread::yield();
            bump(counters, Counter::turns_given);
            turn_started_ns_ = now;
        }
        if (away_ != nullptr && now >= next_look_ns_ && handle_.valid())
            look_for_server_cpu(now, counters);
    }
    last_end_ns_ = now;
}

/*
 * Leaving the worker's CPU (see the top). The CPU left is noted before the
 * mask is set, and return_to_cpus() skips a look under way: a return that
 * came between the two would put the whole mask back and the look would
 * then take a CPU out again with nothing noted, and the next look would
 * read that narrower mask as the session's own.
 */
void Client::look_for_server_cpu(std::uint64_t now, SideCounters *counters) {
    next_look_ns_ = now + static_cast<std::uint64_t>(std::chrono::nanoseconds(cpu_check_period).count());
    const bool worker_bound = calls_since_look_ > 0 && 2 * worker_bound_calls_ >= calls_since_look_;
    calls_since_look_ = 0;
    worker_bound_calls_ = 0;
    const int left = left_cpu_.load(std::memory_order_relaxed);
    if (own_cpu_count_ == 0) {  // the first look: how many CPUs the session has; the next one decides
        own_cpu_count_ = read_cpu_mask(&own_cpus_) ? cpu_count(own_cpus_) : 1;
        return;
    }
    if (!worker_bound && left < 0)
        return;
    const int server_cpu =
        worker_bound ? region_->slot(handle_.index)->server.cpu.load(std::memory_order_relaxed) : -1;
    if (left >= 0 && left == server_cpu) {
        away_();
        return;
    }
    looking_.store(true, std::memory_order_relaxed);
    if (left < 0) {
        if (!read_cpu_mask(&own_cpus_)) {
            looking_.store(false, std::memory_order_relaxed);
            return;
        }
        own_cpu_count_ = cpu_count(own_cpus_);  // the session's own mask, as it is now
    }
    CpuMask mask = own_cpus_;
    const bool leave = without_cpu(&mask, server_cpu);
    if (leave || left >= 0) {
        left_cpu_.store(leave ? server_cpu : -1, std::memory_order_relaxed);
        if (!write_cpu_mask(mask))
            left_cpu_.store(left, std::memory_order_relaxed);  // not moved: as before
        else if (leave)
            bump(counters, Counter::cpu_moves);
    }
    looking_.store(false, std::memory_order_relaxed);
    if (left_cpu_.load(std::memory_order_relaxed) >= 0)
        away_();
}

void Client::return_to_cpus() {
    if (looking_.load(std::memory_order_relaxed))
        return;  // the look under way ends by arming the return again, or back home
    if (left_cpu_.exchange(-1, std::memory_order_relaxed) >= 0)
        (void)write_cpu_mask(own_cpus_);
}

Status Client::call(std::uint32_t runtime, std::string_view fn, std::span<const std::byte> payload,
                    std::vector<std::byte> *out, FrameKind *kind, const WaitPolicy &policy) {
    reader_ = MessageReader();
    Status s = start(runtime, fn, payload.size(), policy);
    if (s == Status::ok)
        s = writer_.write(payload);
    if (s == Status::ok)
        s = finish_request();
    if (s == Status::ok)
        s = reader_.read_all(out);
    if (s == Status::aborted)
        s = read_abort_reason(out);
    end(s);
    if (s == Status::ok)
        *kind = reader_.kind();
    return s;
}

/* ---------------------------------------------------------------- server */

ServerCall::ServerCall(Region &region, const Accepted &call, Waker &waker, const WaitPolicy &policy,
                       const std::atomic<bool> *stopping)
    : ep_{&region, call.index, call.generation, 0, false, &waker, policy, region.stats().server_counters(call.index),
          stopping},
      reader_(ep_) {
    ep_.whole_turns = true;
    ep_.request = &reader_;
}

Status ServerCall::read_function(std::span<char, max_function_name + 1> name, std::size_t *length) {
    std::size_t len = 0;
    for (;;) {
        std::span<const std::byte> chunk;
        bool last = false;
        if (Status s = reader_.next(&chunk, &last); s != Status::ok)
            return s;
        const auto *begin = reinterpret_cast<const char *>(chunk.data());
        /* A byte loop, not memchr: a name is a few bytes, fewer than memchr's setup costs. */
        std::size_t name_bytes = 0;
        while (name_bytes < chunk.size() && begin[name_bytes] != '\0') {
            if (len + ++name_bytes > max_function_name)
                return Status::corrupt;
        }
        std::memcpy(name.data() + len, begin, name_bytes);
        len += name_bytes;
        if (name_bytes < chunk.size()) {  // at the NUL
            name[len] = '\0';
            *length = len;
            pending_ = chunk.subspan(name_bytes + 1);  // the frame stays held until read on
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

Status ServerCall::drain_request() {
    pending_ = {};
    return reader_.skip_rest();
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

Status ServerCall::respond_error(std::string_view message, bool from_host) {
    message = message.substr(0, std::min<std::size_t>(message.size(), ep_.region->max_message_size()));
    MessageWriter w = respond(FrameKind::error, message.size());
    if (from_host)
        w.mark_from_host();
    const Status s = w.write(std::span<const std::byte>(reinterpret_cast<const std::byte *>(message.data()), message.size()));
    return s == Status::ok ? w.finish() : s;
}

/*
 * Order matters here. The client may start its next call the moment it sees
 * our last frame, and start() waits until this call has let go of the slot.
 * Waking the client (a syscall, after which the woken backend often preempts
 * this thread) before letting go made every client wait on a preempted
 * server thread. So: let go, then the Dekker half of notify (fence, read
 * the client's sleeping flag), then wake: the fence orders both the last
 * frame and the let-go before the read, so a client asleep on either is
 * woken. A wake that lands after the slot was abandoned and leased again
 * is a spurious wakeup, which waiters tolerate. While more calls wait for
 * this runtime the wake is owed instead (Region::wake_or_owe): this thread
 * goes on to them, and a session or an idle thread makes it.
 */
void ServerCall::finish() {
    if (finished_)
        return;
    finished_ = true;
    reader_.release();  // a request frame still held in place: the session's next call follows it
    const bool gone = ep_.region->client_gone(ep_.index, ep_.generation);
    if (gone && ep_.region->stats().valid())
        ep_.region->stats().add(GlobalCounter::late_responses_dropped);
    if (ep_.kept_sent) {
        /* Held still, by its bell's spinner: the spin makes the last frame's notify, or lets go (dispatch.h). */
        kept_ = true;
        return;
    }
    /* Read while the call is still ours: the client writes it when it begins its next call. */
    const std::uint32_t runtime = ep_.control().call_runtime.load(std::memory_order_relaxed);
    ep_.region->finish_serving(ep_.index);
    if (!gone)
        ep_.region->wake_or_owe(ep_.index, runtime, *ep_.waker, ep_.counters);
}

}  // namespace courier::ipc
