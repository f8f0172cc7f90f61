/*
 * courier_echo — the default runtime, loaded through the runtime ABI.
 *
 *   echo   returns the request
 *   sleep  sleeps for the request's milliseconds (decimal text), returns it;
 *          stops early when the caller has gone
 *   fail   fails the call with the request as the error message
 *   throw  throws a C++ exception (the worker must survive it)
 */
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "courier/runtime.h"

namespace {

const courier_host *host = nullptr;

const char *init(void **state, const courier_host *h, int) {
    *state = nullptr;
    host = h;
    return nullptr;
}

void sleep_for_request(const char *req, size_t len, courier_response *resp) {
    const std::string text(req, len);
    char *end = nullptr;
    const long ms = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || ms < 0) {
        const std::string msg = "sleep expects a non-negative number of milliseconds, got \"" + text + "\"";
        host->error(resp, msg.data(), msg.size());
        return;
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
        if (host->cancelled(resp))
            return;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    host->write(resp, req, len);
}

void handle(void *, const char *fn, const void *request, size_t len, courier_response *resp) {
    const std::string name(fn);
    const char *req = static_cast<const char *>(request);
    if (name == "echo") {
        host->write(resp, request, len);
    } else if (name == "sleep") {
        sleep_for_request(req, len, resp);
    } else if (name == "fail") {
        host->error(resp, req, len);
    } else if (name == "throw") {
        throw std::runtime_error(std::string(req, len));
    } else {
        const std::string msg = "unknown function \"" + name + "\" (courier_echo offers echo, sleep, fail, throw)";
        host->error(resp, msg.data(), msg.size());
    }
}

void shutdown(void *) {}

const courier_runtime runtime = {COURIER_RUNTIME_ABI_VERSION, "courier_echo", init, handle, shutdown};

}  // namespace

extern "C" const courier_runtime *COURIER_RUNTIME_ENTRY(void) { return &runtime; }
