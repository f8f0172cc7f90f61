/*
 * placement.cc — CPU lists and affinity masks (see placement.h).
 */
#include "courier/worker/placement.h"

#include <cerrno>
#include <cstring>
#include <initializer_list>

#if defined(__linux__)
#include <sched.h>
#endif

namespace courier::worker {
namespace {

constexpr const char *cpu_list_form =
    "write CPU numbers and ranges separated by commas, as Linux does: \"0\", \"0-3\" or \"0,2-3\"";

/* Reads a CPU number at text[*at]; false when there is none or it is too large. */
bool read_cpu(std::string_view text, std::size_t *at, unsigned *cpu) {
    const std::size_t from = *at;
    unsigned long value = 0;
    while (*at < text.size() && text[*at] >= '0' && text[*at] <= '9') {
        value = value * 10 + static_cast<unsigned>(text[*at] - '0');
        if (value >= max_cpus)
            return false;
        ++*at;
    }
    *cpu = static_cast<unsigned>(value);
    return *at > from;
}

/*
 * Joins the pieces of a message by appending: GCC 12 at -O3 warns
 * (-Wrestrict, a false positive) about "literal" + std::string.
 */
std::string joined(std::initializer_list<std::string_view> pieces) {
    std::string text;
    for (std::string_view piece : pieces)
        text.append(piece);
    return text;
}

bool refuse(std::string *error, std::initializer_list<std::string_view> why) {
    *error = joined(why);
    error->append("; ").append(cpu_list_form);
    return false;
}

}  // namespace

bool parse_cpu_list(std::string_view text, CpuSet *out, std::string *error) {
    out->reset();
    std::size_t at = 0;
    while (at < text.size() && text[at] == ' ')
        ++at;
    if (at == text.size())
        return refuse(error, {"the CPU list is empty"});
    for (;;) {
        const std::size_t item = at;
        unsigned first = 0, last = 0;
        if (!read_cpu(text, &at, &first))
            return refuse(error, {"\"", text.substr(item), "\" does not start with a CPU number below ",
                                  std::to_string(max_cpus)});
        last = first;
        if (at < text.size() && text[at] == '-') {
            ++at;
            if (!read_cpu(text, &at, &last) || last < first)
                return refuse(error, {"\"", text.substr(item, at - item), "\" is not a range of CPUs"});
        }
        for (unsigned cpu = first; cpu <= last; ++cpu)
            out->set(cpu);
        while (at < text.size() && text[at] == ' ')
            ++at;
        if (at == text.size())
            return true;
        if (text[at] != ',')
            return refuse(error, {"unexpected \"", text.substr(at), "\""});
        ++at;
        while (at < text.size() && text[at] == ' ')
            ++at;
    }
}

std::string format_cpu_list(const CpuSet &cpus) {
    std::string list;
    for (unsigned cpu = 0; cpu < max_cpus; ++cpu) {
        if (!cpus.test(cpu))
            continue;
        unsigned last = cpu;
        while (last + 1 < max_cpus && cpus.test(last + 1))
            ++last;
        if (!list.empty())
            list += ',';
        list += std::to_string(cpu);
        if (last > cpu) {
            list += '-';
            list += std::to_string(last);
        }
        cpu = last;
    }
    return list;
}

bool split_cpus(const CpuSet &allowed, const CpuSet &worker, CpuSet *rest, std::string *error) {
    const CpuSet outside = worker & ~allowed;
    if (outside.any()) {
        *error = joined({"CPUs ", format_cpu_list(outside), " are not among those this server may use (",
                         format_cpu_list(allowed), ": its affinity mask and cpuset)"});
        return false;
    }
    *rest = allowed & ~worker;
    if (rest->none()) {
        *error = joined({"the worker's CPUs ", format_cpu_list(worker),
                         " are all the CPUs this server may use; leave at least one for its sessions"});
        return false;
    }
    return true;
}

#if defined(__linux__)

bool allowed_cpus(CpuSet *out, std::string *error) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        *error = std::string("sched_getaffinity: ") + std::strerror(errno);
        return false;
    }
    out->reset();
    for (unsigned cpu = 0; cpu < max_cpus && cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &set))
            out->set(cpu);
    return true;
}

bool run_on(const CpuSet &cpus, std::string *error) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (unsigned cpu = 0; cpu < max_cpus && cpu < CPU_SETSIZE; ++cpu)
        if (cpus.test(cpu))
            CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        *error = joined({"sched_setaffinity(", format_cpu_list(cpus), "): ", std::strerror(errno)});
        return false;
    }
    return true;
}

#else

bool allowed_cpus(CpuSet *, std::string *error) {
    *error = "this platform has no CPU affinity masks";
    return false;
}

bool run_on(const CpuSet &, std::string *error) {
    *error = "this platform has no CPU affinity masks";
    return false;
}

#endif

}  // namespace courier::worker
