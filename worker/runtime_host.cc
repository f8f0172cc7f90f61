/*
 * runtime_host.cc — dlopen, ABI check, and the response writer a runtime
 * sees. Nothing here calls PostgreSQL: it runs on pool threads too.
 */
#include "runtime_host.h"

#include <dlfcn.h>

#include <atomic>
#include <cstring>
#include <exception>

#include "courier/ipc/server.h"

/* One call's response as the runtime sees it (runtime.h's opaque type). */
struct courier_response {
    courier::ipc::ServerCall *call;
    courier::ipc::MessageWriter writer;
    bool started = false;
    bool failed = false;
    bool gone = false;
};

namespace courier::worker {
namespace {

std::atomic<bool> stopping{false};

int host_write(courier_response *r, const void *data, size_t len) {
    if (r->failed || r->gone)
        return r->gone ? 1 : 0;
    if (!r->started) {
        r->writer = r->call->respond(ipc::FrameKind::response, ipc::unknown_length);
        r->started = true;
    }
    const ipc::Status s = r->writer.write(std::span<const std::byte>(static_cast<const std::byte *>(data), len));
    if (s != ipc::Status::ok)
        r->gone = true;  // abandoned, too large (aborted), or corrupt: stop writing
    return r->gone ? 1 : 0;
}

void host_error(courier_response *r, const char *message, size_t len) {
    if (r->failed || r->gone)
        return;
    r->failed = true;
    if (r->started) {
        r->writer.abort();  // the caller cannot tell a half response from a whole one
        return;
    }
    r->call->respond_error(std::string_view(message, strnlen(message, len)));
}

int host_cancelled(courier_response *r) {
    const ipc::Endpoint &ep = r->call->endpoint();
    return r->gone || stopping.load(std::memory_order_relaxed) || ep.region->client_gone(ep.index, ep.generation)
               ? 1
               : 0;
}

const courier_host host_table = {COURIER_RUNTIME_ABI_VERSION, host_write, host_error, host_cancelled};

}  // namespace

bool shutting_down() { return stopping.load(std::memory_order_relaxed); }

void RuntimeHost::begin_shutdown() { stopping.store(true, std::memory_order_relaxed); }

std::string resolve_runtime_path(const std::string &name, const std::string &libdir) {
    if (name.find('/') != std::string::npos)
        return name;
    const bool has_suffix = name.size() > 3 && name.compare(name.size() - 3, 3, ".so") == 0;
    return libdir + "/" + name + (has_suffix ? "" : ".so");
}

bool RuntimeHost::load(const std::string &name, const std::string &libdir, int threads) {
    path_ = resolve_runtime_path(name, libdir);
    dl_ = dlopen(path_.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (dl_ == nullptr) {
        const char *why = dlerror();
        error_ = "could not load courier runtime \"" + path_ + "\": " + (why ? why : "unknown error");
        return false;
    }
    auto entry = reinterpret_cast<courier_runtime_entry_fn>(dlsym(dl_, COURIER_RUNTIME_ENTRY_NAME));
    if (entry == nullptr) {
        error_ = "courier runtime \"" + path_ + "\" does not export " COURIER_RUNTIME_ENTRY_NAME
                 " (not a courier runtime, or built for another ABI)";
        return false;
    }
    const courier_runtime *rt = entry();
    if (rt == nullptr || rt->abi_version != COURIER_RUNTIME_ABI_VERSION || rt->handle == nullptr) {
        error_ = "courier runtime \"" + path_ + "\" has ABI version " +
                 std::to_string(rt ? rt->abi_version : 0) + "; this courier needs version " +
                 std::to_string(COURIER_RUNTIME_ABI_VERSION);
        return false;
    }
    const char *init_error = rt->init != nullptr ? rt->init(&state_, &host_table, threads) : nullptr;
    if (init_error != nullptr) {
        error_ = "courier runtime \"" + path_ + "\" failed to start: " + init_error;
        return false;
    }
    runtime_ = rt;
    return true;
}

void RuntimeHost::shutdown() {
    if (runtime_ != nullptr && runtime_->shutdown != nullptr)
        runtime_->shutdown(state_);
    runtime_ = nullptr;
}

void RuntimeHost::run_call(ipc::ServerCall &call) const {
    ipc::serve_call(call, [&](ipc::ServerCall &c, std::string_view fn, std::span<const std::byte> payload) {
        if (runtime_ == nullptr) {
            c.respond_error(error_);
            return;
        }
        courier_response response{&c, {}, false, false, false};
        const std::string fn_z(fn);
        try {
            runtime_->handle(state_, fn_z.c_str(), payload.data(), payload.size(), &response);
        } catch (const std::exception &e) {
            const std::string msg = std::string("runtime threw an exception: ") + e.what();
            host_error(&response, msg.data(), msg.size());
        } catch (...) {
            const std::string msg = "runtime threw an exception of unknown type";
            host_error(&response, msg.data(), msg.size());
        }
        if (response.failed || response.gone)
            return;
        if (shutting_down() && !response.started) {
            c.respond_error("the courier worker is shutting down; the call was cancelled");
            return;
        }
        if (response.started)
            response.writer.finish();
        else
            c.respond_all(ipc::FrameKind::response, {});
    });
}

}  // namespace courier::worker
