/*
 * Compiled by the test ipc_headers_refuse_postgres_first, which passes only
 * when the compiler stops with before_postgres.h's message: an ipc header
 * after postgres.h must not build. Never part of a target that is built.
 */
extern "C" {
#include "postgres.h"
}

#include "courier/ipc/region.h"
