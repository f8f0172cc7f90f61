/*
 * channel.cc — messages over frames, with waiting and validation.
 */
#include "courier/ipc/channel.h"

#include <algorithm>
#include <cstring>

namespace courier::ipc {

/*
 * The client's call is over when the server epoch changed, or when the
 * server let go of it (cleared held_by_server): a server that stops while
 * it waits for room in a full ring gives up mid-message, and only the
 * client can tell. A server publishes its last frame before it lets go,
 * so the caller looks at its ring once more before it believes this.
 */
Status Endpoint::call_alive() const {
    if (is_client) {
        if (region->server_epoch() != epoch)
            return Status::server_restarted;
        return (control().state.load(std::memory_order_acquire) & held_by_server) ? Status::ok
                                                                                    : Status::server_restarted;
    }
    if (stopping != nullptr && stopping->load(std::memory_order_relaxed))
        return Status::stopping;
    return region->client_gone(index, generation) ? Status::abandoned : Status::ok;
}

/*
 * The keeper let go without reading the request (its last look at the
 * request ring comes before its let-go, region.h), so the call begins
 * now, with the request already in the ring: its first frame went out
 * with no bell, so this rings it, or notifies a watcher's slot as a
 * request does. Only this session sets held_by_server, so begin_call
 * cannot find it held.
 */
Status Endpoint::begin_after_let_go() {
    const auto runtime = static_cast<std::uint32_t>(kept_runtime);
    kept_runtime = -1;
    bool watched = false;
    const SlotHandle handle{index, generation};
    if (region->begin_call(handle, runtime, &epoch, &watched) != Status::ok)
        return Status::server_restarted;
    if (watched)
        notify(control().server, *waker, counters);
    else
        region->ring_doorbell(runtime, handle, *waker, counters);
    return Status::would_block;
}

/*
 * The consumer made room: wake a producer that sleeps on a full ring, and
 * no one else. A peer parked for data (the client, once its request is
 * read, waits for the response) would only wake, find nothing and park
 * again: that was a second wakeup per call, a signal to a backend each.
 */
static void notify_room(const Endpoint &ep) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ep.peer().sleeping.load(std::memory_order_relaxed) == sleeping_for_room) {
        ep.waker->wake(ep.peer());
        bump(ep.counters, Counter::wakeups_sent);
    }
}

static void count_refusal(const Endpoint &ep, Status s) {
    const StatsView &stats = ep.region->stats();
    if (!stats.valid())
        return;
    if (s == Status::too_large)
        stats.add(GlobalCounter::too_large);
    else if (s == Status::corrupt)
        stats.add(GlobalCounter::corrupt_frames);
}

/* ---------------------------------------------------------------- writer */

Status MessageWriter::open_frame(std::uint64_t min, std::uint64_t max) {
    bool stalled = false;
    const Status s = wait_until(ep_->self(), *ep_->waker, ep_->wait_policy(), ep_->counters, [&] {
        const Status r = ring_.try_reserve(min, max, &frame_);
        if (r != Status::would_block)
            return r;
        if (!stalled) {
            stalled = true;
            bump(ep_->counters, Counter::ring_full_stalls);
        }
        const Status alive = ep_->call_alive();
        return alive == Status::ok ? Status::would_block : alive;
    }, sleeping_for_room);
    if (s == Status::ok) {
        open_ = true;
        frame_used_ = 0;
    } else if (s == Status::corrupt) {
        count_refusal(*ep_, s);
    }
    return s;
}

void MessageWriter::publish(std::uint16_t extra_flags) {
    const int cpu = note_cpu(ep_->self());  // where the peer's spin will look for this side (wait.h)
    std::uint16_t flags = static_cast<std::uint16_t>((first_ ? frame_first : 0) | extra_flags | marks_);
    bool phase = false;
    const bool keeping = ep_->keep_offered && (extra_flags & (frame_last | frame_aborted)) == frame_last &&
                         ep_->region->may_keep(ep_->index, &phase);
    if (keeping) {
        flags |= phase ? frame_kept | frame_kept_phase : frame_kept;
        ep_->kept_sent = true;
    }
    ring_.commit(frame_used_, kind_, flags, ep_->generation, total_,
                 cores_apart(cpu, ep_->peer().cpu.load(std::memory_order_relaxed)));
    if (keeping) {
        /*
         * The request frame goes back before the keep: from the keep on, the session may take the call
         * back, and the thread it rings for reads the request ring from its head (region.h). Both after
         * the frame, off the session's path.
         */
        if (ep_->request != nullptr)
            ep_->request->release();
        ep_->region->keep(ep_->index);
    }
    const bool ring_bell = first_ && ep_->ring_runtime >= 0;
    first_ = false;
    open_ = false;
    if (extra_flags & frame_last) {
        done_ = true;
        bump(ep_->counters, Counter::messages_sent);
        bump(ep_->counters, Counter::bytes_sent, written_);
    }
    /* A request to a keeper notifies no one: the keeper holds the call, and it polls (region.h). */
    if (ring_bell)
        ep_->region->ring_doorbell(static_cast<std::uint32_t>(ep_->ring_runtime),
                                  SlotHandle{ep_->index, ep_->generation}, *ep_->waker, ep_->counters);
    else if (!(done_ && defer_last_notify_) && ep_->kept_runtime < 0)
        notify(ep_->peer(), *ep_->waker, ep_->counters);
}

Status MessageWriter::refuse_if_too_large(std::uint64_t more) {
    const std::uint64_t limit = ep_->region->max_message_size() + exempt_;
    if ((total_ == unknown_length || total_ <= limit) && written_ + more <= limit)
        return Status::ok;
    count_refusal(*ep_, Status::too_large);
    abort();
    return Status::too_large;
}

/*
 * Makes sure a frame with room is open for `want` more bytes: publishes the
 * open frame if it is full, then opens one. The new frame must have room
 * for all that is known to come when that fits in one frame: taking less
 * would split such a message at the end of the data area, and publishing
 * the first part is a notification that wakes a parked peer to read half a
 * message (the demo's 1 B..4 kB calls over 32 kB rings: 0.11 wakeups per
 * call). A message of several frames streams, its frames filling the ring
 * up to its end; the frame offers room for the rest of a message of known
 * length, else for at least a whole frame.
 */
Status MessageWriter::frame_for(std::uint64_t want) {
    if (open_ && frame_used_ == frame_.size())
        publish(0);
    if (open_)
        return Status::ok;
    const std::uint64_t coming = total_ != unknown_length ? total_ - written_ : want;
    const std::uint64_t min = coming >= 1 && coming <= ring_.max_chunk() ? coming : 1;
    const std::uint64_t max = total_ != unknown_length ? std::max<std::uint64_t>(coming, 1)
                                                       : std::max(want, ring_.max_chunk());
    return open_frame(min, max);
}

Status MessageWriter::write(std::span<const std::byte> bytes) {
    if (done_)
        return Status::bad_argument;
    if (Status s = refuse_if_too_large(bytes.size()); s != Status::ok)
        return s;
    if (total_ != unknown_length && written_ + bytes.size() > total_)
        return Status::bad_argument;
    while (!bytes.empty()) {
        if (Status s = frame_for(bytes.size()); s != Status::ok)
            return s;
        const std::size_t k = std::min<std::size_t>(bytes.size(), frame_.size() - frame_used_);
        std::memcpy(frame_.data() + frame_used_, bytes.data(), k);
        frame_used_ += k;
        written_ += k;
        bytes = bytes.subspan(k);
    }
    return Status::ok;
}

Status MessageWriter::reserve(std::uint64_t want, std::span<std::byte> *out) {
    if (done_)
        return Status::bad_argument;
    want = std::max<std::uint64_t>(want, 1);
    if (Status s = refuse_if_too_large(1); s != Status::ok)
        return s;
    if (total_ != unknown_length)
        want = std::min(want, total_ - written_);
    want = std::min(want, ep_->region->max_message_size() + exempt_ - written_);
    if (want == 0)
        return Status::bad_argument;
    if (Status s = frame_for(want); s != Status::ok)
        return s;
    *out = frame_.subspan(frame_used_, std::min<std::uint64_t>(want, frame_.size() - frame_used_));
    return Status::ok;
}

void MessageWriter::commit(std::uint64_t n) {
    n = std::min<std::uint64_t>(n, frame_.size() - frame_used_);
    frame_used_ += n;
    written_ += n;
}

Status MessageWriter::finish() {
    if (done_)
        return Status::bad_argument;
    if (total_ != unknown_length && written_ != total_) {
        abort();
        return Status::bad_argument;
    }
    if (!open_) {
        if (Status s = open_frame(0, 0); s != Status::ok)
            return s;
    }
    publish(frame_last);
    return Status::ok;
}

void MessageWriter::abort() {
    if (done_)
        return;
    if (!open_ && open_frame(0, 0) != Status::ok) {
        done_ = true;  // peer gone or ring corrupt: nobody to tell
        return;
    }
    written_ -= frame_used_;
    frame_used_ = 0;
    publish(frame_last | frame_aborted);
}

/* ---------------------------------------------------------------- reader */

Status MessageReader::validate(const Frame &f) {
    const FrameHeader &h = f.header;
    if (h.generation != ep_->generation)
        return Status::corrupt;
    const FrameKind kind = static_cast<FrameKind>(h.kind);
    if (!started_) {
        const bool kind_ok = ep_->is_client ? (kind == FrameKind::response || kind == FrameKind::error)
                                           : kind == FrameKind::request;
        if (!(h.flags & frame_first) || !kind_ok)
            return Status::corrupt;
        started_ = true;
        kind_ = kind;
        from_host_ = (h.flags & frame_from_host) != 0;
        total_ = h.total;
    } else if ((h.flags & frame_first) || kind != kind_ || h.total != total_) {
        return Status::corrupt;
    }
    if (h.flags & frame_aborted)
        return Status::aborted;
    /* A request carries its function name ahead of the payload the limit is for. */
    const std::uint64_t limit =
        ep_->region->max_message_size() + (kind_ == FrameKind::request ? max_function_name + 1 : 0);
    const std::uint64_t after = received_ + h.length;
    if ((total_ != unknown_length && total_ > limit) || after > limit)
        return Status::too_large;
    if (total_ != unknown_length && (after > total_ || ((h.flags & frame_last) && after != total_)))
        return Status::corrupt;
    return Status::ok;
}

/* Spins on the mark of the frame it waits for; the tail and the slot's state are read every 64th poll (wait.h). */
Status MessageReader::wait_frame() {
    const auto published = [&] { return ring_.frame_published(); };
    return wait_until_probed(ep_->self(), *ep_->waker, ep_->wait_policy(), ep_->counters, published, [&] {
        const Status r = ring_.peek(&frame_);
        if (r != Status::would_block)
            return r;
        const Status alive = ep_->call_alive();
        /* The keeper has not taken the request by now, or before a park: it is not running (region.h). */
        if (alive == Status::ok && ep_->kept_runtime >= 0 &&
            ep_->region->revoke_kept(SlotHandle{ep_->index, ep_->generation},
                                     static_cast<std::uint32_t>(ep_->kept_runtime), ep_->kept_phase)) {
            if (ep_->region->stats().valid())
                ep_->region->stats().add(GlobalCounter::kept_calls_taken_back);
            return ep_->begin_after_let_go();
        }
        if (alive == Status::ok)
            return Status::would_block;
        const Status last_look = ring_.peek(&frame_);  // published before the server let go?
        if (last_look != Status::would_block)
            return last_look;
        /* A keeper let go with this request unread: the call begins now, and the wait goes on. */
        if (ep_->kept_runtime >= 0 && alive == Status::server_restarted && ep_->region->server_epoch() == ep_->epoch)
            return ep_->begin_after_let_go();
        return alive;
    });
}

Status MessageReader::next(std::span<const std::byte> *chunk, bool *last) {
    release();
    if (finished_)
        return Status::bad_argument;
    const Status s = wait_frame();
    if (s != Status::ok) {
        count_refusal(*ep_, s);
        return s;
    }
    holding_ = true;
    const Status v = validate(frame_);
    if (v != Status::ok) {
        count_refusal(*ep_, v);
        return v;
    }
    received_ += frame_.header.length;
    *chunk = frame_.payload;
    *last = (frame_.header.flags & frame_last) != 0;
    finished_ = *last;
    kept_ = *last && (frame_.header.flags & frame_kept) != 0;
    kept_phase_ = (frame_.header.flags & frame_kept_phase) != 0;
    return Status::ok;
}

void MessageReader::release() {
    if (!holding_)
        return;
    ring_.consume(frame_);
    holding_ = false;
    const std::uint16_t flags = frame_.header.flags;
    if (!ep_->whole_turns || !(flags & frame_last) || (flags & frame_aborted))
        notify_room(*ep_);
}

Status MessageReader::read_all(std::vector<std::byte> *out) {
    out->clear();
    if (total_ != unknown_length && total_ <= ep_->region->max_message_size())
        out->reserve(total_);
    for (;;) {
        std::span<const std::byte> chunk;
        bool last = false;
        if (Status s = next(&chunk, &last); s != Status::ok)
            return s;
        if (out->empty() && total_ != unknown_length && total_ <= ep_->region->max_message_size())
            out->reserve(total_);
        out->insert(out->end(), chunk.begin(), chunk.end());
        if (last) {
            release();
            return Status::ok;
        }
    }
}

Status MessageReader::skip_rest() {
    for (;;) {
        const bool was_last = holding_ && (frame_.header.flags & frame_last);
        release();
        if (was_last || finished_)
            return Status::ok;
        const Status s = wait_frame();
        if (s != Status::ok)
            return s;
        if (frame_.header.generation != ep_->generation)
            return Status::corrupt;
        holding_ = true;
    }
}

}  // namespace courier::ipc
