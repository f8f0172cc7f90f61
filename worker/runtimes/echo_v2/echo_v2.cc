/*
 * courier_echo_async / courier_echo_driven — the echo runtime on ABI v2.
 *
 * The same functions as courier_echo (v1), written the way an engine with
 * its own scheduler uses v2:
 *
 *   echo   returns the request (read whole first: it may span many pieces)
 *   sleep  answers after the request's milliseconds (decimal text) from a
 *          timer thread — no thread waits per call, so 64 sleeps of 500 ms
 *          take 500 ms on any number of threads; fails with "cancelled"
 *          at once when the caller goes (on_cancel), not at the deadline
 *   fail   fails the call with the request as the error message
 *   throw  throws a C++ exception (callback mode: the worker fails the
 *          call; driven mode: this runtime catches its own)
 *
 * Built twice from this file: COURIER_ECHO_DRIVEN selects driven mode, in
 * which `threads` threads of the runtime take calls with next_call().
 */
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "courier/runtime.h"

namespace {

const courier_host2 *host = nullptr;

void fail(courier_call_id id, const std::string &msg) { host->fail(id, msg.data(), msg.size()); }

/* Answers sleeps when they are due, or at once when their caller goes. */
class Timers {
public:
    void start() { thread_ = std::thread([this] { run(); }); }
    void stop() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            quit_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable())
            thread_.join();
    }
    void add(courier_call_id id, std::chrono::milliseconds ms, std::string reply) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            due_.emplace(std::chrono::steady_clock::now() + ms, Sleep{id, std::move(reply)});
        }
        cv_.notify_all();
        host->on_cancel(id, &Timers::cancelled, this);  // may run at once, on this thread
    }

private:
    struct Sleep {
        courier_call_id id;
        std::string reply;
    };
    static void cancelled(void *self, courier_call_id id) {
        auto *t = static_cast<Timers *>(self);
        {
            std::lock_guard<std::mutex> lock(t->mu_);
            t->gone_.push_back(id);
        }
        t->cv_.notify_all();
    }
    void run() {
        std::unique_lock<std::mutex> lock(mu_);
        while (!quit_) {
            for (courier_call_id id : gone_)
                for (auto it = due_.begin(); it != due_.end(); ++it)
                    if (it->second.id == id) {
                        due_.erase(it);
                        fail(id, "cancelled");
                        break;
                    }
            gone_.clear();
            const auto now = std::chrono::steady_clock::now();
            while (!due_.empty() && due_.begin()->first <= now) {
                const Sleep s = due_.begin()->second;
                due_.erase(due_.begin());
                host->write(s.id, s.reply.data(), s.reply.size());
                host->finish(s.id);
            }
            if (due_.empty())
                cv_.wait(lock);
            else
                cv_.wait_until(lock, due_.begin()->first);
        }
        for (auto &[when, s] : due_)
            fail(s.id, "the runtime is shutting down");
        due_.clear();
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::multimap<std::chrono::steady_clock::time_point, Sleep> due_;
    std::vector<courier_call_id> gone_;
    bool quit_ = false;
    std::thread thread_;
};

struct State {
    Timers timers;
    std::uint32_t runtime_id = 0;
    std::vector<std::thread> takers;  // driven mode
};

/* The whole request: the first piece, and the rest if there is more. */
bool read_request(const courier_call_info *call, std::string *out) {
    out->assign(static_cast<const char *>(call->request), call->request_len);
    if (call->request_complete)
        return true;
    char buf[65536];
    for (;;) {
        size_t n = 0;
        if (host->read(call->id, buf, sizeof buf, &n) != COURIER_OK)
            return false;  // the caller went: the call has ended
        if (n == 0)
            return true;
        out->append(buf, n);
    }
}

void serve(State *st, const courier_call_info *call) {
    const std::string fn = call->fn;
    std::string req;
    if (!read_request(call, &req))
        return;
    if (fn == "echo") {
        host->write(call->id, req.data(), req.size());
        host->finish(call->id);
    } else if (fn == "sleep") {
        char *end = nullptr;
        const long ms = std::strtol(req.c_str(), &end, 10);
        if (req.empty() || *end != '\0' || ms < 0)
            fail(call->id, "sleep expects a non-negative number of milliseconds, got \"" + req + "\"");
        else
            st->timers.add(call->id, std::chrono::milliseconds(ms), req);
    } else if (fn == "fail") {
        fail(call->id, req);
    } else if (fn == "throw") {
        throw std::runtime_error(req);
    } else {
        fail(call->id, "unknown function \"" + fn + "\" (courier_echo offers echo, sleep, fail, throw)");
    }
}

[[maybe_unused]] void handle(void *state, const courier_call_info *call) { serve(static_cast<State *>(state), call); }

/* Driven mode: a thread of ours takes calls until the worker stops. */
[[maybe_unused]] void take_calls(State *st) {
    courier_call_info call;
    for (;;) {
        const int rc = host->next_call(st->runtime_id, &call, -1);
        if (rc == COURIER_STOPPING)
            return;
        if (rc != COURIER_OK)
            continue;
        try {
            serve(st, &call);
        } catch (const std::exception &e) {
            fail(call.id, std::string("runtime threw an exception: ") + e.what());
        }
    }
}

const char *init(void **state, const courier_host2 *h, const courier_init_args *args) {
    host = h;
    auto *st = new State();
    st->runtime_id = args->runtime_id;
    st->timers.start();
#ifdef COURIER_ECHO_DRIVEN
    for (int i = 0; i < args->worker_threads; ++i)
        st->takers.emplace_back(take_calls, st);
#endif
    *state = st;
    return nullptr;
}

void stop(void *) {}  // next_call returns COURIER_STOPPING to our threads; cancel callbacks fire

void shutdown(void *state) {
    auto *st = static_cast<State *>(state);
    for (auto &t : st->takers)
        t.join();
    st->timers.stop();
    delete st;
}

#ifdef COURIER_ECHO_DRIVEN
const courier_runtime2 runtime = {COURIER_RUNTIME_V2, COURIER_MODE_DRIVEN, "courier_echo_driven", init, nullptr,
                                    stop, shutdown};
#else
const courier_runtime2 runtime = {COURIER_RUNTIME_V2, COURIER_MODE_CALLBACK, "courier_echo_async", init, handle,
                                    stop, shutdown};
#endif

}  // namespace

extern "C" const courier_runtime2 *COURIER_RUNTIME_ENTRY_V2(void) { return &runtime; }
