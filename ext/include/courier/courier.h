/*
 * courier/courier.h — calling courier's runtime from another extension.
 *
 * Include after postgres.h. Every function reports failure with
 * ereport(ERROR), like the rest of the server's C API: an ERROR during a
 * call abandons the call safely (the worker drops the late response).
 *
 * A backend has at most one call in flight. The session (a leased slot)
 * is opened on the first call and kept until the backend exits or
 * courier.enabled is turned off.
 *
 * Runtimes: courier.runtimes lists the cluster's runtimes. A function name
 * "fusion.sql" calls sql in runtime fusion; a name without a dot calls the
 * first runtime listed. The _runtime variants take the runtime apart (NULL:
 * resolve from the name as above). An unknown runtime is an ERROR.
 *
 *   bytea *r = courier_call("echo", data, len);
 *   bytea *q = courier_call_runtime("fusion", "sql", text, strlen(text));
 *
 * Streaming a large request or response in pieces:
 *
 *   CourierCall *c = courier_call_begin("fn", total_len);   // -1: unknown
 *   courier_call_write(c, piece, n);  ... as often as needed
 *   courier_call_end_request(c);
 *   while ((n = courier_call_read(c, buf, sizeof buf)) > 0) ... use buf
 *   courier_call_finish(c);
 */
#ifndef COURIER_COURIER_H
#define COURIER_COURIER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COURIER_API_VERSION 2

typedef struct CourierCall CourierCall;

/* Leases this backend's slot now rather than on the first call. */
extern void courier_open_session(void);

/* A whole call: returns the response as a palloc'd bytea. */
extern struct varlena *courier_call(const char *fn, const void *data, size_t len);
extern struct varlena *courier_call_runtime(const char *runtime, const char *fn, const void *data, size_t len);

/* Streaming. total_len is the request payload length, or -1 if unknown. */
extern CourierCall *courier_call_begin(const char *fn, int64_t total_len);
extern CourierCall *courier_call_begin_runtime(const char *runtime, const char *fn, int64_t total_len);
extern void courier_call_write(CourierCall *call, const void *data, size_t len);
extern void courier_call_end_request(CourierCall *call);
/* Copies the next piece of the response into buf; returns 0 at its end. */
extern size_t courier_call_read(CourierCall *call, void *buf, size_t cap);
extern void courier_call_finish(CourierCall *call);

#ifdef __cplusplus
}
#endif

#endif							/* COURIER_COURIER_H */
