/*
 * server.cc — one call (serve_call) and one serving thread (serve_inline).
 */
#include "courier/ipc/server.h"

#include <string>
#include <vector>

namespace courier::ipc {
namespace {

/* A buffer a thread keeps between calls, but not one the size of the largest message ever. */
constexpr std::size_t kept_buffer_bytes = 1 << 20;

}  // namespace

void serve_call(ServerCall &call, const CallHandler &handler) {
    char fn[max_function_name + 1];
    std::size_t fn_length = 0;
    thread_local std::vector<std::byte> payload;
    Status s = call.read_function(fn, &fn_length);
    std::span<const std::byte> body;
    if (s == Status::ok && call.request().finished())
        body = call.first_piece();  // one frame: read in place, held until finish()
    else if (s == Status::ok && (s = call.read_payload(&payload)) == Status::ok)
        body = payload;
    if (s == Status::ok)
        handler(call, std::string_view(fn, fn_length), body);
    else if (s == Status::too_large && call.drain_request() == Status::ok)
        call.respond_error("request exceeds the maximum message size of the server");
    /* abandoned, aborted, server_restarted, corrupt: nobody to answer; finish() frees the slot. */
    call.finish();
    if (payload.capacity() > kept_buffer_bytes)
        std::vector<std::byte>().swap(payload);
}

void serve_inline(Region &region, Waker &waker, const WaitPolicy &policy,
                  std::chrono::nanoseconds call_timeout, const StopCheck &stop,
                  const CallHandler &handler) {
    Dispatcher dispatcher(region, 0);
    Accepted accepted;
    accepted.index = nil_index;
    bool kept = false;
    while (dispatcher.next(waker, policy.spin, stop, std::chrono::steady_clock::time_point::max(), &accepted,
                           accepted.index, kept) == Status::ok) {
        WaitPolicy call_policy = policy;
        if (call_timeout.count() > 0)
            call_policy.deadline = std::chrono::steady_clock::now() + call_timeout;
        ServerCall call(region, accepted, waker, call_policy);
        if (policy.spin.count() > 0)
            call.offer_keep();  // this thread spins next (Dispatcher::next)
        serve_call(call, handler);
        kept = call.kept();
    }
}

}  // namespace courier::ipc
