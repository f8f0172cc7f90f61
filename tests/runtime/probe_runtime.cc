/*
 * courier_probe — a v2 runtime (callback mode) for tests: it records what
 * happens to it and misbehaves on request, so that tests can assert on the
 * runtime's side of the contract (what ran, what was cancelled, when
 * shutdown came) rather than on timing.
 *
 *   echo              the request
 *   hold "MS TAG"     asynchronous: answers TAG after MS ms from a timer
 *                     thread; on cancel fails at once. Logs "run TAG",
 *                     then "done TAG" or "cancel TAG"
 *   stuck "MS"        blocks in handle() for MS ms, ignoring cancel
 *   events            the log so far (one event a line), and clears it
 *   misuse            host functions used wrongly; returns "what=code" lines
 *   write_then_fail   writes 100 bytes, then fails with the request
 *   fail_then_stuck "MS"  fails at once, then stays in handle() for MS ms
 *                     and logs "stuck over"
 *   fail_nul          fails with a message that holds a NUL
 *   big "N"           writes N bytes in 64 kB pieces; logs the code that
 *                     stopped it ("big rc=K")
 *   alloc "N"         allocates N bytes (a std::bad_alloc escapes if it cannot)
 *   throw             throws std::runtime_error(request)
 *
 * Lifecycle lines (stop, shutdown with the calls still inside handle())
 * are appended to /tmp/courier-probe-<name>.log as well, since shutdown
 * happens when no call can ask for them.
 */
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "courier/runtime.h"

namespace {

const courier_host2 *host = nullptr;

struct Hold {
    courier_call_id id;
    std::string tag;
    bool settled = false;
};

class Probe {
public:
    explicit Probe(std::string name) : file_("/tmp/courier-probe-" + name + ".log") {
        timer_ = std::thread([this] { run_timers(); });
    }
    ~Probe() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            quit_ = true;
        }
        cv_.notify_all();
        timer_.join();
    }

    void log(const std::string &event) {
        std::lock_guard<std::mutex> lock(mu_);
        events_ += event + "\n";
    }
    std::string take() {
        std::lock_guard<std::mutex> lock(mu_);
        std::string all;
        all.swap(events_);
        return all;
    }
    void lifecycle(const std::string &event) {
        if (FILE *f = std::fopen(file_.c_str(), "a")) {
            std::fprintf(f, "%s\n", event.c_str());
            std::fclose(f);
        }
    }

    /* A call answered after `ms` from the timer thread, or failed at once on cancel. */
    void hold(courier_call_id id, long ms, std::string tag) {
        Hold *h = nullptr;
        {
            std::lock_guard<std::mutex> lock(mu_);
            holds_.push_back(std::make_unique<Hold>(Hold{id, std::move(tag)}));
            h = holds_.back().get();
            due_.emplace(std::chrono::steady_clock::now() + std::chrono::milliseconds(ms), h);
            events_ += "run " + h->tag + "\n";
            held.fetch_add(1);
        }
        cv_.notify_all();
        host->on_cancel(id, &Probe::cancelled, h);  // may run at once, on this thread
    }

    std::atomic<int> in_handle{0};
    std::atomic<int> held{0};

private:
    static void cancelled(void *arg, courier_call_id) { current->settle(static_cast<Hold *>(arg), true); }

    /* Ends a hold once: at its deadline or on cancel. */
    void settle(Hold *h, bool cancelled) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (h->settled)
                return;
            h->settled = true;
            events_ += (cancelled ? "cancel " : "done ") + h->tag + "\n";
        }
        if (cancelled) {
            host->fail(h->id, "cancelled", 9);
        } else {
            host->write(h->id, h->tag.data(), h->tag.size());
            host->finish(h->id);
        }
        held.fetch_sub(1);
    }

    void run_timers() {
        std::unique_lock<std::mutex> lock(mu_);
        while (!quit_) {
            const auto now = std::chrono::steady_clock::now();
            while (!due_.empty() && due_.begin()->first <= now) {
                Hold *h = due_.begin()->second;
                due_.erase(due_.begin());
                lock.unlock();
                settle(h, false);
                lock.lock();
            }
            if (due_.empty())
                cv_.wait(lock);
            else
                cv_.wait_until(lock, due_.begin()->first);
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::string events_;
    std::string file_;
    std::multimap<std::chrono::steady_clock::time_point, Hold *> due_;
    std::vector<std::unique_ptr<Hold>> holds_;
    bool quit_ = false;
    std::thread timer_;

public:
    static Probe *current;  // one probe per library: cancel callbacks find it here
};

Probe *Probe::current = nullptr;

std::string misuse(const courier_call_info *call) {
    std::string out;
    auto note = [&](const char *what, int rc) { out += std::string(what) + "=" + std::to_string(rc) + "\n"; };
    size_t n = 0;
    note("request_null", call->request == nullptr);
    note("write_null", host->write(call->id, nullptr, 5));
    note("read_null_n", host->read(call->id, nullptr, 0, nullptr));
    note("on_cancel_null", host->on_cancel(call->id, nullptr, nullptr));
    note("write_id0", host->write(0, "x", 1));
    note("finish_id0", host->finish(0));
    note("write_bogus", host->write(0xffffffffffffull, "x", 1));
    note("write_future", host->write(call->id + (1ull << 16), "x", 1));
    note("next_call_bad_runtime", host->next_call(1000, nullptr, 0));
    note("write", host->write(call->id, out.data(), out.size()));
    note("read_after_whole", host->read(call->id, &n, 0, &n));
    note("finish", host->finish(call->id));
    note("finish_again", host->finish(call->id));
    note("write_after_finish", host->write(call->id, "x", 1));
    note("fail_after_finish", host->fail(call->id, "x", 1));
    note("cancelled_after_finish", host->cancelled(call->id));
    return out;
}

/* The whole request (first piece and the rest). */
bool read_all(const courier_call_info *call, std::string *req) {
    req->assign(static_cast<const char *>(call->request), call->request_len);
    char buf[65536];
    for (size_t n = 0; !call->request_complete;) {
        if (host->read(call->id, buf, sizeof buf, &n) != COURIER_OK)
            return false;
        if (n == 0)
            break;
        req->append(buf, n);
    }
    return true;
}

void respond(courier_call_id id, const std::string &s) {
    host->write(id, s.data(), s.size());
    host->finish(id);
}

void big(Probe *p, const courier_call_info *call, const std::string &req) {
    const std::size_t total = std::strtoull(req.c_str(), nullptr, 10);
    const std::string piece(65536, 'b');
    int rc = COURIER_OK;
    for (std::size_t sent = 0; sent < total && rc == COURIER_OK; sent += piece.size())
        rc = host->write(call->id, piece.data(), std::min(piece.size(), total - sent));
    p->log("big rc=" + std::to_string(rc));
    host->finish(call->id);
}

void serve(Probe *p, const courier_call_info *call) {
    const std::string fn = call->fn;
    std::string req;
    if (fn == "misuse") {
        const std::string report = misuse(call);
        p->log(report);
        return;
    }
    if (!read_all(call, &req))
        return;
    if (fn == "echo") {
        respond(call->id, req);
    } else if (fn == "hold") {
        const std::size_t space = req.find(' ');
        p->hold(call->id, std::strtol(req.c_str(), nullptr, 10),
                space == std::string::npos ? "" : req.substr(space + 1));
    } else if (fn == "stuck") {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::strtol(req.c_str(), nullptr, 10)));
        respond(call->id, req);
    } else if (fn == "events") {
        respond(call->id, p->take());
    } else if (fn == "write_then_fail") {
        host->write(call->id, std::string(100, 'w').data(), 100);
        host->fail(call->id, req.data(), req.size());
    } else if (fn == "fail_then_stuck") {
        host->fail(call->id, "failed early", 12);
        std::this_thread::sleep_for(std::chrono::milliseconds(std::strtol(req.c_str(), nullptr, 10)));
        p->log("stuck over");
    } else if (fn == "fail_nul") {
        host->fail(call->id, "before\0after", 12);
    } else if (fn == "big") {
        big(p, call, req);
    } else if (fn == "alloc") {
        std::vector<char> v(std::strtoull(req.c_str(), nullptr, 10), 'a');
        respond(call->id, std::to_string(v.size()));
    } else if (fn == "throw") {
        throw std::runtime_error(req);
    } else {
        const std::string msg = "unknown function \"" + fn + "\"";
        host->fail(call->id, msg.data(), msg.size());
    }
}

const char *init(void **state, const courier_host2 *h, const courier_init_args *args) {
    host = h;
    auto *p = new Probe(args->name);
    Probe::current = p;
    p->lifecycle("init");
    *state = p;
    return nullptr;
}

void handle(void *state, const courier_call_info *call) {
    auto *p = static_cast<Probe *>(state);
    p->in_handle.fetch_add(1);
    struct Leave {
        Probe *p;
        ~Leave() { p->in_handle.fetch_sub(1); }
    } leave{p};
    serve(p, call);
}

void stop(void *state) { static_cast<Probe *>(state)->lifecycle("stop"); }

void shutdown(void *state) {
    auto *p = static_cast<Probe *>(state);
    p->lifecycle("shutdown in_handle=" + std::to_string(p->in_handle.load()) +
                 " held=" + std::to_string(p->held.load()));
    Probe::current = nullptr;
    delete p;
}

const courier_runtime2 runtime = {COURIER_RUNTIME_V2, COURIER_MODE_CALLBACK, "courier_probe", init, handle, stop,
                                  shutdown};

}  // namespace

extern "C" const courier_runtime2 *COURIER_RUNTIME_ENTRY_V2(void) { return &runtime; }
