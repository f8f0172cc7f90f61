/*
 * server.cc — the dispatcher loop (see server.h).
 */
#include "courier/ipc/server.h"

#include <string>
#include <vector>

namespace courier::ipc {

Status wait_for_doorbell(Region &region, Waker &waker, const WaitPolicy &policy,
                         const std::function<bool()> &stop) {
    Doorbell bell = region.doorbell();
    return wait_until(region.header().dispatcher, waker, policy, nullptr, [&] {
        return bell.any() || stop() ? Status::ok : Status::would_block;
    });
}

void serve_call(ServerCall &call, const CallHandler &handler) {
    std::string fn;
    std::vector<std::byte> payload;
    Status s = call.read_function(&fn);
    if (s == Status::ok)
        s = call.read_payload(&payload);
    if (s == Status::ok) {
        handler(call, fn, payload);
    } else if (s == Status::too_large && call.request().skip_rest() == Status::ok) {
        call.respond_error("request exceeds the maximum message size of the server");
    }
    /* abandoned, server_restarted, corrupt: nobody to answer; finish() frees the slot. */
    call.finish();
}

void serve_inline(Region &region, Waker &waker, const WaitPolicy &policy,
                  std::chrono::nanoseconds call_timeout, const std::function<bool()> &stop,
                  const CallHandler &handler) {
    Doorbell bell = region.doorbell();
    while (!stop()) {
        const std::uint32_t served = bell.drain([&](std::uint32_t index) {
            std::uint64_t generation = 0;
            if (!accept_call(region, index, &generation))
                return;
            WaitPolicy call_policy = policy;
            if (call_timeout.count() > 0)
                call_policy.deadline = std::chrono::steady_clock::now() + call_timeout;
            ServerCall call(region, index, generation, waker, call_policy);
            serve_call(call, handler);
        });
        if (served == 0)
            wait_for_doorbell(region, waker, policy, stop);
    }
}

}  // namespace courier::ipc
