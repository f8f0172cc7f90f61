/*
 * server.h — serving calls on one thread, for hosts without a worker.
 *
 * serve_call() runs one accepted call through a handler that sees the
 * whole request; serve_inline() is a thread that takes calls for runtime 0
 * from the doorbell (Dispatcher) and serves them one after another. The
 * demo, the ipc tests and the benchmarks use them; the courier worker has
 * its own pools and the runtime ABI (worker/).
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <chrono>
#include <functional>
#include <span>
#include <string_view>

#include "courier/ipc/call.h"

namespace courier::ipc {

/*
 * Handles one call: the request has been read whole. The handler responds
 * through `call` (respond_all, respond_error or a streaming writer). The
 * payload is valid until the handler returns: a request of one frame is
 * read in place in the ring, as the worker reads it, not copied out.
 */
using CallHandler =
    std::function<void(ServerCall &call, std::string_view fn, std::span<const std::byte> payload)>;

/* Reads the request, calls the handler, finishes the call. */
void serve_call(ServerCall &call, const CallHandler &handler);

/*
 * Serves calls on this thread until stop() returns true (wake it with
 * Dispatcher(region, 0).wake_all()). A call whose client stops sending for
 * longer than call_timeout (0: never) is given up, so one stuck client
 * cannot stall the loop.
 */
void serve_inline(Region &region, Waker &waker, const WaitPolicy &policy,
                  std::chrono::nanoseconds call_timeout, const StopCheck &stop,
                  const CallHandler &handler);

}  // namespace courier::ipc
