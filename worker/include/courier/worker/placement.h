/*
 * courier/worker/placement.h — the worker's CPUs apart from the sessions'.
 *
 * When sessions outnumber the CPUs, a worker thread that shares a CPU with
 * sessions pays for them: the sessions it wakes take its CPU (0.27 times a
 * call at 64 sessions on 2 vCPUs, whatever its nice value or yields), and
 * with the worker off its CPU the answers come too late to spin for, so
 * nearly every call sleeps: 1.3 context switches a call, which bound the
 * calls/s (bench/README.md, "Who loses the CPU in the crowded rows"). With
 * the worker's threads on CPUs no session runs on, a session keeps its CPU
 * from one call to the next (0.00-0.07 switches a call), and the worker's
 * spinner keeps its own.
 *
 * So an operator may give the worker CPUs of its own (courier.worker_cpus):
 * the postmaster, before it starts anything, leaves those CPUs (every
 * process it forks inherits its mask: backends, PostgreSQL's own workers),
 * and the courier worker takes them before it starts a thread (its pools
 * and the runtimes' threads inherit them). The kernel places within each
 * set as it likes. Without it, sessions that call back to back leave the
 * CPU their worker thread runs on by themselves, while they call
 * (courier/ipc/call.h): that keeps the worker's CPU from the sessions
 * that crowd it, but not from anything else the server runs.
 *
 * Both sets come from the CPUs the postmaster may use when it starts (its
 * affinity mask, a cgroup's cpuset included): the worker's CPUs must be
 * among them, and at least one must be left for everything else.
 */
#pragma once

#include <bitset>
#include <string>
#include <string_view>

namespace courier::worker {

/* A set of CPU numbers; CPU_SETSIZE on Linux. */
inline constexpr unsigned max_cpus = 1024;
using CpuSet = std::bitset<max_cpus>;

/* Parses Linux's CPU list format ("0-3,8"); false with *error saying what is wrong and how to write it. */
bool parse_cpu_list(std::string_view text, CpuSet *out, std::string *error);
/* The same format, ranges joined ("0-3,8"); "" for no CPU. */
std::string format_cpu_list(const CpuSet &cpus);

/*
 * The CPUs left to the rest of the server when the worker takes `worker`
 * out of `allowed`; false with *error when `worker` names a CPU outside
 * `allowed` or takes all of them.
 */
bool split_cpus(const CpuSet &allowed, const CpuSet &worker, CpuSet *rest, std::string *error);

/* The CPUs the calling thread may run on; false with *error where that cannot be known. */
bool allowed_cpus(CpuSet *out, std::string *error);
/* Puts the calling thread, and the threads and processes it starts from now on, on `cpus`. */
bool run_on(const CpuSet &cpus, std::string *error);

}  // namespace courier::worker
