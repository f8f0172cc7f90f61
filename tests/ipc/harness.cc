#include "harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

namespace courier::test {
namespace {

std::size_t align64(std::size_t n) { return (n + 63) / 64 * 64; }

std::string unique_name() {
    static std::atomic<int> counter{0};
    return "courier-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

}  // namespace

TestSegment::TestSegment(ipc::RegionParams params) : name_(unique_name()), creator_(getpid()) {
    if (ipc::compute_layout(params, &layout_) != ipc::Status::ok)
        throw std::runtime_error(ipc::describe_layout_error(params));
    const std::size_t stats_at = align64(layout_.region_size);
    const std::size_t scratch_at = align64(stats_at + layout_.stats_size);
    const std::size_t total = scratch_at + scratch_words * sizeof(std::uint64_t);
    shm_ = bip::shared_memory_object(bip::create_only, name_.c_str(), bip::read_write);
    shm_.truncate(static_cast<bip::offset_t>(total));
    map_ = bip::mapped_region(shm_, bip::read_write);
    auto *base = static_cast<std::byte *>(map_.get_address());
    ipc::StatsView stats = ipc::StatsView::create(base + stats_at, layout_.stats_size, params.slots);
    region_ = ipc::Region::create(base, layout_, stats);
    scratch_ = reinterpret_cast<std::uint64_t *>(base + scratch_at);
}

TestSegment::~TestSegment() {
    if (getpid() == creator_)
        bip::shared_memory_object::remove(name_.c_str());
}

std::unique_ptr<TestSegment::Mapping> TestSegment::map_again() const {
    bip::shared_memory_object shm(bip::open_only, name_.c_str(), bip::read_write);
    auto m = std::make_unique<Mapping>();
    m->map = bip::mapped_region(shm, bip::read_write);
    auto *base = static_cast<std::byte *>(m->map.get_address());
    ipc::StatsView stats;
    if (ipc::StatsView::attach(base + align64(layout_.region_size), layout_.stats_size, &stats) !=
            ipc::Status::ok ||
        ipc::Region::attach(base, layout_, stats, &m->region) != ipc::Status::ok)
        return nullptr;
    return m;
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
    seg.region().begin_server_epoch();
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

void stop_test_server(TestSegment &seg, ipc::Waker &waker) {
    seg.flag(stop_flag).store(1);
    waker.wake(seg.region().header().dispatcher);
}

}  // namespace courier::test
