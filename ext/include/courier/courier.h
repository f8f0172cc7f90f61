/*
 * courier/courier.h — calling courier's runtimes from another extension.
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
 *
 * Linking: these functions are found at run time, through the table that
 * courier.so exports as courier_api_v2, not at link time. An extension
 * loaded in a server where courier is not preloaded therefore gets
 * courier's own ERROR saying so and what to do, not "undefined symbol".
 */
#ifndef COURIER_COURIER_H
#define COURIER_COURIER_H

#include <stddef.h>
#include <stdint.h>

#include "fmgr.h"

#ifdef __cplusplus
extern "C" {
#endif

#define COURIER_API_VERSION 2
#define COURIER_API_SYMBOL "courier_api_v2"

typedef struct CourierCall CourierCall;

/* courier.so's functions, as courier_api_v2() hands them out. */
typedef struct CourierApi
{
	uint32_t	version;		/* COURIER_API_VERSION */
	void		(*open_session) (void);
	struct varlena *(*call) (const char *runtime, const char *fn, const void *data, size_t len);
	CourierCall *(*begin) (const char *runtime, const char *fn, int64_t total_len);
	void		(*write) (CourierCall *call, const void *data, size_t len);
	void		(*end_request) (CourierCall *call);
	size_t		(*read) (CourierCall *call, void *buf, size_t cap);
	void		(*finish) (CourierCall *call);
} CourierApi;

typedef const CourierApi *(*courier_api_fn) (void);

#ifndef COURIER_BUILDING_COURIER

/* Loads courier's table once per backend (courier.so's _PG_init explains a missing preload). */
static inline const CourierApi *
courier_api(void)
{
	static const CourierApi *api = NULL;

	if (api == NULL)
		api = ((courier_api_fn) load_external_function("$libdir/courier", COURIER_API_SYMBOL, true, NULL)) ();
	return api;
}

/* Leases this backend's slot now rather than on the first call. */
static inline void
courier_open_session(void)
{
	courier_api()->open_session();
}

/* A whole call: returns the response as a palloc'd bytea. */
static inline struct varlena *
courier_call(const char *fn, const void *data, size_t len)
{
	return courier_api()->call(NULL, fn, data, len);
}

static inline struct varlena *
courier_call_runtime(const char *runtime, const char *fn, const void *data, size_t len)
{
	return courier_api()->call(runtime, fn, data, len);
}

/* Streaming. total_len is the request payload length, or -1 if unknown. */
static inline CourierCall *
courier_call_begin(const char *fn, int64_t total_len)
{
	return courier_api()->begin(NULL, fn, total_len);
}

static inline CourierCall *
courier_call_begin_runtime(const char *runtime, const char *fn, int64_t total_len)
{
	return courier_api()->begin(runtime, fn, total_len);
}

static inline void
courier_call_write(CourierCall *call, const void *data, size_t len)
{
	courier_api()->write(call, data, len);
}

static inline void
courier_call_end_request(CourierCall *call)
{
	courier_api()->end_request(call);
}

/* Copies the next piece of the response into buf; returns 0 at its end. */
static inline size_t
courier_call_read(CourierCall *call, void *buf, size_t cap)
{
	return courier_api()->read(call, buf, cap);
}

static inline void
courier_call_finish(CourierCall *call)
{
	courier_api()->finish(call);
}

#endif							/* COURIER_BUILDING_COURIER */

#ifdef __cplusplus
}
#endif

#endif							/* COURIER_COURIER_H */
