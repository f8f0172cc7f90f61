/*
 * waker_conformance.cc — see waker_conformance.h.
 */
#include "waker_conformance.h"

#include <thread>

namespace courier::ipc::conformance {
namespace {

using std::chrono::milliseconds;

const char *name(ParkResult r) {
    switch (r) {
    case ParkResult::woken:
        return "woken";
    case ParkResult::timeout:
        return "timeout";
    case ParkResult::interrupted:
        return "interrupted";
    }
    return "?";
}

std::string expect(const char *what, ParkResult got, ParkResult want) {
    if (got == want)
        return "";
    return std::string(what) + ": park() returned " + name(got) + ", not " + name(want);
}

/* Announces sleeping the way wait_until() does, parks, and takes the announcement back. */
ParkResult park_announced(Waker &waker, Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) {
    self.sleeping.store(sleeping_for_data, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const ParkResult r = waker.park(self, token, timeout);
    self.sleeping.store(0, std::memory_order_relaxed);
    return r;
}

std::string a_wake_between_prepare_and_park_is_not_lost(Waker &waker, Waiter &self, std::chrono::nanoseconds guard) {
    const std::uint32_t token = waker.prepare(self);
    self.sleeping.store(sleeping_for_data, std::memory_order_relaxed);
    waker.wake(self);
    return expect("a wake between prepare() and park()", park_announced(waker, self, token, guard),
                  ParkResult::woken);
}

std::string park_without_a_wake_times_out(Waker &waker, Waiter &self) {
    const std::uint32_t token = waker.prepare(self);
    return expect("park() with no wake", park_announced(waker, self, token, milliseconds(20)), ParkResult::timeout);
}

/* Runs `act` on another thread once `self` has announced sleeping (it may not have parked yet). */
std::thread once_sleeping(Waiter &self, std::function<void()> act) {
    return std::thread([&self, act = std::move(act)] {
        while (self.sleeping.load(std::memory_order_acquire) == 0)
            std::this_thread::yield();
        act();
    });
}

/*
 * Another thread wakes the parked waiter, `delay` after it announced sleeping: at once, and
 * late enough for a waker that changes how it sleeps as a park goes on (the latch waker:
 * futex, then latch).
 */
std::string a_wake_from_another_thread_ends_park(Waker &waker, Waiter &self, std::chrono::nanoseconds guard,
                                                 milliseconds delay, const char *what) {
    const std::uint32_t token = waker.prepare(self);
    std::thread other = once_sleeping(self, [&] {
        std::this_thread::sleep_for(delay);
        waker.wake(self);
    });
    const ParkResult r = park_announced(waker, self, token, guard);
    other.join();
    return expect(what, r, ParkResult::woken);
}

std::string a_pending_interrupt_stops_park(Waker &waker, Waiter &self, const Interrupts &in,
                                          std::chrono::nanoseconds guard) {
    const std::uint32_t token = waker.prepare(self);
    in.raise();
    const bool reported = waker.interrupted(self);
    const ParkResult r = park_announced(waker, self, token, guard);
    in.clear();
    if (!reported)
        return "interrupted() did not report a pending interrupt";
    return expect("park() with an interrupt pending", r, ParkResult::interrupted);
}

std::string an_interrupt_while_parked_ends_park(Waker &waker, Waiter &self, const Interrupts &in,
                                               std::chrono::nanoseconds guard) {
    const std::uint32_t token = waker.prepare(self);
    std::thread other = once_sleeping(self, in.raise);
    const ParkResult r = park_announced(waker, self, token, guard);
    other.join();
    in.clear();
    return expect("an interrupt while parked", r, ParkResult::interrupted);
}

}  // namespace

std::vector<std::string> check_waker(Waker &waker, Waiter &self, const Interrupts *interrupts,
                                     std::chrono::nanoseconds guard) {
    std::vector<std::string> results = {
        a_wake_between_prepare_and_park_is_not_lost(waker, self, guard),
        park_without_a_wake_times_out(waker, self),
        a_wake_from_another_thread_ends_park(waker, self, guard, milliseconds(0), "a wake from another thread"),
        a_wake_from_another_thread_ends_park(waker, self, guard, milliseconds(20), "a wake 20 ms into a park"),
    };
    if (interrupts != nullptr) {
        results.push_back(a_pending_interrupt_stops_park(waker, self, *interrupts, guard));
        results.push_back(an_interrupt_while_parked_ends_park(waker, self, *interrupts, guard));
    }
    std::vector<std::string> failures;
    for (auto &r : results)
        if (!r.empty())
            failures.push_back(std::move(r));
    return failures;
}

void init_turn_table(TurnTable &table) {
    table.turn.store(0, std::memory_order_relaxed);
    init_waiter(table.waiter[0]);
    init_waiter(table.waiter[1]);
}

TurnOutcome take_turns(Waker &waker, TurnTable &table, int party, int rounds) {
    TurnOutcome out;
    SideCounters counters{};
    WaitPolicy policy;
    policy.spin = std::chrono::nanoseconds(0);
    Waiter &mine = table.waiter[party];
    Waiter &peers = table.waiter[1 - party];
    for (int i = 0; i < rounds; ++i) {
        const std::uint64_t my_turn = 2 * static_cast<std::uint64_t>(i) + static_cast<std::uint64_t>(party);
        policy.deadline = std::chrono::steady_clock::now() + hang_guard;
        const Status s = wait_until(mine, waker, policy, &counters, [&] {
            return table.turn.load(std::memory_order_acquire) == my_turn ? Status::ok : Status::would_block;
        });
        if (s != Status::ok) {
            out.failure = "party " + std::to_string(party) + " waiting for turn " + std::to_string(my_turn) +
                          ": " + describe(s) + " (the table is at " + std::to_string(table.turn.load()) + ")";
            break;
        }
        table.turn.store(my_turn + 1, std::memory_order_release);
        notify(peers, waker, &counters);
    }
    out.parks = counters.value[static_cast<std::size_t>(Counter::sleeps)].load();
    out.wakeups_sent = counters.value[static_cast<std::size_t>(Counter::wakeups_sent)].load();
    return out;
}

}  // namespace courier::ipc::conformance
