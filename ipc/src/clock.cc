/*
 * clock.cc — the calls' clock (see clock.h).
 *
 * One state word per process moves unknown → calibrating → counter (or
 * steady, where the counter is not to be trusted). The thread that moves
 * it claims the move first (busy), writes what the next state reads, then
 * publishes the state with release: a reader that acquires it reads
 * complete values. Readers that find busy use steady_clock meanwhile.
 */
#include "courier/ipc/clock.h"

#include <atomic>
#include <fstream>
#include <string>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace courier::ipc {
namespace {

enum State : int { unknown, busy, calibrating, counter, steady };

std::atomic<int> state{unknown};
/* Written once each before the release of the state that reads them. */
std::uint64_t start_ns, start_ticks;           // calibrating: where the measurement began
std::uint64_t base_ns, base_ticks, ns_per_tick_q32;  // counter: ns = base_ns + (ticks - base_ticks) * ns_per_tick_q32 >> 32

std::uint64_t steady_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

#if defined(__x86_64__)
std::uint64_t ticks() { return __rdtsc(); }

/* The kernel keeps time with the counter only once it has found it invariant and in step across CPUs. */
bool kernel_trusts_counter() {
    std::ifstream f("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    std::string source;
    return f >> source && source == "tsc";
}
#else
std::uint64_t ticks() { return 0; }
bool kernel_trusts_counter() { return false; }
#endif

bool claim(int from) { return state.compare_exchange_strong(from, busy, std::memory_order_acquire); }

/*
 * A steady_clock reading and the counter at the same moment: the counter
 * read on both sides of it, and again if something (an interrupt) came
 * between them, so that a millisecond's calibration is good to 10 ppm.
 */
std::uint64_t read_pair(std::uint64_t *at_ticks) {
    constexpr std::uint64_t close_ticks = 1000;
    std::uint64_t ns = 0;
    for (int tries = 0; tries < 4; ++tries) {
        const std::uint64_t before = ticks();
        ns = steady_ns();
        const std::uint64_t after = ticks();
        *at_ticks = before + (after - before) / 2;
        if (after - before <= close_ticks)
            break;
    }
    return ns;
}

std::uint64_t begin_calibration() {
    if (!kernel_trusts_counter()) {
        state.store(steady, std::memory_order_release);
        return steady_ns();
    }
    start_ns = read_pair(&start_ticks);
    state.store(calibrating, std::memory_order_release);
    return start_ns;
}

/* From here on the counter continues from a steady_clock reading. */
std::uint64_t end_calibration() {
    std::uint64_t t = 0;
    const std::uint64_t now = read_pair(&t);
    if (t <= start_ticks || now <= start_ns) {  // a counter that did not advance is no clock
        state.store(steady, std::memory_order_release);
        return now;
    }
    ns_per_tick_q32 = static_cast<std::uint64_t>((static_cast<unsigned __int128>(now - start_ns) << 32) / (t - start_ticks));
    base_ns = now;
    base_ticks = t;
    state.store(counter, std::memory_order_release);
    return now;
}

}  // namespace

std::uint64_t call_clock_ns() {
    const int s = state.load(std::memory_order_acquire);
    if (s == counter) {
        const std::uint64_t t = ticks();
        if (t <= base_ticks)  // another CPU's counter, a few ticks behind
            return base_ns;
        return base_ns + static_cast<std::uint64_t>((static_cast<unsigned __int128>(t - base_ticks) * ns_per_tick_q32) >> 32);
    }
    if (s == unknown && claim(unknown))
        return begin_calibration();
    const std::uint64_t now = steady_ns();
    if (s == calibrating && now - start_ns >= static_cast<std::uint64_t>(
                                                 std::chrono::nanoseconds(calibration_time).count()) &&
        claim(calibrating))
        return end_calibration();
    return now;
}

bool call_clock_uses_counter() { return state.load(std::memory_order_acquire) == counter; }

}  // namespace courier::ipc
