/*
 * loader.cc — dlopen, entry point, ABI check, init with signals blocked.
 */
#include "loader.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "courier/worker/worker.h"

namespace courier::worker {
namespace {

/* fn() with every signal blocked: threads it starts inherit the mask. */
template <typename Fn>
const char *with_signals_blocked(Fn &&fn) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    const char *error = fn();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return error;
}

bool find_v2(LoadedRuntime *rt, void *dl, const InitContext &context) {
    auto entry = reinterpret_cast<courier_runtime2_entry_fn>(dlsym(dl, COURIER_RUNTIME_ENTRY_V2_NAME));
    if (entry == nullptr)
        return false;
    const courier_runtime2 *v2 = entry();
    if (v2 == nullptr || v2->abi_version != COURIER_RUNTIME_V2 ||
        (v2->mode != COURIER_MODE_CALLBACK && v2->mode != COURIER_MODE_DRIVEN) ||
        (v2->mode == COURIER_MODE_CALLBACK && v2->handle == nullptr)) {
        rt->error = "courier runtime \"" + rt->path + "\" exports " COURIER_RUNTIME_ENTRY_V2_NAME
                    " with an ABI version, mode or handle this courier does not accept (version " +
                    std::to_string(v2 != nullptr ? v2->abi_version : 0) + ", needs " +
                    std::to_string(COURIER_RUNTIME_V2) + "); rebuild it against this courier's courier/runtime.h";
        return true;
    }
    const courier_init_args *args = &context.args;
    void **state = &rt->state;
    const char *init_error =
        v2->init == nullptr ? nullptr : with_signals_blocked([&] { return v2->init(state, context.host_v2, args); });
    if (init_error != nullptr)
        rt->error = "courier runtime \"" + rt->path + "\" failed to start: " + init_error;
    else
        rt->v2 = v2;
    return true;
}

void find_v1(LoadedRuntime *rt, void *dl, const InitContext &context) {
    auto entry = reinterpret_cast<courier_runtime_entry_fn>(dlsym(dl, COURIER_RUNTIME_ENTRY_NAME));
    if (entry == nullptr) {
        rt->error = "courier runtime \"" + rt->path + "\" exports neither " COURIER_RUNTIME_ENTRY_V2_NAME
                    " nor " COURIER_RUNTIME_ENTRY_NAME " (not a courier runtime?)";
        return;
    }
    const courier_runtime *v1 = entry();
    if (v1 == nullptr || v1->abi_version != COURIER_RUNTIME_ABI_VERSION || v1->handle == nullptr) {
        rt->error = "courier runtime \"" + rt->path + "\" has ABI version " +
                    std::to_string(v1 ? v1->abi_version : 0) + "; " COURIER_RUNTIME_ENTRY_NAME " needs version " +
                    std::to_string(COURIER_RUNTIME_ABI_VERSION);
        return;
    }
    void **state = &rt->state;
    const int threads = context.args.worker_threads;
    const char *init_error =
        v1->init == nullptr ? nullptr : with_signals_blocked([&] { return v1->init(state, context.host_v1, threads); });
    if (init_error != nullptr)
        rt->error = "courier runtime \"" + rt->path + "\" failed to start: " + init_error;
    else
        rt->v1 = v1;
}

}  // namespace

std::string resolve_runtime_path(const std::string &library, const std::string &libdir) {
    if (library.find('/') != std::string::npos)
        return library;
    const bool has_suffix = library.size() > 3 && library.compare(library.size() - 3, 3, ".so") == 0;
    return libdir + "/" + library + (has_suffix ? "" : ".so");
}

/* This process's threads (Linux: /proc/self/task). */
std::set<long> threads_now() {
    std::set<long> ids;
    std::error_code ec;
    for (const auto &task : std::filesystem::directory_iterator("/proc/self/task", ec))
        ids.insert(std::strtol(task.path().filename().c_str(), nullptr, 10));
    return ids;
}

/*
 * The signals PostgreSQL sends the worker (shutdown, reload, ProcSignal,
 * latch wakeups) must reach its main thread only. A thread that takes one
 * of them can swallow it: a Go runtime with asynchronous preemption keeps
 * SIGURG — the latches' signal — unblocked on its threads and ignores a
 * SIGURG it did not send. Returns what the runtime's new threads take.
 */
std::string threads_taking_signals(const std::set<long> &before) {
    static constexpr std::pair<int, const char *> postgres_signals[] = {
        {SIGTERM, "SIGTERM"}, {SIGHUP, "SIGHUP"}, {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"},
        {SIGUSR1, "SIGUSR1"}, {SIGUSR2, "SIGUSR2"}, {SIGURG, "SIGURG"}};
    std::string found;
    for (long tid : threads_now()) {
        if (before.count(tid) != 0)
            continue;
        std::ifstream status("/proc/self/task/" + std::to_string(tid) + "/status");
        unsigned long long blocked = ~0ull;
        for (std::string line; std::getline(status, line);)
            if (line.rfind("SigBlk:", 0) == 0)
                blocked = std::strtoull(line.c_str() + 7, nullptr, 16);
        for (const auto &[sig, name] : postgres_signals)
            if (!(blocked & (1ull << (sig - 1))) && found.find(name) == std::string::npos)
                found += std::string(found.empty() ? "" : ", ") + name;
    }
    return found;
}

void load_runtime(LoadedRuntime *rt, const InitContext &context) {
    const std::set<long> before = threads_now();
    /* Blocked for dlopen too: a library may start threads as it loads (Go's runtime does). */
    void *dl = nullptr;
    with_signals_blocked([&] {
        dl = dlopen(rt->path.c_str(), RTLD_NOW | RTLD_LOCAL);
        return nullptr;
    });
    if (dl == nullptr) {
        const char *why = dlerror();
        rt->error = "could not load courier runtime \"" + rt->path + "\": " + (why ? why : "unknown error");
        return;
    }
    /* The library stays open for the life of the process: its threads may outlive a failed init. */
    if (!find_v2(rt, dl, context))
        find_v1(rt, dl, context);
    if (const std::string taken = threads_taking_signals(before); !taken.empty())
        rt->warning = "courier runtime \"" + rt->path + "\" started threads that take " + taken +
                      ", which PostgreSQL sends the worker's main thread: shutdown, reloads or latch wakeups may be "
                      "lost (a Go runtime: build with -ldflags=-X=runtime.godebugDefault=asyncpreemptoff=1)";
}

}  // namespace courier::worker
