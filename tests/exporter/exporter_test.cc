/*
 * courier_exporter against a statistics segment written by the test: the
 * values it serves, the histogram, a segment that goes away and comes back,
 * basic auth, and promtool's verdict on the exposition.
 */
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <prometheus/text_serializer.h>

#include "courier/exporter/collector.h"
#include "courier/exporter/metrics.h"
#include "courier/ipc/layout.h"
#include "courier/ipc/stats.h"

using namespace courier;

namespace {

/* A stats segment as courier's postmaster makes it, for a made-up port. */
class FakeSegment {
public:
    explicit FakeSegment(int port, std::uint32_t slots) : name_(ipc::stats_segment_name(port)) {
        size_ = ipc::stats_segment_size(slots);
        const int fd = shm_open(name_.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0640);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size_)), 0);
        base_ = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        view_ = ipc::StatsView::create(base_, size_, slots);
    }
    ~FakeSegment() {
        munmap(base_, size_);
        shm_unlink(name_.c_str());
    }
    ipc::StatsView &view() { return view_; }

private:
    std::string name_;
    std::size_t size_;
    void *base_;
    ipc::StatsView view_;
};

std::string scrape(const exporter::StatsCollector &c) {
    return prometheus::TextSerializer().Serialize(c.Collect());
}

bool has_line(const std::string &text, const std::string &line) {
    return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* A plain HTTP GET; returns the whole response (status line included). */
std::string http_get(int port, const std::string &path, const std::string &auth = "") {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        close(fd);
        return "";
    }
    std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n";
    if (!auth.empty())
        req += "Authorization: Basic " + auth + "\r\n";
    req += "\r\n";
    if (write(fd, req.data(), req.size()) < 0) {
        close(fd);
        return "";
    }
    std::string out;
    char buf[8192];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;)
        out.append(buf, static_cast<std::size_t>(n));
    close(fd);
    return out;
}

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

}  // namespace

TEST(Exporter, ServesTheSegmentsCountersWithLabelsAndBaseUnits) {
    const int port = 61000 + getpid() % 1000;
    FakeSegment seg(port, 4);
    ipc::StatsView &v = seg.view();
    v.header().server_up.store(1);
    v.header().heartbeat_ns.store(now_ns());
    v.header().server_epoch.store(3);
    v.header().slots_in_use.store(2);
    v.add(ipc::GlobalCounter::server_restarts, 2);
    v.add(ipc::GlobalCounter::slot_wait_ns, 1'500'000'000);
    v.add(ipc::GlobalCounter::freelist_empty, 5);
    ipc::bump(&v.slot(0)->client, ipc::Counter::wakeups_elided, 7);
    ipc::bump(&v.slot(3)->server, ipc::Counter::wakeups_sent, 11);
    ipc::bump(&v.slot(1)->client, ipc::Counter::bytes_sent, 4096);
    v.set_runtimes({"echo", "fusion"});
    v.set_runtime_state(0, ipc::RuntimeState::loaded);
    v.set_runtime_state(1, ipc::RuntimeState::failed);
    v.record_call(0, 0, 800, false);         // ≤ 1 µs
    v.record_call(1, 1, 3'000'000, true);    // ≤ 5 ms
    v.record_call(2, 0, 20'000'000'000, false);  // beyond 10 s
    exporter::StatsCollector c(ipc::stats_segment_name(port), geteuid());
    const std::string text = scrape(c);
    for (const char *line : {"courier_up 1", "courier_worker_up 1", "courier_worker_epoch 3",
                             "courier_worker_restarts_total 2", "courier_slots 4", "courier_slots_in_use 2",
                             "courier_slot_wait_seconds_total 1.5", "courier_slot_exhaustion_total 5",
                             "courier_wakeups_elided_total{side=\"backend\"} 7",
                             "courier_wakeups_sent_total{side=\"worker\"} 11",
                             "courier_bytes_total{direction=\"to_worker\"} 4096", "courier_calls_total 3",
                             "courier_call_errors_total 1", "courier_call_duration_seconds_bucket{le=\"1e-06\"} 1",
                             "courier_call_duration_seconds_bucket{le=\"0.005\"} 2",
                             "courier_call_duration_seconds_bucket{le=\"10\"} 2",
                             "courier_call_duration_seconds_bucket{le=\"+Inf\"} 3", "courier_call_duration_seconds_count 3",
                             "courier_runtime_up{runtime=\"echo\"} 1", "courier_runtime_up{runtime=\"fusion\"} 0",
                             "courier_runtime_calls_total{runtime=\"echo\"} 2",
                             "courier_runtime_calls_total{runtime=\"fusion\"} 1",
                             "courier_runtime_call_errors_total{runtime=\"fusion\"} 1"})
        EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n" << text;
}

/* Every row of ipc/stats.h's counter table is served under its metric, with its own value and help. */
TEST(Exporter, EveryCounterOfTheTableIsServedWithItsValue) {
    const int port = 62000 + getpid() % 1000;
    FakeSegment seg(port, 2);
    ipc::StatsView &v = seg.view();
    for (std::size_t i = 0; i < ipc::global_counter_count; ++i)
        v.add(static_cast<ipc::GlobalCounter>(i), (i + 1) * 1'000'000'000ull);
    for (std::size_t i = 0; i < ipc::side_counter_count; ++i) {
        ipc::bump(&v.slot(0)->client, static_cast<ipc::Counter>(i), 100 + i);
        ipc::bump(&v.slot(1)->server, static_cast<ipc::Counter>(i), 200 + i);
    }
    const std::string text = scrape(exporter::StatsCollector(ipc::stats_segment_name(port), geteuid()));
    for (std::size_t i = 0; i < ipc::global_counter_count; ++i) {
        const ipc::CounterInfo &c = ipc::counter_info(static_cast<ipc::GlobalCounter>(i));
        const std::uint64_t value = c.as == ipc::Published::in_seconds ? i + 1 : (i + 1) * 1'000'000'000ull;
        EXPECT_TRUE(has_line(text, std::string(c.metric) + " " + std::to_string(value))) << c.name << "\n" << text;
        EXPECT_TRUE(has_line(text, std::string("# HELP ") + c.metric + " " + c.help)) << c.name;
    }
    for (std::size_t i = 0; i < ipc::side_counter_count; ++i) {
        const ipc::CounterInfo &c = ipc::counter_info(static_cast<ipc::Counter>(i));
        const bool by_side = c.as == ipc::Published::by_side;
        const std::string client = by_side ? "{side=\"backend\"} " : "{direction=\"to_worker\"} ";
        const std::string server = by_side ? "{side=\"worker\"} " : "{direction=\"to_backend\"} ";
        EXPECT_TRUE(has_line(text, c.metric + client + std::to_string(100 + i))) << c.name << "\n" << text;
        EXPECT_TRUE(has_line(text, c.metric + server + std::to_string(200 + i))) << c.name << "\n" << text;
    }
}

/* exporter/METRICS.md is what the exporter serves: regenerate it when a metric changes. */
TEST(Exporter, TheDocumentedMetricsAreTheOnesServed) {
    std::ifstream f(COURIER_METRICS_MD);
    ASSERT_TRUE(f) << COURIER_METRICS_MD;
    const std::string documented((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_EQ(documented, exporter::metrics_markdown())
        << "exporter/METRICS.md is stale: run courier_exporter --metrics-markdown > exporter/METRICS.md";
}

TEST(Exporter, ReportsDownWithoutFailingAndPicksTheSegmentUpAgain) {
    const int port = 62000 + getpid() % 1000;
    exporter::StatsCollector c(ipc::stats_segment_name(port), geteuid());
    std::string text = scrape(c);
    EXPECT_TRUE(has_line(text, "courier_up 0")) << text;
    EXPECT_TRUE(has_line(text, "courier_worker_up 0")) << text;
    {
        FakeSegment seg(port, 2);
        seg.view().add(ipc::GlobalCounter::leases, 9);
        text = scrape(c);
        EXPECT_TRUE(has_line(text, "courier_up 1")) << text;
        EXPECT_TRUE(has_line(text, "courier_slot_leases_total 9")) << text;
    }
    EXPECT_TRUE(has_line(scrape(c), "courier_up 0"));
    FakeSegment again(port, 2);  // PostgreSQL restarted: a new segment, new counters
    text = scrape(c);
    EXPECT_TRUE(has_line(text, "courier_slot_leases_total 0")) << text;
}

TEST(Exporter, TheDaemonServesPassesPromtoolAndEnforcesBasicAuth) {
    const int pg_port = 63000 + getpid() % 1000;
    FakeSegment seg(pg_port, 8);
    const int port = free_port();
    char pwfile[] = "/tmp/courier-exporter-pw-XXXXXX";
    const int pw = mkstemp(pwfile);
    ASSERT_EQ(write(pw, "s3cret\n", 7), 7);
    close(pw);
    const pid_t pid = fork();
    if (pid == 0) {
        const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(port);
        const std::string cluster = "--courier.port=" + std::to_string(pg_port);
        const std::string pwf = std::string("--web.basic-auth-password-file=") + pwfile;
        execl(COURIER_EXPORTER, COURIER_EXPORTER, listen.c_str(), cluster.c_str(), "--web.basic-auth-user=prom",
              pwf.c_str(), static_cast<char *>(nullptr));
        _exit(127);
    }
    std::string denied;
    for (int i = 0; i < 100 && denied.empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        denied = http_get(port, "/metrics");
    }
    EXPECT_NE(denied.find(" 401 "), std::string::npos) << denied;
    const std::string ok = http_get(port, "/metrics", "cHJvbTpzM2NyZXQ=");  // prom:s3cret
    EXPECT_NE(ok.find(" 200 "), std::string::npos) << ok;
    EXPECT_NE(ok.find("\ncourier_up 1\n"), std::string::npos) << ok;
    const std::string body = ok.substr(ok.find("\r\n\r\n") + 4);
    {
        std::ofstream f("/tmp/courier-exporter-scrape.txt");
        f << body;
    }
    EXPECT_EQ(std::system("promtool check metrics < /tmp/courier-exporter-scrape.txt"), 0) << body;
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "exits cleanly on SIGTERM";
    unlink(pwfile);
}

namespace {

/* Runs the exporter with `args`; its exit status and what it printed. */
std::pair<int, std::string> run_exporter(const std::string &args) {
    const std::string cmd = std::string(COURIER_EXPORTER) + " --web.listen-address=127.0.0.1:" +
                            std::to_string(free_port()) + " " + args + " 2>&1";
    FILE *p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (p != nullptr && fgets(buf, sizeof buf, p) != nullptr)
        out += buf;
    const int status = p != nullptr ? pclose(p) : -1;
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string temp_file(const char *content, mode_t mode) {
    char path[] = "/tmp/courier-exporter-pw-XXXXXX";
    const int fd = mkstemp(path);
    EXPECT_EQ(write(fd, content, std::strlen(content)), static_cast<ssize_t>(std::strlen(content)));
    fchmod(fd, mode);
    close(fd);
    return path;
}

}  // namespace

/* Half an auth configuration, or a password file others can read, must not serve /metrics openly. */
TEST(Exporter, BasicAuthRefusesToStartIncompleteOrUnsafe) {
    const std::string good = temp_file("s3cret\n", 0600);
    const std::string open_file = temp_file("s3cret\n", 0644);
    const std::string empty = temp_file("", 0600);
    struct Case {
        std::string args;
        int status;
        std::string says;
    };
    for (const Case &c : std::vector<Case>{
             {"--web.basic-auth-password-file=" + good, 2, "needs both"},
             {"--web.basic-auth-user=prom", 2, "needs both"},
             {"--web.basic-auth-user=prom --web.basic-auth-password-file=" + open_file, 1, "chmod 600"},
             {"--web.basic-auth-user=prom --web.basic-auth-password-file=" + empty, 1, "is empty"},
             {"--web.basic-auth-user=prom --web.basic-auth-password-file=/nonexistent/pw", 1, "cannot read"}}) {
        const auto [status, out] = run_exporter(c.args);
        EXPECT_EQ(status, c.status) << c.args << "\n" << out;
        EXPECT_NE(out.find(c.says), std::string::npos) << c.args << "\n" << out;
    }
    for (const std::string &f : {good, open_file, empty})
        std::remove(f.c_str());
}

/* A worker whose main loop stopped writing its heartbeat runs, but is not up. */
TEST(Exporter, AWorkerWithAStaleHeartbeatIsReportedHung) {
    const int port = 64500 + getpid() % 400;
    FakeSegment seg(port, 2);
    seg.view().header().server_up.store(1);
    exporter::StatsCollector c(ipc::stats_segment_name(port), geteuid());
    seg.view().header().heartbeat_ns.store(now_ns());
    EXPECT_TRUE(has_line(scrape(c), "courier_worker_up 1"));
    seg.view().header().heartbeat_ns.store(now_ns() - 60'000'000'000ull);  // a minute ago
    const std::string text = scrape(c);
    EXPECT_TRUE(has_line(text, "courier_worker_running 1")) << text;
    EXPECT_TRUE(has_line(text, "courier_worker_up 0")) << text;
}

/* A segment that another local user made under the cluster's name is not trusted. */
TEST(Exporter, RefusesASegmentThatIsNotTheServerUsers) {
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to make a segment of another user";
    const int port = 64000 + getpid() % 1000;
    FakeSegment seg(port, 2);
    seg.view().header().server_up.store(1);
    ASSERT_EQ(chown(ipc::stats_segment_path(port).c_str(), 65534, 65534), 0);
    exporter::StatsCollector as_root(ipc::stats_segment_name(port), geteuid());
    EXPECT_TRUE(has_line(scrape(as_root), "courier_up 0"));
    exporter::StatsCollector as_owner(ipc::stats_segment_name(port), 65534);
    EXPECT_TRUE(has_line(scrape(as_owner), "courier_up 1"));
}

/*
 * Started with --courier.data-directory while PostgreSQL is down, on Debian's layout (no
 * postgresql.conf in the data directory): the port is only known once postmaster.pid exists,
 * so the exporter must look again on every scrape, not settle on 5432.
 */
TEST(Exporter, ADataDirectoryIsFollowedToThePortItRunsOn) {
    char dir[] = "/tmp/courier-exporter-data-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    const int port = free_port();
    const pid_t pid = fork();
    if (pid == 0) {
        const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(port);
        const std::string data = std::string("--courier.data-directory=") + dir;
        execl(COURIER_EXPORTER, COURIER_EXPORTER, listen.c_str(), data.c_str(), static_cast<char *>(nullptr));
        _exit(127);
    }
    std::string scraped;
    for (int i = 0; i < 100 && scraped.find("\ncourier_up 0\n") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        scraped = http_get(port, "/metrics");
    }
    EXPECT_NE(scraped.find("\ncourier_up 0\n"), std::string::npos) << scraped;
    /* PostgreSQL starts: postmaster.pid names its port on the 4th line, the segment appears. */
    const int pg_port = 65000 + getpid() % 500;
    std::ofstream(std::string(dir) + "/postmaster.pid") << "12345\n" << dir << "\n1700000000\n" << pg_port << "\n";
    FakeSegment seg(pg_port, 2);
    scraped = http_get(port, "/metrics");
    EXPECT_NE(scraped.find("\ncourier_up 1\n"), std::string::npos) << scraped;
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    std::filesystem::remove_all(dir);
}

/* The value of an unlabelled series in a scrape, or -1. */
double series_value(const std::string &text, const std::string &name) {
    const auto at = text.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

/*
 * The worker's lost CPUs: two threads of this process on one CPU hand it to
 * each other with sched_yield (each a switch while runnable). The counter
 * counts them while they run and keeps them once they have exited, as a
 * runtime's threads do.
 */
TEST(Exporter, TheWorkersLostCpusAreCountedAndKeptAfterItsThreadsEnd) {
    const int port = 64500 + getpid() % 400;
    FakeSegment seg(port, 2);
    seg.view().header().server_up.store(1);
    seg.view().header().heartbeat_ns.store(now_ns());
    seg.view().header().server_pid.store(static_cast<std::uint64_t>(getpid()));
    exporter::StatsCollector c(ipc::stats_segment_name(port), geteuid());
    const double before = series_value(scrape(c), "courier_worker_switched_out_total");
    ASSERT_GE(before, 0);

    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    std::atomic<bool> stop{false};
    std::atomic<int> yields{0};
    auto yielder = [&] {
        ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
        while (!stop.load()) {
            sched_yield();
            yields.fetch_add(1);
        }
    };
    std::thread a(yielder), b(yielder);
    while (yields.load() < 2000)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const double running = series_value(scrape(c), "courier_worker_switched_out_total");
    stop = true;
    a.join();
    b.join();
    const double ended = series_value(scrape(c), "courier_worker_switched_out_total");
    EXPECT_GE(running - before, 500) << "two threads yielding one CPU to each other lost it 2000 times";
    EXPECT_GE(ended, running) << "the ended threads' switches are kept";
}
