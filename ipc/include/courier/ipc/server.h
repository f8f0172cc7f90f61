/*
 * server.h — the serving side's main loop, for a host without a pool.
 *
 * The dispatcher parks on the region's dispatcher Waiter until a doorbell
 * rings, drains the doorbell, accepts each rung slot that has a call no one
 * took yet, and runs it. Hosts with a thread pool (the worker) use the same
 * wait_for_doorbell() and accept_call() and hand the ServerCall to a thread
 * instead; serve_inline() runs it on the calling thread, which is what the
 * demo, the tests and the benchmarks need.
 */
#pragma once

#include <functional>
#include <span>
#include <string_view>

#include "courier/ipc/call.h"

namespace courier::ipc {

/*
 * Parks until a doorbell rings or stop() holds; ok in both cases, or the
 * waker's interrupted or timeout status.
 */
Status wait_for_doorbell(Region &region, Waker &waker, const WaitPolicy &policy,
                         const std::function<bool()> &stop);

/*
 * Handles one call: the request has been read whole. The handler responds
 * through `call` (respond_all, respond_error or a streaming writer).
 */
using CallHandler =
    std::function<void(ServerCall &call, std::string_view fn, std::span<const std::byte> payload)>;

/* Reads the request, calls the handler, finishes the call. */
void serve_call(ServerCall &call, const CallHandler &handler);

/*
 * Serves calls on this thread until stop() returns true. A call whose client
 * stops sending for longer than call_timeout (0: never) is given up, so one
 * dead client cannot stall the loop; its slot stays leased to it.
 */
void serve_inline(Region &region, Waker &waker, const WaitPolicy &policy,
                  std::chrono::nanoseconds call_timeout, const std::function<bool()> &stop,
                  const CallHandler &handler);

}  // namespace courier::ipc
