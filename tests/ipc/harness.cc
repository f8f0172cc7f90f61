#include "harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include <boost/interprocess/shared_memory_object.hpp>

namespace courier::test {
namespace {

/*
 * This process's next segment name. A segment already under it is a dead
 * process's of the same pid (a test that keeps its segment on purpose, or
 * a killed run): removed, or pid reuse turns it into "File exists".
 */
std::string unique_name() {
    static std::atomic<int> counter{0};
    std::string name = "courier-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    boost::interprocess::shared_memory_object::remove(name.c_str());
    return name;
}

}  // namespace

TestSegment::TestSegment(ipc::RegionParams params) : params_(params) {
    std::string error;
    seg_ = ipc::Segment::create(unique_name(), params, scratch_words * sizeof(std::uint64_t), &error);
    if (!seg_)
        throw std::runtime_error(error);
}

std::unique_ptr<ipc::Segment> TestSegment::map_again() const {
    std::string error;
    return ipc::Segment::open(seg_->name(), params_, &error);
}

pid_t spawn(const std::function<int()> &fn, unsigned watchdog_seconds) {
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(watchdog_seconds);
        int code = 99;
        try {
            code = fn();
        } catch (const std::exception &e) {
            std::fprintf(stderr, "child %d: exception: %s\n", getpid(), e.what());
        }
        std::fflush(nullptr);
        _exit(code);
    }
    return pid;
}

bool exited_ok(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return false;
    if (WIFSIGNALED(status))
        std::fprintf(stderr, "child %d killed by signal %d\n", pid, WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        std::fprintf(stderr, "child %d exited with %d\n", pid, WEXITSTATUS(status));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::uint64_t fnv1a(std::span<const std::byte> bytes) {
    std::uint64_t h = 1469598103934665603ull;
    for (std::byte b : bytes) {
        h ^= static_cast<std::uint8_t>(b);
        h *= 1099511628211ull;
    }
    return h;
}

std::vector<std::byte> random_bytes(std::uint64_t seed, std::size_t n) {
    std::mt19937_64 rng(seed);
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::byte>(rng() & 0xff);
    return v;
}

void run_test_server(TestSegment &seg, ipc::Waker &waker, std::chrono::nanoseconds spin,
                     std::chrono::nanoseconds call_timeout) {
    ipc::WaitPolicy policy;
    policy.spin = spin;
    seg.region().begin_server_epoch(waker);
    auto stop = [&] { return seg.flag(stop_flag).load() != 0; };
    ipc::serve_inline(seg.region(), waker, policy, call_timeout, stop,
                      [&](ipc::ServerCall &call, std::string_view fn, std::span<const std::byte> payload) {
                          if (fn == "echo") {
                              call.respond_all(ipc::FrameKind::response, payload);
                          } else if (fn == "sum") {
                              const std::uint64_t h = fnv1a(payload);
                              call.respond_all(ipc::FrameKind::response,
                                               std::as_bytes(std::span<const std::uint64_t>(&h, 1)));
                          } else if (fn == "sleep") {
                              std::uint32_t ms = 0;
                              std::memcpy(&ms, payload.data(), std::min<std::size_t>(payload.size(), 4));
                              std::this_thread::sleep_for(std::chrono::milliseconds(ms));
                              call.respond_all(ipc::FrameKind::response, payload);
                          } else {
                              call.respond_error("unknown function: " + std::string(fn));
                          }
                      });
}

void wait_for_server(TestSegment &seg, std::uint64_t epoch) {
    while (seg.region().server_epoch() < epoch)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
}

void stop_test_server(TestSegment &seg, ipc::Waker &waker) {
    seg.flag(stop_flag).store(1);
    ipc::Dispatcher(seg.region(), 0).wake_all(waker);
}

}  // namespace courier::test
