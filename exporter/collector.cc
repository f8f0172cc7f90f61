#include "courier/exporter/collector.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "courier/ipc/stats.h"
#include "courier/exporter/metrics.h"

namespace courier::exporter {
namespace {

/* A mapping of the segment for one scrape, if it is a file of the expected owner. */
class Mapping {
public:
    Mapping(const std::string &name, uid_t owner) {
        const int fd = shm_open(name.c_str(), O_RDONLY, 0);
        if (fd < 0) {
            why_ = "no statistics segment " + name + " (is PostgreSQL with courier running?)";
            return;
        }
        struct stat st {};
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
            why_ = "statistics segment " + name + " is not a regular file";
        } else if (st.st_uid != owner) {
            why_ = "refusing statistics segment " + name + ": it belongs to uid " + std::to_string(st.st_uid) +
                   ", not to uid " + std::to_string(owner) + " (the server's user); run the exporter as that user " +
                   "or give --courier.data-directory";
        } else {
            size_ = static_cast<std::size_t>(st.st_size);
            void *p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
            base_ = p == MAP_FAILED ? nullptr : p;
        }
        close(fd);
    }
    ~Mapping() {
        if (base_ != nullptr)
            munmap(base_, size_);
    }
    Mapping(const Mapping &) = delete;
    Mapping &operator=(const Mapping &) = delete;
    /* The view only reads: the mapping is PROT_READ, every read bounded by the mapped size. */
    bool view(ipc::StatsView *out) {
        if (base_ != nullptr && ipc::StatsView::attach(base_, size_, out) == ipc::Status::ok)
            return true;
        if (base_ != nullptr)
            why_ = "statistics segment is not one of this courier version (or is damaged)";
        return false;
    }
    const std::string &why() const { return why_; }

private:
    void *base_ = nullptr;
    std::size_t size_ = 0;
    std::string why_;
};

/* Seconds since the worker's heartbeat; a large number when it never wrote one. */
double heartbeat_age(const ipc::StatsSnapshot &s) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch();
    const double now_s = std::chrono::duration<double>(now).count();
    return s.heartbeat_ns == 0 ? now_s : now_s - static_cast<double>(s.heartbeat_ns) / 1e9;
}

/* A worker process that is stopped (SIGSTOP, a debugger) or a zombie serves no call. */
bool stopped(std::uint64_t pid) {
    if (pid == 0)
        return false;
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(f, stat);
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size())
        return false;  // gone, or not readable: the heartbeat decides
    const char state = stat[paren + 2];
    return state == 'T' || state == 't' || state == 'Z';
}

/* A thread's nonvoluntary_ctxt_switches; false when it has gone. */
bool nonvoluntary_switches(const std::filesystem::path &status, std::uint64_t *out) {
    std::ifstream f(status);
    for (std::string line; std::getline(f, line);) {
        if (line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
            return std::sscanf(line.c_str(), "nonvoluntary_ctxt_switches: %" SCNu64, out) == 1;
    }
    return false;
}

}  // namespace

std::uint64_t ThreadSwitchCounter::read(std::uint64_t pid) {
    if (pid != pid_) {
        pid_ = pid;
        live_.clear();
        ended_ = 0;
    }
    /* A worker that exits meanwhile, or a /proc that hides it, ends the walk: the counts so far stand. */
    std::map<std::uint64_t, std::uint64_t> seen;
    std::error_code ec;
    for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/task", ec), end; !ec && it != end;
         it.increment(ec)) {
        std::uint64_t n = 0;
        const std::string tid = it->path().filename().string();
        if (!tid.empty() && tid.find_first_not_of("0123456789") == std::string::npos &&
            nonvoluntary_switches(it->path() / "status", &n))
            seen[std::stoull(tid)] = n;
    }
    for (auto &[tid, n] : live_) {
        if (seen.count(tid) == 0) {
            if (ec)
                seen[tid] = n;  // not read this time: keep it as it was
            else
                ended_ += n;    // the whole list was read and it is not there: it ended
        }
    }
    live_ = std::move(seen);
    std::uint64_t total = ended_;
    for (const auto &[tid, n] : live_)
        total += n;
    return total;
}

void StatsCollector::note(const std::string &why) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (why != last_note_ && !why.empty())
        std::cerr << "courier_exporter: " << why << "\n";
    last_note_ = why;
}

std::vector<prometheus::MetricFamily> StatsCollector::Collect() const {
    const auto started = std::chrono::steady_clock::now();
    Mapping mapping(segment_(), owner_);
    ipc::StatsView view;
    const bool up = mapping.view(&view);
    note(mapping.why());
    ipc::StatsSnapshot snapshot;
    WorkerHealth worker;
    if (up) {
        snapshot = ipc::read_stats(view);
        worker = WorkerHealth{heartbeat_age(snapshot), stopped(snapshot.server_pid), 0};
        if (snapshot.server_pid != 0) {
            std::lock_guard<std::mutex> lock(mutex_);
            worker.switched_out = worker_switches_.read(snapshot.server_pid);
        }
    }
    return metric_families(up ? &snapshot : nullptr, worker,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

}  // namespace courier::exporter
