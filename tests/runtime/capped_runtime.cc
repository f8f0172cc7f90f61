/*
 * courier_capped — a v1 echo runtime that caps the worker's address space
 * in init (setrlimit on its own process: what a test may do to a worker it
 * does not own), so that a large request makes the worker's own buffer
 * allocation fail. Tests that out of memory is one call's error.
 */
#include <sys/resource.h>

#include <fstream>
#include <string>

#include "courier/runtime.h"

namespace {

const courier_host *host = nullptr;

long vm_size_kb() {
    std::ifstream f("/proc/self/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("VmSize:", 0) == 0)
            return std::stol(line.substr(7));
    return -1;
}

const char *init(void **state, const courier_host *h, int) {
    host = h;
    *state = nullptr;
    const rlimit cap{static_cast<rlim_t>(vm_size_kb() + 160 * 1024) * 1024, RLIM_INFINITY};
    return setrlimit(RLIMIT_AS, &cap) == 0 ? nullptr : "setrlimit failed";
}

void handle(void *, const char *, const void *request, size_t len, courier_response *r) { host->write(r, request, len); }

const courier_runtime runtime = {COURIER_RUNTIME_ABI_VERSION, "courier_capped", init, handle, nullptr};

}  // namespace

extern "C" const courier_runtime *COURIER_RUNTIME_ENTRY(void) { return &runtime; }
