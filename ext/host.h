/*
 * host.h — what courier.so's files share (private to ext/).
 *
 * The postmaster formats the region and the stats segment in its shmem
 * startup hook; every child inherits both mappings and the globals below
 * through fork(), so a backend or the worker finds them ready.
 *
 * Include C++ and ipc headers before this one: PostgreSQL's c.h defines
 * macros that confuse the standard library when it comes first (the ipc
 * headers refuse to compile after it: courier/ipc/before_postgres.h).
 * Every function PostgreSQL calls runs its body through pg::door
 * (courier/pg_guard.h).
 */
#pragma once

#include <string_view>
#include <vector>

#include "courier/ipc/region.h"
#include "courier/ipc/wait.h"
#include "courier/worker/placement.h"
#include "courier/worker/worker.h"
#include "courier/latch_waker.h"
#include "courier/pg_guard.h"

extern "C" {
#include "postgres.h"

#include "courier/courier.h"

/*
 * The C API (courier/courier.h), exported: extensions built with this
 * version's header reach it through courier_api_v2(); ones built with
 * 0.1.0's call these symbols directly, so they stay.
 */
PGDLLEXPORT void courier_open_session(void);
PGDLLEXPORT struct varlena *courier_call(const char *fn, const void *data, size_t len);
PGDLLEXPORT struct varlena *courier_call_runtime(const char *runtime, const char *fn, const void *data, size_t len);
PGDLLEXPORT CourierCall *courier_call_begin(const char *fn, int64_t total_len);
PGDLLEXPORT CourierCall *courier_call_begin_runtime(const char *runtime, const char *fn, int64_t total_len);
PGDLLEXPORT void courier_call_write(CourierCall *call, const void *data, size_t len);
PGDLLEXPORT void courier_call_end_request(CourierCall *call);
PGDLLEXPORT size_t courier_call_read(CourierCall *call, void *buf, size_t cap);
PGDLLEXPORT void courier_call_finish(CourierCall *call);
PGDLLEXPORT const CourierApi *courier_api_v2(void);
}

namespace courier::ext {

/* GUCs (see courier.cc for units, bounds and help). */
extern int guc_slots;
extern int guc_ring_size_kb;
extern int guc_max_message_size_kb;
extern char *guc_runtimes;
extern int guc_worker_threads;
extern int guc_spin_us;
extern int guc_call_timeout_ms;
extern int guc_slot_wait_timeout_ms;
extern bool guc_enabled;
extern char *guc_worker_cpus;

/* The region of this cluster, or nullptr when courier was not preloaded. */
ipc::Region *shared_region();

/* courier.runtimes, parsed in the postmaster: index = the runtime's doorbell. */
const std::vector<worker::RuntimeSpec> &runtime_specs();
/* The index of the runtime called `name`, or -1. */
int runtime_index(std::string_view name);
/* "a, b, c": for messages. */
const char *runtime_names();

/* Defines courier.enabled, whose assign hook belongs to the session (session.cc). */
void define_enabled_setting();

/* courier.spin_us as a duration. */
std::chrono::nanoseconds spin_budget();

/* courier.worker_cpus, parsed in the postmaster; none when it is empty. */
const worker::CpuSet &worker_cpu_set();

}  // namespace courier::ext
