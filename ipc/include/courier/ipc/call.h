/*
 * call.h — a request and its response, from either side of a slot.
 *
 * Client (a backend, or a test process) holds one leased slot for its
 * session and makes calls on it one at a time:
 *
 *   begin_call (held_by_server set) → request frames → doorbell on the
 *   first frame → response frames → done; the server clears its bit after
 *   its last frame.
 *
 * A request is "fn\0payload". The response is one message of kind response
 * (the result) or error (a message text). Any failure of a call other than
 * an error response leaves the slot in an unknown state, so the client
 * abandons it and leases a fresh one on the next call.
 *
 * ServerCall is the serving side of one call; the dispatcher accepts a slot
 * from the doorbell and hands it to a thread that reads the request and
 * writes the response. If the client abandons meanwhile, every wait returns
 * abandoned, the response is dropped, and finish() returns the slot.
 */
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "courier/ipc/channel.h"

namespace courier::ipc {

class Client {
public:
    Client(Region &region, Waker &waker, std::int32_t pid, std::int32_t latch_proc = -1)
        : region_(&region), waker_(&waker), pid_(pid), latch_proc_(latch_proc) {}

    /* Leases a slot (no_slot when none is free). */
    Status open();
    bool is_open() const { return handle_.valid(); }
    const SlotHandle &handle() const { return handle_; }
    /* Gives the slot back; abandon() if a call may be in flight. */
    void close();
    void abandon();

    /* Streaming: start, write the request, finish it, then read. */
    Status start(std::string_view fn, std::uint64_t payload_total, const WaitPolicy &policy);
    MessageWriter &request() { return writer_; }
    Status finish_request();
    MessageReader &response() { return reader_; }
    /* After the response is read (or on failure: abandons, records stats). */
    void end(Status outcome);

    /*
     * Whole call. On ok, *kind is response or error and *out its bytes.
     * On any other status the slot has been abandoned.
     */
    Status call(std::string_view fn, std::span<const std::byte> payload,
                std::vector<std::byte> *out, FrameKind *kind, const WaitPolicy &policy);

private:
    Region *region_;
    Waker *waker_;
    std::int32_t pid_;
    std::int32_t latch_proc_;
    SlotHandle handle_{};
    Endpoint ep_{};
    MessageWriter writer_;
    MessageReader reader_;
    bool rang_ = false;
    std::uint64_t started_ns_ = 0;
};

/*
 * Dispatcher's half: claims the call waiting on `index`, if there is one
 * that no server thread has taken yet. Stale doorbell bits return false.
 */
bool accept_call(Region &region, std::uint32_t index, std::uint64_t *generation);

class ServerCall {
public:
    ServerCall(Region &region, std::uint32_t index, std::uint64_t generation, Waker &waker,
               const WaitPolicy &policy);

    /* Reads the function name (everything up to the first NUL). */
    Status read_function(std::string *fn);
    /* Then the payload, streamed or whole. */
    MessageReader &request() { return reader_; }
    Status read_payload(std::vector<std::byte> *out);

    MessageWriter respond(FrameKind kind, std::uint64_t total);
    Status respond_all(FrameKind kind, std::span<const std::byte> bytes);
    Status respond_error(std::string_view message);

    /* Lets go of the slot; it returns to the free list if abandoned. */
    void finish();
    const Endpoint &endpoint() const { return ep_; }

private:
    Endpoint ep_{};
    MessageReader reader_;
    std::span<const std::byte> pending_;  // payload in the held first frame, after the name
    bool finished_ = false;
};

}  // namespace courier::ipc
