/*
 * pg_probe.so — SQL functions that run courier's PostgreSQL-side pieces
 * directly, for tests/pg (this file holds the module's magic block).
 *
 * Here: functions that break the C++/PostgreSQL boundary on
 * purpose, through courier/pg_guard.h, for CourierCluster.TheGuard... :
 * C++ exceptions of three kinds, and a PostgreSQL ERROR raised while C++
 * objects with destructors are alive. A counter shows the destructors ran.
 */
#include <new>
#include <stdexcept>
#include <string>

#include "courier/pg_guard.h"

extern "C" {
#include "fmgr.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;
PG_FUNCTION_INFO_V1(guard_throw);
PG_FUNCTION_INFO_V1(guard_pg_error);
PG_FUNCTION_INFO_V1(guard_destructors);
}

namespace {

int destructors_run = 0;

struct Counted {
    ~Counted() { ++destructors_run; }
};

}  // namespace

extern "C" Datum guard_throw(PG_FUNCTION_ARGS) {
    return courier::pg::door([&]() -> Datum {
        const std::string kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
        Counted alive;
        if (kind == "bad_alloc")
            throw std::bad_alloc();
        if (kind == "runtime_error")
            throw std::runtime_error("thrown by C++");
        throw 42;
    });
}

extern "C" Datum guard_pg_error(PG_FUNCTION_ARGS) {
    return courier::pg::door([&]() -> Datum {
        Counted alive;
        const std::string held(4096, 'x');
        courier::pg::pg_call([] {
            ereport(ERROR, (errcode(ERRCODE_DIVISION_BY_ZERO), errmsg("raised by PostgreSQL under C++")));
        });
        return PointerGetDatum(cstring_to_text(held.c_str()));
    });
}

extern "C" Datum guard_destructors(PG_FUNCTION_ARGS) { PG_RETURN_INT32(destructors_run); }
