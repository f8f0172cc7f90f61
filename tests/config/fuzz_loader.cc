/*
 * libFuzzer target: the YAML loader and the sizing model must turn any input
 * into a plan or an InputError — never a crash, a hang or another exception.
 */
#include <cstddef>
#include <cstdint>
#include <string>

#include "plan.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string text(reinterpret_cast<const char *>(data), size);
    try {
        const auto w = courier::config::load_workload(text, "fuzz.yaml");
        courier::config::Existing existing;
        existing.max_connections = 100;
        (void)courier::config::make_plan(w, existing);
    } catch (const courier::config::InputError &) {
    }
    return 0;
}
