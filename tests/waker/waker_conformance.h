/*
 * waker_conformance.h — the Waker contract of courier/ipc/wait.h as checks
 * that any host runs on its own Waker: the futex waker in a gtest
 * (tests/ipc/waker_test.cc), the latch waker inside a PostgreSQL backend
 * (tests/pg/waker_probe.cc). One suite, so that a host's waker is held to
 * exactly what the ipc core relies on.
 *
 * Each check returns "" when the Waker keeps its part, or what it broke.
 * A check that would hang on a broken Waker parks with a long timeout
 * instead (hang_guard): the result is then `timeout`, reported as a
 * failure, never a measured time. (The suite's own test passes a short
 * guard to a Waker broken on purpose, to see it report the lost wake.)
 *
 * The two-party exchange is the handshake itself: two processes take
 * turns through a TurnTable in shared memory with no spinning, so nearly
 * every wait parks and a single lost wakeup stops the exchange.
 */
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "courier/ipc/wait.h"

namespace courier::ipc::conformance {

inline constexpr std::chrono::seconds hang_guard{60};

/* What the host's signal handler does for a cancel (make it pending, wake), and how to drop it. */
struct Interrupts {
    std::function<void()> raise;
    std::function<void()> clear;
};

/*
 * The checks on one Waiter owned by the calling thread, already set up for
 * this Waker (a latch Waiter holds the caller's PGPROC number).
 * `interrupts` is null for a Waker that reports none (the futex waker).
 */
std::vector<std::string> check_waker(Waker &waker, Waiter &self, const Interrupts *interrupts,
                                     std::chrono::nanoseconds guard = hang_guard);

/* Two parties, each with its Waiter; `turn` says whose turn it is (turn % 2). */
struct TurnTable {
    std::atomic<std::uint64_t> turn;
    Waiter waiter[2];
};
void init_turn_table(TurnTable &table);

struct TurnOutcome {
    std::string failure;  // "" when every turn came
    std::uint64_t parks = 0;
    std::uint64_t wakeups_sent = 0;
};

/*
 * One party's half: `rounds` turns, waiting with no spin budget for the
 * peer's. The caller has set table.waiter[party] up for its Waker first.
 */
TurnOutcome take_turns(Waker &waker, TurnTable &table, int party, int rounds);

}  // namespace courier::ipc::conformance
