/*
 * segment.h — a region and its stats in a named Boost.Interprocess segment.
 *
 * This is how courier runs without PostgreSQL: the demo, the tests and the
 * benchmarks create one, fork, and the children inherit the mapping the way
 * backends inherit the postmaster's. open() maps it again, at whatever
 * address the kernel picks; nothing in the region depends on the address.
 *
 * Layout of the segment: region | stats | a caller area (bytes the region and
 * stats never touch), at the offsets RegionLayout gives (bundled_*).
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "courier/ipc/region.h"

namespace courier::ipc {

class Segment {
public:
    /* Creates and formats; the creating process removes the name on destruction. */
    static std::unique_ptr<Segment> create(const std::string &name, const RegionParams &params,
                                           std::size_t caller_area_bytes, std::string *error);
    /* Maps an existing segment and validates it against params. */
    static std::unique_ptr<Segment> open(const std::string &name, const RegionParams &params,
                                         std::string *error);
    ~Segment();
    Segment(const Segment &) = delete;
    Segment &operator=(const Segment &) = delete;

    Region &region() { return region_; }
    const RegionLayout &layout() const { return region_.layout(); }
    std::byte *caller_area() { return caller_area_; }
    const std::string &name() const { return name_; }

private:
    Segment() = default;

    std::string name_;
    pid_t creator_ = -1;
    boost::interprocess::shared_memory_object shm_;
    boost::interprocess::mapped_region map_;
    Region region_;
    std::byte *caller_area_ = nullptr;
};

}  // namespace courier::ipc
