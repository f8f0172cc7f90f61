/*
 * channel.h — whole messages over a slot's rings, with flow control.
 *
 * An Endpoint is one side of one call on one slot: which rings it writes
 * and reads, whose Waiter it parks on, which one it wakes, and how it tells
 * that the call is over from the other side (the client watches the server
 * epoch; the server watches whether the client abandoned the slot).
 *
 * MessageWriter streams a message of any size up to max_message_size in
 * frames of at most the ring's max_chunk(); a frame is published when it is
 * full or when the message is finished, so a small message is one frame
 * and one notification. reserve()/commit() let the producer build bytes in
 * place. A message the producer gives up on (too large, or a runtime that
 * fails after writing part of its response) is ended with an aborted
 * frame so that the consumer never waits for the rest; the reader reports
 * Status::aborted, and a server follows an aborted response with an error
 * message that says why.
 *
 * The client's first frame of a request also rings the runtime's
 * doorbell (Endpoint::ring_runtime): a serving thread is only woken for a
 * call whose first bytes are there to read.
 *
 * MessageReader validates every frame before use: generation, kind, flags,
 * and lengths against the declared total and max_message_size.
 *
 * Writers and readers refer to their Endpoint, which must outlive them (a
 * Client's or a ServerCall's, neither of which is copied): a copy in each
 * was 112 bytes written and read again on every call.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <cstdint>
#include <span>
#include <vector>

#include "courier/ipc/region.h"

namespace courier::ipc {

class MessageReader;

struct Endpoint {
    Region *region = nullptr;
    std::uint32_t index = nil_index;
    std::uint64_t generation = 0;
    std::uint64_t epoch = 0;  // client: the server epoch the call started in
    bool is_client = true;
    Waker *waker = nullptr;
    WaitPolicy policy{};
    SideCounters *counters = nullptr;
    /* Server: ends every wait once it holds (the worker is stopping). */
    const std::atomic<bool> *stopping = nullptr;
    /* Client: the runtime whose doorbell the first request frame rings. */
    std::int32_t ring_runtime = -1;
    /*
     * A call's slot (Client, ServerCall): each side sends one message a
     * turn, and after its last frame writes nothing more to that ring
     * until the next call, which begins after the reader is done. So no
     * one waits for the room the last frame's release makes, and that
     * release skips the fence and the look at the peer (notify_room): a
     * round trip in one thread took 177 ns instead of 205. Not after an
     * aborted last frame, which an error message follows.
     */
    bool whole_turns = false;
    /* Server: the final frame of a whole message says the thread keeps the call (frame_kept, region.h). */
    bool keep_offered = false;
    /* Server: such a frame went out, so the session may write its next request straight to the slot. */
    bool kept_sent = false;
    /* Server: the call's request reader, whose held frame a keep releases first (MessageWriter::publish). */
    MessageReader *request = nullptr;
    /* Client: this call's request went to the thread that kept the slot's call, for this runtime; -1: it did not. */
    std::int32_t kept_runtime = -1;
    /* Client, with kept_runtime: the phase of that keep (region.h). */
    bool kept_phase = false;

    SlotControl &control() const { return *region->slot(index); }
    Waiter &self() const { return is_client ? control().client : control().server; }
    Waiter &peer() const { return is_client ? control().server : control().client; }
    RingView outbound() const {
        return is_client ? region->to_server(index) : region->to_client(index);
    }
    RingView inbound() const {
        return is_client ? region->to_client(index) : region->to_server(index);
    }
    /* ok while the call can go on; otherwise why it cannot. */
    Status call_alive() const;
    /*
     * Client, on the kept path: the keeper let go without reading the
     * request, which waits in the ring; begins the call and rings for it
     * (region.h). would_block on success: the answer is still to come.
     */
    Status begin_after_let_go();
    /* The policy for waits on the rings: spinning capped region-wide. */
    WaitPolicy wait_policy() const {
        WaitPolicy p = region->with_spinner_cap(policy);
        p.peer = &peer();
        if (is_client)
            p.recheck = owed_wake_recheck;  // its wake may be owed (region.h)
        return p;
    }
};

class MessageWriter {
public:
    MessageWriter() = default;
    /* The first `exempt` bytes (a request's function name) do not count against max_message_size. */
    MessageWriter(Endpoint &ep, FrameKind kind, std::uint64_t total, std::uint64_t exempt = 0)
        : ep_(&ep), ring_(ep.outbound()), kind_(kind), total_(total), exempt_(exempt) {}
    MessageWriter(Endpoint &&, FrameKind, std::uint64_t, std::uint64_t = 0) = delete;  // would dangle
    /*
     * The final frame does not wake the peer: the caller does it after it
     * has let go of the slot (ServerCall::finish), so that the woken client
     * never finds the slot still held by this call.
     */
    void defer_last_notify() { defer_last_notify_ = true; }
    /* Every frame carries frame_from_host: the message is the host's own, not the runtime's. */
    void mark_from_host() { marks_ |= frame_from_host; }

    /* Copies bytes in, publishing full frames as it goes. */
    Status write(std::span<const std::byte> bytes);
    /*
     * In-place: a span of at least 1 and at most `want` writable bytes
     * (want 0 is treated as 1); write into it, then commit(n <= span size).
     */
    Status reserve(std::uint64_t want, std::span<std::byte> *out);
    void commit(std::uint64_t n);
    /* Publishes the final frame. */
    Status finish();
    /* Ends the message as aborted (the consumer reports too_large). */
    void abort();

    std::uint64_t written() const { return written_; }

private:
    Status open_frame(std::uint64_t min, std::uint64_t max);
    void publish(std::uint16_t extra_flags);
    Status refuse_if_too_large(std::uint64_t more);
    Status frame_for(std::uint64_t want);

    Endpoint *ep_ = nullptr;  // its owner's (a Client's or ServerCall's), which outlives it
    RingView ring_;
    FrameKind kind_ = FrameKind::pad;
    std::uint64_t total_ = unknown_length;
    std::uint64_t exempt_ = 0;
    std::uint64_t written_ = 0;
    std::span<std::byte> frame_;  // open reservation
    std::uint64_t frame_used_ = 0;
    bool open_ = false;
    bool first_ = true;
    bool done_ = false;
    bool defer_last_notify_ = false;
    std::uint16_t marks_ = 0;
};

class MessageReader {
public:
    MessageReader() = default;
    explicit MessageReader(Endpoint &ep) : ep_(&ep), ring_(ep.inbound()) {}
    explicit MessageReader(Endpoint &&) = delete;  // would dangle

    /*
     * Waits for the next frame of the message and returns its payload in
     * place; valid until release(). *last is set on the final frame.
     */
    Status next(std::span<const std::byte> *chunk, bool *last);
    void release();
    /* Reads the whole message into *out. */
    Status read_all(std::vector<std::byte> *out);
    /* Consumes and discards the rest of the message. */
    Status skip_rest();

    Endpoint &endpoint() const { return *ep_; }
    FrameKind kind() const { return kind_; }
    /* An error message that the serving host wrote, not the runtime (frame_from_host). */
    bool from_host() const { return from_host_; }
    std::uint64_t total() const { return total_; }
    std::uint64_t received() const { return received_; }
    bool finished() const { return finished_; }
    /* The message's last frame said the thread keeps the call (frame_kept), and the keep's phase. */
    bool kept() const { return kept_; }
    bool kept_phase() const { return kept_phase_; }

private:
    Status validate(const Frame &f);
    Status wait_frame();

    Endpoint *ep_ = nullptr;  // its owner's (a Client's or ServerCall's), which outlives it
    RingView ring_;
    Frame frame_{};
    bool holding_ = false;
    bool started_ = false;
    bool finished_ = false;
    FrameKind kind_ = FrameKind::pad;
    bool from_host_ = false;
    bool kept_ = false;
    bool kept_phase_ = false;
    std::uint64_t total_ = unknown_length;
    std::uint64_t received_ = 0;
};

}  // namespace courier::ipc
