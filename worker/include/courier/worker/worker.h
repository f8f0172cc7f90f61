/*
 * courier/worker/worker.h — the serving side of courier, free of PostgreSQL.
 *
 * A Worker is what runs inside courier's background worker process after
 * fork, and inside the tests over a plain shared-memory segment: it loads
 * the runtimes (dlopen), and takes calls for each from its doorbell.
 *
 *   callback-mode runtimes (v1, and v2 with COURIER_MODE_CALLBACK) get a
 *       pool of `threads` threads each, so that one engine's slow calls
 *       never hold up another's;
 *   driven-mode runtimes take calls on their own threads (next_call).
 *
 * The host (ext/worker_main.cc in PostgreSQL) passes the region and a
 * Waker that can wake its clients (latches there, futexes in tests); the
 * Worker's threads park on futexes and call nothing of the host but that
 * Waker's wake(). Threads are created with every signal blocked, and so
 * is each runtime's init(): the host's signals stay on its main thread.
 *
 * Order on start: the server epoch begins first (calls of a predecessor
 * fail, none is taken twice), then runtimes load, then threads take calls.
 * Order on stop: see runtime.h (stop, grace period, shutdown only when no
 * thread can still be inside the runtime).
 *
 * One Worker per process at a time: the runtime ABI's host functions are
 * plain C functions, which find the running Worker through a global.
 */
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "courier/ipc/region.h"

namespace courier::worker {

struct RuntimeSpec {
    std::string name;     // what calls use: "name.fn"
    std::string library;  // a path, or a file name looked up in Config::libdir
};

struct Config {
    std::vector<RuntimeSpec> runtimes;  // index = the runtime's doorbell in the region
    std::string libdir;
    int threads = 4;  // pool threads per callback-mode runtime
    std::chrono::nanoseconds spin{std::chrono::microseconds(50)};
    std::chrono::milliseconds grace{1000};  // for running calls on stop
};

/* What became of one runtime, for the host's log. */
struct RuntimeReport {
    std::string name;
    std::string path;
    std::string error;    // empty when loaded
    std::string warning;  // e.g. threads that take the host's signals
    int abi = 0;          // 1 or 2; 0 when not loaded
    bool driven = false;
};

struct StopReport {
    std::size_t calls_failed = 0;         // still open after the grace period
    std::vector<std::string> not_shut_down;  // runtimes whose shutdown() was skipped, and why
};

class Worker {
public:
    Worker(ipc::Region &region, ipc::Waker &waker, Config config);
    ~Worker();
    Worker(const Worker &) = delete;
    Worker &operator=(const Worker &) = delete;

    /* Begins the server epoch, loads the runtimes, starts the threads. Returns the epoch. */
    std::uint64_t start();
    const std::vector<RuntimeReport> &runtimes() const;
    /* Spin budget of idle threads and waits; may change while threads run. */
    void set_spin(std::chrono::nanoseconds spin);
    /* Orderly shutdown; idempotent. */
    StopReport stop();

    struct State;

private:
    std::unique_ptr<State> state_;
};

/* Where a runtime library named `library` is looked for. */
std::string resolve_runtime_path(const std::string &library, const std::string &libdir);

}  // namespace courier::worker
