/*
 * harness.h — real shared memory and real processes for the ipc tests.
 *
 * A TestSegment is an ipc::Segment (a named Boost.Interprocess segment
 * holding a region and its stats) with scratch words for the tests. Children made with
 * spawn() inherit the mapping (fork), exactly as PostgreSQL backends inherit
 * the postmaster's; map_again() maps the same segment at another address to
 * show that nothing in it depends on where it is mapped.
 *
 * Children report failure through their exit status (gtest assertions do
 * not cross fork) and carry a watchdog alarm, so a hang fails the test.
 */
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "courier/ipc/call.h"
#include "courier/ipc/segment.h"
#include "courier/ipc/server.h"

namespace courier::test {

class TestSegment {
public:
    explicit TestSegment(ipc::RegionParams params);

    ipc::Region &region() { return seg_->region(); }
    ipc::StatsView stats() { return seg_->region().stats(); }
    const ipc::RegionLayout &layout() const { return seg_->layout(); }
    /* Scratch shared memory for test bookkeeping (owners, flags). */
    std::uint64_t *scratch() { return reinterpret_cast<std::uint64_t *>(seg_->caller_area()); }
    std::atomic<std::uint64_t> &flag(std::size_t i) {
        return reinterpret_cast<std::atomic<std::uint64_t> *>(scratch())[i];
    }
    /* A second mapping of the same segment, attached through the ipc code. */
    std::unique_ptr<ipc::Segment> map_again() const;

private:
    ipc::RegionParams params_;
    std::unique_ptr<ipc::Segment> seg_;
};

inline constexpr std::size_t scratch_words = 1 << 16;

/* Runs fn in a child process; its return value is the exit status. */
pid_t spawn(const std::function<int()> &fn, unsigned watchdog_seconds = 120);
/* Waits for a child; true when it exited with status 0. */
bool exited_ok(pid_t pid);

/* Serves echo/sum/sleep/big until flag(stop_flag) is set. */
enum : std::size_t { stop_flag = 0 };
void run_test_server(TestSegment &seg, ipc::Waker &waker, std::chrono::nanoseconds spin,
                     std::chrono::nanoseconds call_timeout = {});
void stop_test_server(TestSegment &seg, ipc::Waker &waker);
/* Calls made before the server's first epoch are cancelled when it starts. */
void wait_for_server(TestSegment &seg, std::uint64_t epoch = 1);

std::uint64_t fnv1a(std::span<const std::byte> bytes);
std::vector<std::byte> random_bytes(std::uint64_t seed, std::size_t n);

}  // namespace courier::test
