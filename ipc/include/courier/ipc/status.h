/*
 * status.h — the outcome of every ipc operation.
 *
 * The core never throws on a protocol path: its callers include PostgreSQL
 * backends, where an exception must not cross into C and an ereport must not
 * jump over C++ destructors. Every fallible operation returns a Status; the
 * caller, who knows the context (setting names, sizes), turns it into a
 * message for the user.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <cstdint>

namespace courier::ipc {

enum class Status : std::uint8_t {
    ok = 0,
    would_block,       // non-blocking call found no data or no room
    timeout,           // the caller's deadline passed
    interrupted,       // the waker reported a pending interrupt (PostgreSQL)
    too_large,         // message above the region's max_message_size
    corrupt,           // a value read from shared memory is out of range
    abandoned,         // the requester gave up on this call
    server_restarted,  // the serving side started a new epoch mid-call
    stopping,          // the serving side is shutting down
    aborted,           // the sender gave up on the message part way
    stale,             // a frame or handle of an older generation
    no_slot,           // the free list is empty
    bad_argument,      // a parameter outside its documented bounds
};

/* A short, stable English description; callers add the specifics. */
const char *describe(Status status);

}  // namespace courier::ipc
