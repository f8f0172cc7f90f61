/*
 * waker_test.cc — the Waker conformance suite on the futex waker, on a
 * waker with interrupts modelled on the latch waker's, and on one broken
 * on purpose (to see the suite fail). tests/pg runs the same suite on the
 * latch waker inside a backend.
 */
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "waker_conformance.h"

using namespace courier::ipc;
namespace conf = courier::ipc::conformance;

namespace {

std::string joined(const std::vector<std::string> &failures) {
    std::string s;
    for (const auto &f : failures)
        s += f + "\n";
    return s;
}

/* The latch waker's shape without PostgreSQL: a flag stands for InterruptPending. */
class InterruptibleWaker final : public Waker {
public:
    std::atomic<bool> pending{false};
    std::uint32_t prepare(Waiter &self) override { return futex_.prepare(self); }
    ParkResult park(Waiter &self, std::uint32_t token, std::chrono::nanoseconds timeout) override {
        if (pending)
            return ParkResult::interrupted;
        const ParkResult r = futex_.park(self, token, timeout);
        return pending ? ParkResult::interrupted : r;
    }
    void wake(Waiter &peer) override { futex_.wake(peer); }
    bool interrupted(const Waiter &) const override { return pending; }

private:
    FutexWaker futex_;
};

/* Forgets the token: parks on the word as it is at park(), so a wake before it is lost. */
class ForgetfulWaker final : public Waker {
public:
    std::uint32_t prepare(Waiter &) override { return 0; }
    ParkResult park(Waiter &self, std::uint32_t, std::chrono::nanoseconds timeout) override {
        return futex_.park(self, futex_.prepare(self), timeout);
    }
    void wake(Waiter &peer) override { futex_.wake(peer); }

private:
    FutexWaker futex_;
};

struct OwnWaiter {
    Waiter w;
    OwnWaiter() { init_waiter(w); }
};

}  // namespace

TEST(WakerThreads, TheFutexWakerKeepsTheContract) {
    FutexWaker waker;
    OwnWaiter self;
    const auto failures = conf::check_waker(waker, self.w, nullptr);
    EXPECT_TRUE(failures.empty()) << joined(failures);
}

TEST(WakerThreads, AWakerWithInterruptsKeepsTheContract) {
    InterruptibleWaker waker;
    OwnWaiter self;
    conf::Interrupts interrupts{[&] {
                                    waker.pending = true;
                                    waker.wake(self.w);
                                },
                                [&] { waker.pending = false; }};
    const auto failures = conf::check_waker(waker, self.w, &interrupts);
    EXPECT_TRUE(failures.empty()) << joined(failures);
}

TEST(WakerThreads, TheSuiteCatchesAWakerThatLosesAWake) {
    ForgetfulWaker waker;
    OwnWaiter self;
    const auto failures = conf::check_waker(waker, self.w, nullptr, std::chrono::milliseconds(200));
    ASSERT_FALSE(failures.empty());
    EXPECT_EQ(failures[0], "a wake between prepare() and park(): park() returned timeout, not woken");
}

TEST(WakerThreads, TheSuiteCatchesAWakerThatIgnoresInterrupts) {
    InterruptibleWaker waker;
    OwnWaiter self;
    /* The interrupt is raised but never reported: what a latch waker reading the wrong flag would do. */
    conf::Interrupts unseen{[&] { waker.wake(self.w); }, [] {}};
    const auto failures = conf::check_waker(waker, self.w, &unseen, std::chrono::milliseconds(200));
    ASSERT_EQ(failures.size(), 2u) << joined(failures);
    EXPECT_EQ(failures[0], "interrupted() did not report a pending interrupt");
    EXPECT_EQ(failures[1], "an interrupt while parked: park() returned woken, not interrupted");
}

TEST(WakerThreads, TwoThreadsTakeTurnsWithoutSpinning) {
    FutexWaker waker;
    conf::TurnTable table;
    conf::init_turn_table(table);
    constexpr int rounds = 2000;
    conf::TurnOutcome second;
    std::thread other([&] { second = conf::take_turns(waker, table, 1, rounds); });
    const conf::TurnOutcome first = conf::take_turns(waker, table, 0, rounds);
    other.join();
    EXPECT_EQ(first.failure, "");
    EXPECT_EQ(second.failure, "");
    EXPECT_EQ(table.turn.load(), 2u * rounds);
    /* With no spin budget the handshake itself carries the exchange: both sides parked. */
    EXPECT_GT(first.parks, 0u);
    EXPECT_GT(second.parks, 0u);
    EXPECT_LE(first.wakeups_sent + second.wakeups_sent, 2u * rounds);
}

TEST(WakerProcesses, TwoProcessesTakeTurnsWithoutSpinning) {
    FutexWaker waker;
    void *mem = mmap(nullptr, sizeof(conf::TurnTable), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem, MAP_FAILED);
    auto *table = new (mem) conf::TurnTable;
    conf::init_turn_table(*table);
    constexpr int rounds = 2000;
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        const conf::TurnOutcome o = conf::take_turns(waker, *table, 1, rounds);
        _exit(o.failure.empty() && o.parks > 0 ? 0 : 1);
    }
    const conf::TurnOutcome first = conf::take_turns(waker, *table, 0, rounds);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_EQ(first.failure, "");
    EXPECT_GT(first.parks, 0u);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child's half failed";
    EXPECT_EQ(table->turn.load(), 2u * rounds);
    munmap(mem, sizeof(conf::TurnTable));
}
