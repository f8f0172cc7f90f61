/*
 * courier/runtime.h — the ABI between courier's worker and a runtime.
 *
 * A runtime is a shared library that the courier background worker loads
 * with dlopen() after it has forked from the postmaster, so the runtime may
 * start threads (a tokio or Go runtime, a query engine, a thread pool).
 * Plain C, so that runtimes can be written in any language with a C FFI.
 * courier.runtimes lists the runtimes of a cluster; each has a name, and a
 * call names its runtime ("fusion.sql") or goes to the first one.
 *
 * Two versions of the ABI load side by side. The worker looks for the
 * symbol "courier_runtime_v2" first, then "courier_runtime_v1".
 *
 * ---------------------------------------------------------------- v2
 *
 * Calls are values of type courier_call_id. A call is open from the moment
 * the runtime receives it until it ends with finish() or fail(); between
 * the two, any thread may work on it, one thread at a time (the host
 * serializes them, but a stream of writes from two threads interleaves).
 * Calls open at once are bounded by courier.slots, not by threads.
 *
 * Two modes, chosen by the runtime's `mode`:
 *
 *   COURIER_MODE_CALLBACK  the worker's pool threads (courier.worker_threads)
 *       take calls and call handle() with each. handle() may finish the
 *       call before it returns, or return at once and finish it later from
 *       any thread (asynchronous completion).
 *   COURIER_MODE_DRIVEN    the runtime's own threads take calls with
 *       next_call() (blocking, with a timeout), so that a Go or tokio
 *       runtime never enters its scheduler from a thread it did not create.
 *       handle may be NULL.
 *
 * Lifecycle, all on the worker's main thread unless said otherwise:
 *
 *   init()      once, with every signal blocked (threads started here
 *               inherit that mask: PostgreSQL's signals stay on the main
 *               thread). Returns NULL, or an error message that the worker
 *               logs and answers every call of this runtime with.
 *   handle()    callback mode: on pool threads, concurrently.
 *   stop()      the worker is shutting down (SIGTERM, restart). From now
 *               on next_call() returns COURIER_STOPPING, cancelled() is
 *               true for every call and cancel callbacks have fired. End
 *               or abandon open calls; tell your threads to return. May
 *               be NULL.
 *   shutdown()  after stop(), once no courier thread is inside handle()
 *               and no call of this runtime is open (the worker fails the
 *               calls still open after a grace period of about a second).
 *               Join your threads and free everything. If a pool thread is
 *               still inside handle() when the grace period ends, shutdown
 *               is NOT called (the process exits under the runtime rather
 *               than free what a thread still uses).
 *
 * A call, from the runtime's side:
 *
 *   1. it arrives as a courier_call_info: the function name, and the first
 *      piece of the request body, in place in shared memory. request is
 *      never NULL (an empty body points at an empty buffer). The name is
 *      valid until the call ends; the piece until the first read(),
 *      finish() or fail() of the call.
 *   2. if !request_complete, read() streams the rest of the body, piece by
 *      piece, until it sets *n to 0. Read the whole request before you
 *      write: the caller sends all of it before it reads (write() before
 *      that returns COURIER_MISUSE). finish() and fail() drop what is
 *      left unread.
 *   3. write() appends to the response, which streams to the caller as it
 *      goes (a response larger than a ring waits for the caller to read:
 *      write() may block). Then finish(), or fail() with a message: fail()
 *      after write() replaces the partial response with the error.
 *   4. the caller may go away at any time (cancel, statement_timeout,
 *      courier.call_timeout, pg_terminate_backend, an ERROR) or the worker
 *      may stop: write() then returns COURIER_GONE, cancelled() turns
 *      non-zero, and a callback set with on_cancel() runs once, on a
 *      courier thread (keep it short and non-blocking: set a flag, cancel
 *      a token, close a channel). End the call anyway (finish or fail);
 *      the worker drops what it sends.
 *
 * Every host function is safe to call from any thread, including threads
 * courier did not create; never from a signal handler. Misuse (a call id
 * that is 0, unknown, already ended, or of an earlier call on the same
 * slot; finish twice; write after finish; NULL pointers) returns an error
 * code and changes nothing. A call that arrived before the caller gave up
 * on it is handed to the runtime; one that the caller gave up on while it
 * waited in the queue is not (the runtime never sees it).
 *
 * Memory: an allocation failure in the host fails that call with an error
 * (COURIER_NOMEM); it never ends the worker. Exceptions and panics must
 * not cross into the host (the worker catches C++ exceptions from
 * handle() and fails the call, but Go and Rust must recover themselves).
 *
 * ---------------------------------------------------------------- v1
 *
 * The first ABI, still loaded: handle() runs on a pool thread and the call
 * ends when it returns. courier_response's write() returns non-zero once
 * the caller has gone; error() fails the call (after write(), too: the
 * partial response is replaced by the error); cancelled() polls. A v1
 * handle() that runs long holds a pool thread for its whole length.
 */
#ifndef COURIER_RUNTIME_H
#define COURIER_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ v2 */

#define COURIER_RUNTIME_V2 2
#define COURIER_RUNTIME_ENTRY_V2 courier_runtime_v2
#define COURIER_RUNTIME_ENTRY_V2_NAME "courier_runtime_v2"

#define COURIER_MODE_CALLBACK 0
#define COURIER_MODE_DRIVEN 1

#define COURIER_UNKNOWN_LENGTH UINT64_MAX

/* Results of the host functions. */
#define COURIER_OK 0
#define COURIER_GONE 1		/* the caller has gone, or the worker is stopping */
#define COURIER_ENDED 2		/* the call already ended (finish or fail) */
#define COURIER_INVALID 3	/* not a call id the host gave out */
#define COURIER_TOO_LARGE 4 /* the response exceeds courier.max_message_size:
							 * the call fails with an error saying so */
#define COURIER_TIMEOUT 5	/* next_call: nothing within the timeout */
#define COURIER_STOPPING 6	/* next_call: the worker is stopping */
#define COURIER_NOMEM 7		/* out of memory in the host: the call failed */
#define COURIER_MISUSE 8	/* a NULL argument, the wrong mode, or write()
							 * before the request was read */

typedef uint64_t courier_call_id;	/* 0 is never a call */

typedef struct courier_call_info
{
	courier_call_id id;
	const char *fn;				/* NUL-terminated, without the runtime prefix */
	const void *request;		/* first piece of the body, never NULL */
	size_t		request_len;
	uint64_t	request_total;	/* whole body, or COURIER_UNKNOWN_LENGTH */
	int			request_complete;	/* 1 when request holds all of the body */
} courier_call_info;

typedef void (*courier_cancel_fn) (void *arg, courier_call_id call);

typedef struct courier_host2
{
	uint32_t	abi_version;	/* COURIER_RUNTIME_V2 */
	uint32_t	struct_size;	/* sizeof(courier_host2) of the worker */
	/* Appends to the response. */
	int			(*write) (courier_call_id call, const void *data, size_t len);
	/* Ends the call with the response written so far (possibly none). */
	int			(*finish) (courier_call_id call);
	/* Ends the call with an error; len bytes of message, NULs included. */
	int			(*fail) (courier_call_id call, const char *message, size_t len);
	/* Copies the next piece of the request body into buf; *n = 0 at its end. */
	int			(*read) (courier_call_id call, void *buf, size_t cap, size_t *n);
	/* Non-zero once the caller has gone or the worker is stopping. */
	int			(*cancelled) (courier_call_id call);
	/*
	 * Runs fn(arg, call) once when the caller goes or the worker stops;
	 * at once (on this thread) if that has already happened. One callback
	 * per call; a second replaces the first if it has not run yet.
	 */
	int			(*on_cancel) (courier_call_id call, courier_cancel_fn fn, void *arg);
	/*
	 * Driven mode: waits up to timeout_ms (< 0: no limit) for the next
	 * call of this runtime (runtime_id from init's args) and fills *out.
	 * COURIER_TIMEOUT, or COURIER_STOPPING once the worker stops (return
	 * from your thread). Any number of threads may wait at once.
	 */
	int			(*next_call) (uint32_t runtime_id, courier_call_info *out, int64_t timeout_ms);
	/* A short English text for a result code. */
	const char *(*describe) (int result);
} courier_host2;

typedef struct courier_init_args
{
	uint32_t	struct_size;	/* sizeof(courier_init_args) of the worker */
	const char *name;			/* this runtime's name in courier.runtimes */
	uint32_t	runtime_id;		/* pass to next_call() */
	int			worker_threads; /* courier.worker_threads */
	uint32_t	max_open_calls; /* courier.slots */
	uint64_t	max_message_size;	/* courier.max_message_size, bytes */
} courier_init_args;

typedef struct courier_runtime2
{
	uint32_t	abi_version;	/* COURIER_RUNTIME_V2 */
	uint32_t	mode;			/* COURIER_MODE_CALLBACK or COURIER_MODE_DRIVEN */
	const char *name;
	/*
	 * *state is passed to every other function and to next_call(). The
	 * host table stays valid until shutdown() returns.
	 */
	const char *(*init) (void **state, const courier_host2 *host, const courier_init_args *args);
	void		(*handle) (void *state, const courier_call_info *call);
	void		(*stop) (void *state);
	void		(*shutdown) (void *state);
} courier_runtime2;

typedef const courier_runtime2 *(*courier_runtime2_entry_fn) (void);

/* Each v2 runtime defines this function. */
const courier_runtime2 *COURIER_RUNTIME_ENTRY_V2(void);

/* ------------------------------------------------------------------ v1 */

#define COURIER_RUNTIME_ABI_VERSION 1
#define COURIER_RUNTIME_ENTRY courier_runtime_v1
#define COURIER_RUNTIME_ENTRY_NAME "courier_runtime_v1"

/* One call's response, owned by the worker. */
typedef struct courier_response courier_response;

typedef struct courier_host
{
	uint32_t	abi_version;
	/* Appends bytes to the response. 0: ok; non-zero: the call is over (caller gone, failed, too large). */
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

/* Each v1 runtime defines this function. */
const courier_runtime *COURIER_RUNTIME_ENTRY(void);

#ifdef __cplusplus
}
#endif

#endif							/* COURIER_RUNTIME_H */
