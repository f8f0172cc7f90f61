/*
 * clock.h — the time a session's calls are timed with.
 *
 * A session reads the time twice a call: when it starts (for the latency
 * histogram) and when it ends (the histogram, and its turns, call.h).
 * Through the vDSO, clock_gettime took 24 ns on the development machine
 * (KVM, clocksource tsc), a fifth of the code both sides of a 64 B call
 * run; the CPU's time-stamp counter takes 10.
 *
 * So call_clock_ns() reads the counter, scaled to nanoseconds, where the
 * kernel keeps time with it (current_clocksource "tsc": the kernel found
 * it invariant and in step across CPUs), and steady_clock elsewhere.
 *
 * The scale is measured against steady_clock over a process's first
 * calibration_time of calls. Until then the value is steady_clock's, and
 * the counter takes over from a steady_clock reading: the values may step
 * back once then, by the few nanoseconds between two readings, so a
 * duration is taken as 0 when the end reads before the start. They are
 * for durations within one process: the origin is arbitrary, and the
 * rate can differ from CLOCK_MONOTONIC's by what NTP slews it (at most
 * 0.05 %).
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <chrono>
#include <cstdint>

namespace courier::ipc {

/* How long a process measures the counter against steady_clock before it uses it. */
inline constexpr std::chrono::milliseconds calibration_time{1};

/* Nanoseconds from an arbitrary origin (see the top). */
std::uint64_t call_clock_ns();

/* Whether call_clock_ns() reads the time-stamp counter now (for tests and diagnostics). */
bool call_clock_uses_counter();

}  // namespace courier::ipc
