/*
 * runtime_host.h — loading a runtime and running calls through it.
 *
 * The loader runs on the worker's main thread after fork: dlopen() the
 * library named by courier.runtime, find its versioned entry point, check
 * the ABI version, and init() it. Any failure is kept as a message: the
 * worker logs it once and every call is answered with an error that names
 * the library, so callers never hang on a runtime that is not there.
 *
 * run_call() is what a pool thread does with an accepted call: read the
 * request, hand it to the runtime, stream the runtime's writes back as the
 * response, and turn an escaped C++ exception into an error response.
 */
#pragma once

#include <string>

#include "courier/ipc/call.h"
#include "courier/runtime.h"

namespace courier::worker {

class RuntimeHost {
public:
    /* Loads and initializes; on failure, error() says why. */
    bool load(const std::string &name, const std::string &libdir, int threads);
    void shutdown();
    bool loaded() const { return runtime_ != nullptr; }
    const std::string &error() const { return error_; }
    const std::string &path() const { return path_; }

    void run_call(ipc::ServerCall &call) const;
    /* From now on cancelled() is true for every call: the worker is stopping. */
    void begin_shutdown();

private:
    std::string path_;
    std::string error_;
    void *dl_ = nullptr;
    const courier_runtime *runtime_ = nullptr;
    void *state_ = nullptr;
};

/* True once the worker has begun to stop (read by pool threads). */
bool shutting_down();

/* Where a runtime named `name` is looked for. */
std::string resolve_runtime_path(const std::string &name, const std::string &libdir);

}  // namespace courier::worker
