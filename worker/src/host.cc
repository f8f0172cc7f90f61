/*
 * host.cc — the host tables of both ABIs, as plain C functions.
 *
 * A runtime's threads call these from anywhere, so each finds the running
 * Worker through one atomic pointer and counts itself in `in_host` while
 * inside (the Worker's stop waits for that count before shutdown()). With
 * no Worker running they refuse politely.
 *
 * v1 is a thin layer over v2: a courier_response is the id of the call
 * that the pool thread running handle() holds.
 */
#include <chrono>
#include <cstring>
#include <string_view>

#include "state.h"

namespace courier::worker {
namespace {

std::atomic<Worker::State *> running{nullptr};

/* Marks a thread inside the host for as long as it lives. */
class InHost {
public:
    InHost() : state_(running.load(std::memory_order_acquire)) {
        if (state_ != nullptr)
            state_->in_host.fetch_add(1, std::memory_order_acq_rel);
    }
    ~InHost() {
        if (state_ != nullptr)
            state_->in_host.fetch_sub(1, std::memory_order_acq_rel);
    }
    Worker::State *operator->() const { return state_; }
    explicit operator bool() const { return state_ != nullptr; }

private:
    Worker::State *state_;
};

int v2_write(courier_call_id id, const void *data, size_t len) {
    InHost w;
    return w ? w->table.write(id, data, len) : COURIER_STOPPING;
}

int v2_finish(courier_call_id id) {
    InHost w;
    return w ? w->table.finish(id) : COURIER_STOPPING;
}

int v2_fail(courier_call_id id, const char *message, size_t len) {
    InHost w;
    if (!w)
        return COURIER_STOPPING;
    if (message == nullptr && len != 0)
        return COURIER_MISUSE;
    return w->table.fail(id, std::string_view(message != nullptr ? message : "", len));
}

int v2_read(courier_call_id id, void *buf, size_t cap, size_t *n) {
    InHost w;
    return w ? w->table.read(id, buf, cap, n) : COURIER_STOPPING;
}

int v2_cancelled(courier_call_id id) {
    InHost w;
    return w ? w->table.cancelled(id) : 1;
}

int v2_on_cancel(courier_call_id id, courier_cancel_fn fn, void *arg) {
    InHost w;
    return w ? w->table.on_cancel(id, fn, arg) : COURIER_STOPPING;
}

int v2_next_call(uint32_t runtime, courier_call_info *out, int64_t timeout_ms) {
    InHost w;
    if (!w)
        return COURIER_STOPPING;
    if (out == nullptr || runtime >= w->dispatchers.size())
        return COURIER_MISUSE;
    const auto deadline = timeout_ms < 0 ? std::chrono::steady_clock::time_point::max()
                                         : std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    const ipc::StopCheck stop = [&] { return w->stop_requested(); };
    thread_local std::uint32_t served_last = ipc::nil_index;  // the slot to watch while spinning (ipc/dispatch.h)
    for (;;) {
        ipc::Accepted call;
        const ipc::Status s = w->dispatchers[runtime]->next(
            w->waker, std::chrono::nanoseconds(w->spin_ns.load(std::memory_order_relaxed)), stop, deadline, &call,
            served_last);
        if (s == ipc::Status::ok)
            served_last = call.index;
        if (s == ipc::Status::stopping)
            return COURIER_STOPPING;
        if (s == ipc::Status::timeout)
            return COURIER_TIMEOUT;
        try {
            if (w->table.open(runtime, call, w->call_policy(), out) == ipc::Status::ok)
                return COURIER_OK;
        } catch (const std::bad_alloc &) {
            return COURIER_NOMEM;
        }
    }
}

const char *v2_describe(int rc) {
    switch (rc) {
    case COURIER_OK: return "ok";
    case COURIER_GONE: return "the caller has gone or the worker is stopping; the call has ended";
    case COURIER_ENDED: return "the call has already ended";
    case COURIER_INVALID: return "not a call id that courier gave out";
    case COURIER_TOO_LARGE: return "the response exceeds courier.max_message_size; the call failed";
    case COURIER_TIMEOUT: return "no call arrived within the timeout";
    case COURIER_STOPPING: return "the courier worker is stopping";
    case COURIER_NOMEM: return "out of memory in the courier worker; the call failed";
    case COURIER_MISUSE: return "misuse: a NULL argument, a bad runtime id, or write before the request was read";
    }
    return "unknown courier result code";
}

int v1_write(courier_response *r, const void *data, size_t len) {
    if (r == nullptr)
        return 1;
    r->wrote = true;
    return v2_write(r->id, data, len) == COURIER_OK ? 0 : 1;
}

void v1_error(courier_response *r, const char *message, size_t len) {
    if (r != nullptr)
        (void)v2_fail(r->id, message, message != nullptr ? len : 0);
}

int v1_cancelled(courier_response *r) { return r == nullptr ? 1 : v2_cancelled(r->id); }

const courier_host host_table_v1 = {COURIER_RUNTIME_ABI_VERSION, v1_write, v1_error, v1_cancelled};
const courier_host2 host_table_v2 = {COURIER_RUNTIME_V2, sizeof(courier_host2), v2_write, v2_finish,
                                       v2_fail, v2_read, v2_cancelled, v2_on_cancel, v2_next_call,
                                       v2_describe};

}  // namespace

const courier_host *host_v1() { return &host_table_v1; }
const courier_host2 *host_v2() { return &host_table_v2; }
void set_running(Worker::State *state) { running.store(state, std::memory_order_release); }

}  // namespace courier::worker
