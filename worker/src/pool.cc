/*
 * pool.cc — a callback-mode runtime's threads (see pool.h).
 */
#include "pool.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <vector>

namespace courier::worker {
namespace {

/* A request buffer kept between v1 calls, but not one the size of the largest message ever. */
constexpr std::size_t kept_request_bytes = 1 << 20;

/* Fails the call with what escaped the runtime, without allocating. */
void fail_with_current_exception(const courier_host2 *host, courier_call_id id) {
    char msg[512];
    try {
        throw;
    } catch (const std::bad_alloc &) {
        std::snprintf(msg, sizeof msg, "out of memory in the courier runtime");
    } catch (const std::exception &e) {
        std::snprintf(msg, sizeof msg, "runtime threw an exception: %s", e.what());
    } catch (...) {
        std::snprintf(msg, sizeof msg, "runtime threw an exception of unknown type");
    }
    (void)host->fail(id, msg, std::strlen(msg));
}

/*
 * A v1 handler sees the request whole: the first piece and the rest, in a
 * buffer of this thread's. Out of memory fails the call (its caller gets
 * the reason); it never ends the worker.
 */
bool read_whole_request(Worker::State &w, const courier_call_info &call, std::vector<std::byte> *body) {
    const courier_host2 *host = host_v2();
    try {
        body->clear();
        if (call.request_total != COURIER_UNKNOWN_LENGTH)
            body->reserve(call.request_total);
        const auto *first = static_cast<const std::byte *>(call.request);
        body->insert(body->end(), first, first + call.request_len);
        std::byte chunk[16384];
        for (std::size_t n = 0;;) {
            if (host->read(call.id, chunk, sizeof chunk, &n) != COURIER_OK)
                return false;  // the caller went: the call has ended
            if (n == 0)
                return true;
            body->insert(body->end(), chunk, chunk + n);
        }
    } catch (const std::bad_alloc &) {
        std::vector<std::byte>().swap(*body);
        char msg[160];
        std::snprintf(msg, sizeof msg, "out of memory in the courier worker: a request of %llu bytes does not fit",
                      static_cast<unsigned long long>(call.request_total));
        (void)w.table.fail(call.id, msg, true);
        return false;
    }
}

}  // namespace

void Pool::start(int threads) {
    for (int i = 0; i < threads; ++i)
        threads_.push_back(start_quiet_thread([this] { run(); }));
}

bool Pool::stop(std::chrono::steady_clock::time_point until) {
    std::unique_lock<std::mutex> lock(mutex_);
    const bool all = exited_cv_.wait_until(lock, until, [this] { return exited_ == threads_.size(); });
    lock.unlock();
    for (auto &t : threads_) {
        if (all)
            t.join();
        else
            t.detach();  // still inside the runtime: the process will exit under it
    }
    threads_.clear();
    return all;
}

void Pool::run() {
    ipc::Dispatcher &dispatcher = *w_.dispatchers[runtime_];
    const ipc::StopCheck stop = [this] { return w_.stop_requested(); };
    std::uint32_t served_last = ipc::nil_index;  // the slot to watch while spinning (ipc/dispatch.h)
    ipc::Accepted accepted;                      // the call this thread kept, if `kept`
    bool kept = false;
    for (;;) {
        const auto spin = std::chrono::nanoseconds(w_.spin_ns.load(std::memory_order_relaxed));
        if (dispatcher.next(w_.waker, spin, stop, std::chrono::steady_clock::time_point::max(), &accepted,
                            served_last, kept) != ipc::Status::ok)
            break;
        served_last = accepted.index;
        kept = false;
        courier_call_info call{};
        if (w_.table.open(runtime_, accepted, w_.call_policy(), &call) == ipc::Status::ok)
            kept = serve(call, spin.count() > 0);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++exited_;
    exited_cv_.notify_all();
}

bool Pool::serve(const courier_call_info &call, bool offer_keep) {
    const LoadedRuntime &rt = w_.runtimes[runtime_];
    const courier_host2 *host = host_v2();
    if (!rt.loaded()) {
        (void)w_.table.fail(call.id, rt.error, true);
        return false;
    }
    if (rt.v1 != nullptr)
        return serve_v1(call, offer_keep);
    try {
        rt.v2->handle(rt.state, &call);  // may return with the call open
    } catch (...) {
        fail_with_current_exception(host, call.id);
    }
    return false;
}

/* v1: the whole request in one buffer, the call ends when handle() returns. */
bool Pool::serve_v1(const courier_call_info &call, bool offer_keep) {
    const LoadedRuntime &rt = w_.runtimes[runtime_];
    const courier_host2 *host = host_v2();
    thread_local std::vector<std::byte> body;
    courier_response response{call.id, false};
    const void *data = call.request;
    std::size_t len = call.request_len;
    if (!call.request_complete && !read_whole_request(w_, call, &body)) {
        (void)host->finish(call.id);  // ENDED unless read_whole_request left it open
        return false;
    }
    if (!call.request_complete) {
        data = body.data();
        len = body.size();
    }
    try {
        rt.v1->handle(rt.state, call.fn, data, len, &response);
    } catch (...) {
        fail_with_current_exception(host, call.id);
    }
    if (w_.stop_requested() && !response.wrote)
        (void)w_.table.fail(call.id, "the courier worker is shutting down; the call was cancelled", true);
    bool kept = false;
    (void)w_.table.finish(call.id, offer_keep ? &kept : nullptr);  // ENDED if the handler failed it, or the caller went
    if (body.capacity() > kept_request_bytes)
        std::vector<std::byte>().swap(body);
    return kept;
}

}  // namespace courier::worker
