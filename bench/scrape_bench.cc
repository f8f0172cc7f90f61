/*
 * courier-bench-scrape — what one Prometheus scrape of a 1024-slot cluster
 * costs the exporter: map the statistics segment, sum it, serialize the
 * exposition. Prints the median and p99 over 500 scrapes as JSON.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <prometheus/text_serializer.h>

#include "courier/exporter/collector.h"
#include "courier/ipc/layout.h"
#include "courier/ipc/stats.h"

int main() {
    using namespace courier;
    const int port = 40000 + getpid() % 20000;  // a made-up cluster
    const std::string name = ipc::stats_segment_name(port);
    const std::uint32_t slots = 1024;
    const std::size_t size = ipc::stats_segment_size(slots);
    const int fd = shm_open(name.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0640);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0)
        return 1;
    void *base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ipc::StatsView view = ipc::StatsView::create(base, size, slots);
    for (std::uint32_t i = 0; i < slots; ++i)
        view.record_call(i, 0, 1000 + i, false);
    exporter::StatsCollector collector(name, geteuid());
    std::vector<double> us;
    std::size_t bytes = 0;
    for (int i = 0; i < 520; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        bytes = prometheus::TextSerializer().Serialize(collector.Collect()).size();
        const double d = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
        if (i >= 20)
            us.push_back(d);
    }
    munmap(base, size);
    shm_unlink(name.c_str());
    std::sort(us.begin(), us.end());
    std::printf("{\"slots\": %u, \"median_us\": %.1f, \"p99_us\": %.1f, \"bytes\": %zu}\n", slots, us[us.size() / 2],
                us[us.size() * 99 / 100], bytes);
    return 0;
}
