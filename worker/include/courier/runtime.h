/*
 * courier/runtime.h — the ABI between courier's worker and a runtime.
 *
 * A runtime is a shared library that the courier background worker loads
 * with dlopen() after it has forked from the postmaster, so the runtime may
 * start threads (a tokio or Go runtime, a query engine, a thread pool).
 * Plain C, so that runtimes can be written in any language with a C FFI.
 *
 * The library exports one symbol, COURIER_RUNTIME_ENTRY_NAME, a function
 * returning a pointer to a static courier_runtime whose abi_version is
 * COURIER_RUNTIME_ABI_VERSION. The worker refuses any other version.
 *
 * Threading: init() and shutdown() run on the worker's main thread.
 * handle() runs on the worker's pool threads, concurrently; it must be
 * thread-safe. Those threads have all signals blocked and must not call
 * into PostgreSQL. An exception escaping handle() (C++) fails that call
 * with an error; the worker survives.
 *
 * Responses: handle() writes the response through host->write(), in as
 * many pieces as it likes (streaming: the caller receives them while the
 * handler runs), or reports an error with host->error(). A non-zero return
 * from write() means the caller has gone (cancelled or timed out): stop
 * working and return.
 */
#ifndef COURIER_RUNTIME_H
#define COURIER_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COURIER_RUNTIME_ABI_VERSION 1
#define COURIER_RUNTIME_ENTRY courier_runtime_v1
#define COURIER_RUNTIME_ENTRY_NAME "courier_runtime_v1"

/* One call's response, owned by the worker. */
typedef struct courier_response courier_response;

typedef struct courier_host
{
	uint32_t	abi_version;
	/* Appends bytes to the response. 0: ok; non-zero: the caller is gone. */
	int			(*write) (courier_response *response, const void *data, size_t len);
	/* Fails the call with a message (the caller gets an ERROR with it). */
	void		(*error) (courier_response *response, const char *message, size_t len);
	/* Non-zero once the caller has gone: long handlers poll it to stop early. */
	int			(*cancelled) (courier_response *response);
} courier_host;

typedef struct courier_runtime
{
	uint32_t	abi_version;	/* COURIER_RUNTIME_ABI_VERSION */
	const char *name;
	/*
	 * Called once before any handle(). Returns NULL on success, or a static
	 * error message (the worker logs it and fails every call with it).
	 */
	const char *(*init) (void **state, const courier_host *host, int worker_threads);
	/* Handles one call; fn is the function name the caller gave. */
	void		(*handle) (void *state, const char *fn, const void *request, size_t request_len,
						   courier_response *response);
	/* Called once after the last handle() has returned. */
	void		(*shutdown) (void *state);
} courier_runtime;

typedef const courier_runtime *(*courier_runtime_entry_fn) (void);

/* Each runtime defines this function. */
const courier_runtime *COURIER_RUNTIME_ENTRY(void);

#ifdef __cplusplus
}
#endif

#endif							/* COURIER_RUNTIME_H */
