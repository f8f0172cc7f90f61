/*
 * loader.h — a runtime library, opened and initialized after fork.
 *
 * load() runs on the worker's main thread: dlopen() the library, find the
 * newest entry point it exports (courier_runtime_v2, else _v1), check the
 * ABI, then init() it — dlopen and init with every signal blocked, so that
 * the threads the runtime starts (as it loads, or in init) never take
 * PostgreSQL's signals. A runtime can still unblock them on its threads
 * (Go's runtime unblocks SIGURG, the latches' signal, unless built to
 * leave it): the loader looks at every new thread's mask and warns. Any failure is kept
 * as a message that names the library and what to do; the worker logs it
 * and answers every call of that runtime with it, so callers never hang on
 * a runtime that is not there.
 */
#pragma once

#include <string>

#include "courier/runtime.h"

namespace courier::worker {

struct LoadedRuntime {
    std::string name;
    std::string path;
    std::string error;    // why it is not loaded
    std::string warning;  // loaded, but something the host should hear about
    const courier_runtime *v1 = nullptr;
    const courier_runtime2 *v2 = nullptr;
    void *state = nullptr;

    bool loaded() const { return v1 != nullptr || v2 != nullptr; }
    bool driven() const { return v2 != nullptr && v2->mode == COURIER_MODE_DRIVEN; }
    int abi() const { return v2 != nullptr ? 2 : v1 != nullptr ? 1 : 0; }
};

/* What init() gets besides the host tables. */
struct InitContext {
    const courier_host *host_v1;
    const courier_host2 *host_v2;
    courier_init_args args;
};

/* Fills *rt (name and path set by the caller); on failure rt->error says why. */
void load_runtime(LoadedRuntime *rt, const InitContext &context);

}  // namespace courier::worker
