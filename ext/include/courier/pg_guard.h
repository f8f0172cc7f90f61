/*
 * pg_guard.h — the one door between C++ and PostgreSQL's error handling.
 *
 * PostgreSQL raises errors with longjmp, C++ with exceptions, and neither
 * may cross the other's frames: a longjmp over a C++ frame skips its
 * destructors (undefined behaviour, in practice leaks and held locks), and
 * an exception has no handler in PostgreSQL's C frames (std::terminate: the
 * backend aborts and the postmaster restarts the whole server).
 *
 *   courier::pg::door(fn)     every SQL function and C API entry point
 *                             runs its body as fn. A C++ exception that
 *                             leaves fn becomes ereport(ERROR) once fn's
 *                             frames are gone (bad_alloc as out of memory);
 *                             a PostgreSQL error that pg_call turned into
 *                             an exception is raised again as it was.
 *   courier::pg::pg_call(fn)  C++ code calls PostgreSQL through it while
 *                             it holds objects with destructors: an ERROR
 *                             in fn comes back as a pg::Error exception,
 *                             which unwinds those frames, and door()
 *                             re-raises it. fn itself must hold nothing
 *                             with a destructor (a lambda of plain calls).
 *
 * Where fn calls PostgreSQL directly with no C++ object alive (checks that
 * ereport before anything is built), no pg_call is needed.
 *
 * Include order: C++ and courier headers first, then this one; it brings
 * in postgres.h, whose macros confuse the standard library when it comes
 * first (courier's ipc headers refuse to compile after it).
 */
#pragma once

#include <cstdio>
#include <exception>
#include <new>

extern "C" {
#include "postgres.h"

#include "utils/elog.h"
#include "utils/memutils.h"
}

namespace courier::pg {

/* A PostgreSQL error on its way through C++ frames to door(). */
class Error final : public std::exception {
public:
    explicit Error(ErrorData *data) : data_(data) {}
    ErrorData *data() const { return data_; }
    const char *what() const noexcept override { return data_->message != nullptr ? data_->message : "error"; }

private:
    ErrorData *data_;
};

template <typename Fn>
void pg_call(Fn &&fn) {
    MemoryContext caller = CurrentMemoryContext;
    ErrorData *volatile caught = nullptr;
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller);  // CopyErrorData must not allocate in ErrorContext
        caught = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    if (caught != nullptr)
        throw Error(caught);
}

namespace detail {

/* Raises what door() caught; outside every C++ scope of the entry point. */
[[noreturn]] inline void raise(ErrorData *pg_error, bool out_of_memory, const char *message) {
    if (pg_error != nullptr)
        ReThrowError(pg_error);
    ereport(ERROR, (errcode(out_of_memory ? ERRCODE_OUT_OF_MEMORY : ERRCODE_INTERNAL_ERROR),
                    errmsg("courier: %s", message)));
    pg_unreachable();
}

}  // namespace detail

template <typename Fn>
auto door(Fn &&fn) -> decltype(fn()) {
    ErrorData *pg_error = nullptr;
    bool out_of_memory = false;
    char message[256];
    try {
        return fn();
    } catch (const Error &e) {
        pg_error = e.data();
    } catch (const std::bad_alloc &) {
        out_of_memory = true;
        snprintf(message, sizeof message, "out of memory");
    } catch (const std::exception &e) {
        snprintf(message, sizeof message, "%s", e.what());
    } catch (...) {
        snprintf(message, sizeof message, "an exception of unknown type");
    }
    detail::raise(pg_error, out_of_memory, message);
}

}  // namespace courier::pg
