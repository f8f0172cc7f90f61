/*
 * courier_bench — round trips timed inside the backend, for courier and for
 * what an extension author would otherwise use. Not part of any package.
 *
 *   courier_bench.rtt(transport, size, n [, gap_us]) → median_ns, p99_ns, p999_ns, mb_per_s
 *     transport 'courier': courier_call("echo") through the C API;
 *     'courier:RUNTIME.FN': courier_call("RUNTIME.FN"), an echo of another runtime;
 *     'shm_mq': a pair of shm_mq queues in a DSM segment to an echo in a
 *       dynamic background worker, set up the way test_shm_mq does;
 *     'socket': a Unix-domain socket to an echo in a dynamic background
 *       worker (length-prefixed messages), the sidecar design.
 *     gap_us > 0 sleeps that long between round trips (untimed): a session
 *     that calls now and then, whose peer has gone to sleep in between.
 *   courier_bench.echo_loop(transport, size, start_at, duration_ms) → calls, cpu_s, histogram
 *     opens the transport (its own echo worker for shm_mq and socket), waits
 *     until start_at (epoch seconds), then makes round trips for duration_ms;
 *     returns the calls made, this backend's CPU seconds and the round trips'
 *     latency histogram (HISTOGRAM_STEPS buckets per power of two of ns, so
 *     that many sessions' distributions can be merged exactly).
 *   courier_bench.timed_call(fn, payload, start_at) → started, ended
 *     waits until start_at, makes one call, returns when it began and
 *     ended (epoch seconds): many sessions at once show how many calls a
 *     runtime serves together.
 *
 * Each round trip is timed with clock_gettime(CLOCK_MONOTONIC); the echo
 * peers use queues and sockets as large as courier's ring (64 kB).
 */
/* sched_setaffinity and the CPU_* macros; postgres.h includes the C library first. */
#define _GNU_SOURCE
#include "postgres.h"

#include <math.h>
#include <sched.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "courier/courier.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "storage/shm_toc.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "tcop/tcopprot.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(courier_bench_rtt);
PG_FUNCTION_INFO_V1(courier_bench_echo_loop);
PG_FUNCTION_INFO_V1(courier_bench_timed_call);
PGDLLEXPORT void courier_bench_shm_mq_worker(Datum arg);
PGDLLEXPORT void courier_bench_socket_worker(Datum arg);

#define BENCH_MAGIC 0x636f7572
#define QUEUE_SIZE (64 * 1024)

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

/*
 * With courier.worker_cpus set, the baselines' echo workers run where
 * courier's worker runs, so that both designs get the same CPUs apart from
 * the sessions. (The value was checked when the server started.)
 */
static void
place_like_courier_worker(pid_t pid)
{
	const char *list = GetConfigOption("courier.worker_cpus", true, false);
	cpu_set_t	set;
	char	   *at;

	if (list == NULL || list[0] == '\0')
		return;
	CPU_ZERO(&set);
	for (at = (char *) list; *at != '\0';)
	{
		long		first = strtol(at, &at, 10),
					last = first;

		if (*at == '-')
			last = strtol(at + 1, &at, 10);
		for (; first <= last && first < CPU_SETSIZE; first++)
			CPU_SET(first, &set);
		while (*at == ',' || *at == ' ')
			at++;
	}
	if (sched_setaffinity(pid, sizeof set, &set) != 0)
		ereport(ERROR, (errmsg("could not put the benchmark's echo worker on courier.worker_cpus: %m")));
}

static BackgroundWorkerHandle *
start_echo_worker(const char *function, Datum arg)
{
	BackgroundWorker w;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	memset(&w, 0, sizeof w);
	w.bgw_flags = BGWORKER_SHMEM_ACCESS;
	w.bgw_start_time = BgWorkerStart_ConsistentState;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(w.bgw_name, BGW_MAXLEN, "courier_bench echo");
	snprintf(w.bgw_type, BGW_MAXLEN, "courier_bench echo");
	snprintf(w.bgw_library_name, BGW_MAXLEN, "courier_bench");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "%s", function);
	w.bgw_main_arg = arg;
	w.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&w, &handle))
		ereport(ERROR, (errmsg("could not start the benchmark's echo worker"),
						errhint("Raise max_worker_processes.")));
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		ereport(ERROR, (errmsg("the benchmark's echo worker did not start")));
	place_like_courier_worker(pid);
	return handle;
}

/* ---------------------------------------------------------------- shm_mq */

void
courier_bench_shm_mq_worker(Datum arg)
{
	dsm_segment *seg;
	shm_toc    *toc;
	shm_mq_handle *in,
			   *out;

	BackgroundWorkerUnblockSignals();
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "courier_bench");
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		proc_exit(1);
	toc = shm_toc_attach(BENCH_MAGIC, dsm_segment_address(seg));
	shm_mq_set_receiver(shm_toc_lookup(toc, 1, false), MyProc);
	shm_mq_set_sender(shm_toc_lookup(toc, 2, false), MyProc);
	in = shm_mq_attach(shm_toc_lookup(toc, 1, false), seg, NULL);
	out = shm_mq_attach(shm_toc_lookup(toc, 2, false), seg, NULL);
	for (;;)
	{
		Size		len;
		void	   *data;

		if (shm_mq_receive(in, &len, &data, false) != SHM_MQ_SUCCESS)
			break;
		if (shm_mq_send(out, len, data, false, true) != SHM_MQ_SUCCESS)
			break;
	}
	proc_exit(0);
}

typedef struct Transport
{
	/* shm_mq */
	dsm_segment *seg;
	shm_mq_handle *out,
			   *in;
	/* socket */
	int			fd;
	char	   *buf;
	BackgroundWorkerHandle *worker;
	/* courier */
	const char *fn;
} Transport;

static void
shm_mq_open(Transport *t)
{
	shm_toc_estimator e;
	Size		size;
	shm_toc    *toc;
	shm_mq	   *to_worker,
			   *from_worker;

	shm_toc_initialize_estimator(&e);
	shm_toc_estimate_chunk(&e, QUEUE_SIZE);
	shm_toc_estimate_chunk(&e, QUEUE_SIZE);
	shm_toc_estimate_keys(&e, 2);
	size = shm_toc_estimate(&e);
	t->seg = dsm_create(size, 0);
	toc = shm_toc_create(BENCH_MAGIC, dsm_segment_address(t->seg), size);
	to_worker = shm_mq_create(shm_toc_allocate(toc, QUEUE_SIZE), QUEUE_SIZE);
	shm_toc_insert(toc, 1, to_worker);
	from_worker = shm_mq_create(shm_toc_allocate(toc, QUEUE_SIZE), QUEUE_SIZE);
	shm_toc_insert(toc, 2, from_worker);
	shm_mq_set_sender(to_worker, MyProc);
	shm_mq_set_receiver(from_worker, MyProc);
	t->worker = start_echo_worker("courier_bench_shm_mq_worker",
								  UInt32GetDatum(dsm_segment_handle(t->seg)));
	t->out = shm_mq_attach(to_worker, t->seg, t->worker);
	t->in = shm_mq_attach(from_worker, t->seg, t->worker);
}

static void
shm_mq_round_trip(Transport *t, const char *data, int size)
{
	Size		len;
	void	   *reply;

	if (shm_mq_send(t->out, size, data, false, true) != SHM_MQ_SUCCESS ||
		shm_mq_receive(t->in, &len, &reply, false) != SHM_MQ_SUCCESS || (int) len != size)
		ereport(ERROR, (errmsg("shm_mq round trip failed")));
}

static void
shm_mq_close(Transport *t)
{
	shm_mq_detach(t->out);
	shm_mq_detach(t->in);
	dsm_detach(t->seg);
}

/* ---------------------------------------------------------------- socket */

static bool
full_io(int fd, char *buf, size_t len, bool writing)
{
	size_t		done = 0;

	while (done < len)
	{
		ssize_t		n = writing ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		done += (size_t) n;
	}
	return true;
}

static void
socket_path(char *path, size_t len, int pid)
{
	snprintf(path, len, "/tmp/courier-bench-%d.sock", pid);
}

void
courier_bench_socket_worker(Datum arg)
{
	struct sockaddr_un addr;
	int			fd;
	char	   *buf = malloc(64 * 1024 * 1024 + 4);

	BackgroundWorkerUnblockSignals();
	memset(&addr, 0, sizeof addr);
	addr.sun_family = AF_UNIX;
	socket_path(addr.sun_path, sizeof addr.sun_path, DatumGetInt32(arg));
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (buf == NULL || connect(fd, (struct sockaddr *) &addr, sizeof addr) != 0)
	{
		ereport(LOG, (errmsg("courier_bench socket echo: cannot connect to %s: %m", addr.sun_path)));
		proc_exit(1);
	}
	for (;;)
	{
		uint32		len;

		if (!full_io(fd, (char *) &len, 4, false) || len > 64 * 1024 * 1024 ||
			!full_io(fd, buf, len, false) ||
			!full_io(fd, (char *) &len, 4, true) || !full_io(fd, buf, len, true))
			break;
	}
	proc_exit(0);
}

static void
socket_open(Transport *t, int max_size)
{
	struct sockaddr_un addr;
	int			listener;
	struct pollfd pfd;
	int			bufsize = QUEUE_SIZE;

	memset(&addr, 0, sizeof addr);
	addr.sun_family = AF_UNIX;
	socket_path(addr.sun_path, sizeof addr.sun_path, MyProcPid);
	unlink(addr.sun_path);
	listener = socket(AF_UNIX, SOCK_STREAM, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *) &addr, sizeof addr) != 0 || listen(listener, 1) != 0)
		ereport(ERROR, (errmsg("could not listen on %s: %m", addr.sun_path)));
	t->worker = start_echo_worker("courier_bench_socket_worker", Int32GetDatum(MyProcPid));
	pfd.fd = listener;
	pfd.events = POLLIN;
	/*
	 * poll() is never restarted after a signal, and with 64 sessions starting
	 * together a backend takes some (sinval catch-up, for one).
	 */
	for (;;)
	{
		int			rc = poll(&pfd, 1, 10000);

		if (rc == 1)
			break;
		if (rc < 0 && errno == EINTR)
		{
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (rc < 0)
			ereport(ERROR, (errmsg("waiting for the socket echo worker: %m")));
		ereport(ERROR, (errmsg("the socket echo worker did not connect within 10 s")));
	}
	t->fd = accept(listener, NULL, NULL);
	close(listener);
	unlink(addr.sun_path);
	if (t->fd < 0)
		ereport(ERROR, (errmsg("accept failed: %m")));
	setsockopt(t->fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
	setsockopt(t->fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
	t->buf = palloc(max_size + 4);
}

static void
socket_round_trip(Transport *t, const char *data, int size)
{
	uint32		len = (uint32) size;

	if (!full_io(t->fd, (char *) &len, 4, true) || !full_io(t->fd, (char *) data, len, true) ||
		!full_io(t->fd, (char *) &len, 4, false) || len != (uint32) size ||
		!full_io(t->fd, t->buf, len, false))
		ereport(ERROR, (errmsg("socket round trip failed")));
}

/* ---------------------------------------------------------------- any transport */

/* Opens `transport` for messages up to `size` bytes; courier needs nothing but the function's name. */
static void
transport_open(Transport *t, const char *transport, int size)
{
	memset(t, 0, sizeof *t);
	if (strcmp(transport, "shm_mq") == 0)
		shm_mq_open(t);
	else if (strcmp(transport, "socket") == 0)
		socket_open(t, size);
	else if (strcmp(transport, "courier") == 0)
		t->fn = "echo";
	else if (strncmp(transport, "courier:", 8) == 0)
		t->fn = transport + 8;
	else
		ereport(ERROR, (errmsg("unknown transport \"%s\"", transport),
						errhint("Use courier, courier:runtime.function, shm_mq or socket.")));
}

static void
transport_round_trip(Transport *t, const char *data, int size)
{
	if (t->seg != NULL)
		shm_mq_round_trip(t, data, size);
	else if (t->buf != NULL)
		socket_round_trip(t, data, size);
	else
	{
		struct varlena *r = courier_call(t->fn, data, size);

		if (VARSIZE(r) - VARHDRSZ != (Size) size)
			ereport(ERROR, (errmsg("courier echo returned the wrong size")));
		pfree(r);
	}
}

static void
transport_close(Transport *t)
{
	if (t->seg != NULL)
		shm_mq_close(t);
	if (t->buf != NULL)
		close(t->fd);
	if (t->worker != NULL)
		WaitForBackgroundWorkerShutdown(t->worker);
}

/* ---------------------------------------------------------------- rtt */

Datum
courier_bench_rtt(PG_FUNCTION_ARGS)
{
	char	   *transport = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			size = PG_GETARG_INT32(1);
	int			n = PG_GETARG_INT32(2);
	int			gap_us = PG_GETARG_INT32(3);
	char	   *data;
	double	   *samples;
	Transport	t;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	int			warmup = n / 10 + 1;

	if (size < 0 || n < 1 || gap_us < 0)
		ereport(ERROR, (errmsg("size and gap_us must be >= 0 and n >= 1")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	data = palloc(size + 1);
	memset(data, 'x', size);
	samples = palloc(sizeof(double) * n);
	transport_open(&t, transport, size);
	for (int i = -warmup; i < n; i++)
	{
		double		t0;

		if (gap_us > 0)
			pg_usleep(gap_us);
		t0 = now_ns();

		transport_round_trip(&t, data, size);
		if (i >= 0)
			samples[i] = now_ns() - t0;
		CHECK_FOR_INTERRUPTS();
	}
	transport_close(&t);

	qsort(samples, n, sizeof(double), cmp_double);
	values[0] = Float8GetDatum(samples[n / 2]);
	values[1] = Float8GetDatum(samples[Min(n - 1, (int) (n * 0.99))]);
	values[2] = Float8GetDatum(samples[Min(n - 1, (int) (n * 0.999))]);
	values[3] = Float8GetDatum(samples[n / 2] > 0 ? (double) size / samples[n / 2] * 1e3 : 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* Sleeps (interruptibly) until start_at, in epoch seconds. */
static void
wait_until(double start_at)
{
	struct timespec wall;

	for (;;)
	{
		clock_gettime(CLOCK_REALTIME, &wall);
		if ((double) wall.tv_sec + wall.tv_nsec / 1e9 >= start_at)
			break;
		pg_usleep(1000);
		CHECK_FOR_INTERRUPTS();
	}
}

static double
epoch_seconds(void)
{
	struct timespec wall;

	clock_gettime(CLOCK_REALTIME, &wall);
	return (double) wall.tv_sec + wall.tv_nsec / 1e9;
}

Datum
courier_bench_timed_call(PG_FUNCTION_ARGS)
{
	char	   *fn = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *payload = text_to_cstring(PG_GETARG_TEXT_PP(1));
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	courier_open_session();
	wait_until(PG_GETARG_FLOAT8(2));
	values[0] = Float8GetDatum(epoch_seconds());
	pfree(courier_call(fn, payload, strlen(payload)));
	values[1] = Float8GetDatum(epoch_seconds());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ---------------------------------------------------------------- echo_loop */

#define HISTOGRAM_STEPS 16		/* buckets per power of two: about 4% wide */
#define HISTOGRAM_BUCKETS (40 * HISTOGRAM_STEPS)	/* up to 2^40 ns, about 18 minutes */

/* Bucket b holds latencies in [2^(b/STEPS), 2^((b+1)/STEPS)) ns; bench/run reads it back the same way. */
static int
histogram_bucket(double ns)
{
	int			b = ns < 1 ? 0 : (int) (log2(ns) * HISTOGRAM_STEPS);

	return Min(b, HISTOGRAM_BUCKETS - 1);
}

static double
cpu_seconds_since(const struct rusage *r0)
{
	struct rusage r1;

	getrusage(RUSAGE_SELF, &r1);
	return (r1.ru_utime.tv_sec - r0->ru_utime.tv_sec) + (r1.ru_stime.tv_sec - r0->ru_stime.tv_sec) +
		((r1.ru_utime.tv_usec - r0->ru_utime.tv_usec) + (r1.ru_stime.tv_usec - r0->ru_stime.tv_usec)) / 1e6;
}

Datum
courier_bench_echo_loop(PG_FUNCTION_ARGS)
{
	char	   *transport = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			size = PG_GETARG_INT32(1);
	double		start_at = PG_GETARG_FLOAT8(2);
	int			duration_ms = PG_GETARG_INT32(3);
	char	   *data = palloc(size + 1);
	int64	   *counts = palloc0(sizeof(int64) * HISTOGRAM_BUCKETS);
	Datum	   *elems = palloc(sizeof(Datum) * HISTOGRAM_BUCKETS);
	int64		calls = 0;
	struct rusage r0;
	double		t0,
				end_ns;
	Transport	t;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(data, 'y', size);
	transport_open(&t, transport, size);
	if (t.fn != NULL)
		courier_open_session();
	wait_until(start_at);
	getrusage(RUSAGE_SELF, &r0);
	t0 = now_ns();
	end_ns = t0 + duration_ms * 1e6;
	while (t0 < end_ns)
	{
		double		t1;

		transport_round_trip(&t, data, size);
		t1 = now_ns();
		counts[histogram_bucket(t1 - t0)]++;
		calls++;
		t0 = t1;
		CHECK_FOR_INTERRUPTS();
	}
	values[1] = Float8GetDatum(cpu_seconds_since(&r0));
	transport_close(&t);
	values[0] = Int64GetDatum(calls);
	for (int b = 0; b < HISTOGRAM_BUCKETS; b++)
		elems[b] = Int64GetDatum(counts[b]);
	values[2] = PointerGetDatum(construct_array(elems, HISTOGRAM_BUCKETS, INT8OID, sizeof(int64), true,
												TYPALIGN_DOUBLE));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
