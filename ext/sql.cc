/*
 * sql.cc — the SQL functions: thin wrappers over the C API and the stats.
 */
#include <string>
#include <vector>

#include "courier/ipc/stats.h"
#include "host.h"

extern "C" {
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(courier_echo);
PG_FUNCTION_INFO_V1(courier_call_sql);
PG_FUNCTION_INFO_V1(courier_slots);
PG_FUNCTION_INFO_V1(courier_stats);
}

namespace {

using namespace courier;

/* A materialized set-returning function's tuplestore, for any PG version. */
Tuplestorestate *begin_srf(FunctionCallInfo fcinfo, TupleDesc *desc) {
    auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    if (rsinfo == nullptr || !IsA(rsinfo, ReturnSetInfo) || !(rsinfo->allowedModes & SFRM_Materialize))
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("set-valued function called in context that cannot accept a set")));
    if (get_call_result_type(fcinfo, nullptr, desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "return type must be a row type");
    MemoryContext old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
    Tuplestorestate *store = tuplestore_begin_heap(true, false, work_mem);
    *desc = CreateTupleDescCopy(*desc);
    MemoryContextSwitchTo(old);
    rsinfo->returnMode = SFRM_Materialize;
    rsinfo->setResult = store;
    rsinfo->setDesc = *desc;
    return store;
}

ipc::Region &region_or_error() {
    ipc::Region *r = ext::shared_region();
    if (r == nullptr)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("courier is not initialized in this server"),
                        errhint("Add 'courier' to shared_preload_libraries and restart the server.")));
    return *r;
}

/*
 * free, leased (a session holds it between calls), calling (a call waits
 * for a server thread), serving (a server thread or the runtime has it,
 * or a thread keeps it for the session's next call: up to courier.spin_us
 * after each call, ipc/region.h), abandoned (the session gave up; the worker still holds the call).
 */
const char *slot_state(std::uint32_t bits) {
    if (bits == 0)
        return "free";
    if (!(bits & ipc::held_by_client))
        return "abandoned";
    if (bits & ipc::accepted_by_server)
        return "serving";
    return (bits & ipc::held_by_server) ? "calling" : "leased";
}

std::uint64_t side(const ipc::SideCounters &c, ipc::Counter which) {
    return c.value[static_cast<std::size_t>(which)].load(std::memory_order_relaxed);
}

std::uint64_t all_runtimes(const std::atomic<std::uint64_t> (&per_runtime)[ipc::max_runtimes]) {
    std::uint64_t n = 0;
    for (const auto &v : per_runtime)
        n += v.load(std::memory_order_relaxed);
    return n;
}

/* courier.slots(): one row per slot; it holds no C++ object, so PostgreSQL may raise directly. */
Datum slot_rows(FunctionCallInfo fcinfo) {
    ipc::Region &r = region_or_error();
    TupleDesc desc;
    Tuplestorestate *store = begin_srf(fcinfo, &desc);
    for (std::uint32_t i = 0; i < r.slots(); ++i) {
        const ipc::SlotControl *sc = r.slot(i);
        const ipc::SlotStats *st = r.stats().slot(i);
        const std::uint32_t bits = sc->state.load(std::memory_order_acquire);
        Datum values[10];
        bool nulls[10] = {false};
        values[0] = Int32GetDatum(static_cast<int32>(i));
        values[1] = CStringGetTextDatum(slot_state(bits));
        values[2] = Int32GetDatum(sc->owner_pid.load(std::memory_order_relaxed));
        nulls[2] = bits == 0;
        values[3] = Int64GetDatum(static_cast<int64>(sc->generation.load(std::memory_order_relaxed)));
        values[4] = Int64GetDatum(static_cast<int64>(all_runtimes(st->calls.calls)));
        values[5] = Int64GetDatum(static_cast<int64>(all_runtimes(st->calls.call_errors)));
        values[6] = Int64GetDatum(static_cast<int64>(side(st->client, ipc::Counter::bytes_sent)));
        values[7] = Int64GetDatum(static_cast<int64>(side(st->server, ipc::Counter::bytes_sent)));
        values[8] = Int64GetDatum(static_cast<int64>(side(st->client, ipc::Counter::wakeups_sent) +
                                                     side(st->server, ipc::Counter::wakeups_sent)));
        values[9] = Int64GetDatum(static_cast<int64>(side(st->client, ipc::Counter::wakeups_elided) +
                                                     side(st->server, ipc::Counter::wakeups_elided)));
        tuplestore_putvalues(store, desc, values, nulls);
    }
    return static_cast<Datum>(0);
}

/* courier.stats(): the rows ipc::stat_rows builds in C++; PostgreSQL is called through pg_call. */
Datum stat_rows(FunctionCallInfo fcinfo) {
    ipc::Region &r = region_or_error();
    TupleDesc desc;
    Tuplestorestate *store = begin_srf(fcinfo, &desc);
    const ipc::StatsSnapshot snap = ipc::read_stats(r.stats());
    for (const ipc::StatRow &row : ipc::stat_rows(snap)) {
        pg::pg_call([&] {
            Datum values[3] = {CStringGetTextDatum(row.name.c_str()), Int64GetDatum(static_cast<int64>(row.value)),
                               CStringGetTextDatum(row.help.c_str())};
            bool nulls[3] = {false, false, false};
            tuplestore_putvalues(store, desc, values, nulls);
        });
    }
    return static_cast<Datum>(0);
}

}  // namespace

/* The SQL functions' bodies run through pg::door (pg_guard.h); the C API's entry points have doors of their own. */

extern "C" Datum courier_echo(PG_FUNCTION_ARGS) {
    bytea *in = PG_GETARG_BYTEA_PP(0);
    PG_RETURN_BYTEA_P(courier_call("echo", VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in)));
}

extern "C" Datum courier_call_sql(PG_FUNCTION_ARGS) {
    char *fn = text_to_cstring(PG_GETARG_TEXT_PP(0));
    bytea *in = PG_GETARG_BYTEA_PP(1);
    PG_RETURN_BYTEA_P(courier_call(fn, VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in)));
}

extern "C" Datum courier_slots(PG_FUNCTION_ARGS) {
    return pg::door([&] { return slot_rows(fcinfo); });
}

extern "C" Datum courier_stats(PG_FUNCTION_ARGS) {
    return pg::door([&] { return stat_rows(fcinfo); });
}
