/*
 * entry.c — the C side of the Go runtime: the courier_runtime_v2 entry
 * point, and small wrappers around the host's function pointers, which Go
 * cannot call directly. Everything else is in echo.go.
 */
#include "_cgo_export.h"

static const courier_host2 *host;

static const char *init_runtime(void **state, const courier_host2 *h, const courier_init_args *args)
{
	host = h;
	*state = NULL;
	return goInit(args->runtime_id, args->worker_threads);
}

static void stop_runtime(void *state) { (void) state; }

static void shutdown_runtime(void *state)
{
	(void) state;
	goShutdown();
}

static const courier_runtime2 runtime = {
	COURIER_RUNTIME_V2, COURIER_MODE_DRIVEN, "courier_go_echo",
	init_runtime, NULL, stop_runtime, shutdown_runtime,
};

const courier_runtime2 *courier_runtime_v2(void) { return &runtime; }

int next_call(uint32_t rt, courier_call_info *out, int64_t ms) { return host->next_call(rt, out, ms); }
/* write and finish in one: one cgo transition per answer instead of two. */
int respond_call(courier_call_id id, const void *data, size_t len)
{
	const int rc = host->write(id, data, len);
	return rc == COURIER_OK ? host->finish(id) : rc;
}
int fail_call(courier_call_id id, const char *msg, size_t len) { return host->fail(id, msg, len); }
int read_call(courier_call_id id, void *buf, size_t cap, size_t *n) { return host->read(id, buf, cap, n); }

/* Runs on a courier thread when a caller leaves: the one callback into Go from a thread Go did not start. */
static void cancelled(void *arg, courier_call_id id)
{
	(void) arg;
	goCancel(id);
}

int watch_call(courier_call_id id) { return host->on_cancel(id, cancelled, NULL); }
