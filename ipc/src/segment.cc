#include "courier/ipc/segment.h"

#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>

namespace courier::ipc {
namespace bip = boost::interprocess;

static bool layout_for(const RegionParams &params, RegionLayout *layout, std::string *error) {
    if (compute_layout(params, layout) == Status::ok)
        return true;
    *error = describe_layout_error(params);
    return false;
}

std::unique_ptr<Segment> Segment::create(const std::string &name, const RegionParams &params,
                                         std::size_t caller_area_bytes, std::string *error) {
    RegionLayout layout;
    if (!layout_for(params, &layout, error))
        return nullptr;
    std::unique_ptr<Segment> s(new Segment());
    try {
        s->shm_ = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write);
        s->name_ = name;
        s->creator_ = getpid();
        s->shm_.truncate(static_cast<bip::offset_t>(layout.bundled_size + caller_area_bytes));
        s->map_ = bip::mapped_region(s->shm_, bip::read_write);
    } catch (const bip::interprocess_exception &e) {
        *error = "shared memory segment " + name + ": " + e.what();
        return nullptr;
    }
    auto *base = static_cast<std::byte *>(s->map_.get_address());
    StatsView stats = StatsView::create(base + layout.bundled_stats_offset, layout.stats_size, params.slots);
    s->region_ = Region::create(base, layout, stats);
    s->caller_area_ = base + layout.bundled_size;
    return s;
}

std::unique_ptr<Segment> Segment::open(const std::string &name, const RegionParams &params,
                                       std::string *error) {
    RegionLayout layout;
    if (!layout_for(params, &layout, error))
        return nullptr;
    std::unique_ptr<Segment> s(new Segment());
    try {
        s->shm_ = bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_write);
        s->name_ = name;
        s->map_ = bip::mapped_region(s->shm_, bip::read_write);
    } catch (const bip::interprocess_exception &e) {
        *error = "shared memory segment " + name + ": " + e.what();
        return nullptr;
    }
    if (s->map_.get_size() < layout.bundled_size) {
        *error = "shared memory segment " + name + " is smaller than its layout";
        return nullptr;
    }
    auto *base = static_cast<std::byte *>(s->map_.get_address());
    StatsView stats;
    if (StatsView::attach(base + layout.bundled_stats_offset, layout.stats_size, &stats) != Status::ok ||
        Region::attach(base, layout, stats, &s->region_) != Status::ok) {
        *error = "shared memory segment " + name + " does not hold a courier region of these parameters";
        return nullptr;
    }
    s->caller_area_ = base + layout.bundled_size;
    return s;
}

Segment::~Segment() {
    if (creator_ == getpid())
        bip::shared_memory_object::remove(name_.c_str());
}

}  // namespace courier::ipc
