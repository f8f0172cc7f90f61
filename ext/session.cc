/*
 * session.cc — a backend's courier session and the C API.
 *
 * A backend leases one slot on its first call (while courier.enabled is on)
 * and keeps it. It gives it back:
 *   - at exit (before_shmem_exit);
 *   - after courier.enabled is turned off, at the end of that transaction
 *     (the assign hook only notes it: it must not touch shared memory);
 *   - by abandoning it when a call does not finish: an ERROR (cancel,
 *     statement_timeout, a runtime error) aborts the (sub)transaction and
 *     the abort callback abandons the slot; the worker drops the late
 *     response and returns the slot to the free list.
 *
 * ERROR and C++: ereport(ERROR) and CHECK_FOR_INTERRUPTS() longjmp. The
 * functions here keep no C++ object with a destructor on the stack across
 * them: session state is static, responses go straight into palloc'd
 * memory, and ipc calls return Status::interrupted instead of blocking
 * through an interrupt, so the caller runs CHECK_FOR_INTERRUPTS() here,
 * then resumes the same step.
 */
#include <chrono>
#include <cstring>
#include <new>

#include "courier/ipc/call.h"
#include "host.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/timeout.h"
#include "utils/wait_event.h"

}

namespace courier::ext {
namespace {

using clock_type = std::chrono::steady_clock;

enum class Stage { idle, request, response, done };

}  // namespace
}  // namespace courier::ext

struct CourierCall {
    courier::ext::Stage stage;
    char fn[courier::ipc::runtime_name_bytes + courier::ipc::max_function_name + 1];  // as the caller named it
    /* The response piece being handed out by courier_call_read(). */
    const std::byte *piece;
    std::size_t piece_left;
    bool last_piece;
};

namespace courier::ext {
namespace {

LatchWaker backend_waker;
alignas(ipc::Client) unsigned char client_storage[sizeof(ipc::Client)];
ipc::Client *client = nullptr;
CourierCall current{};
bool call_in_flight = false;
bool release_pending = false;
bool callbacks_registered = false;

/* Abandons the call in flight, if any: safe from abort and exit callbacks. */
void abandon_call() {
    if (!call_in_flight)
        return;
    call_in_flight = false;
    current.stage = Stage::idle;
    client->end(ipc::Status::abandoned);
}

void release_slot() {
    abandon_call();
    if (client != nullptr && client->is_open())
        client->close();
    release_pending = false;
}

void on_backend_exit(int, Datum) { release_slot(); }

void on_xact(XactEvent event, void *) {
    if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
        abandon_call();
    /* An error's recovery cancels every timeout before the abort, the one that would give the CPUs back too. */
    if (event == XACT_EVENT_ABORT && client != nullptr)
        client->return_to_cpus();
    if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT) && release_pending && !guc_enabled)
        release_slot();
}

void on_subxact(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
    if (event == SUBXACT_EVENT_ABORT_SUB)
        abandon_call();
}

void assign_enabled(bool newval, void *) {
    if (!newval)
        release_pending = true;  // released at the end of the transaction
}

ipc::Region &region_or_error() {
    ipc::Region *r = shared_region();
    if (r == nullptr)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("courier is not initialized in this server"),
                        errhint("Add 'courier' to shared_preload_libraries and restart the server.")));
    return *r;
}

long elapsed_ms(clock_type::time_point since) {
    return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - since).count());
}

/* Sleeps on the latch for up to ms, handling interrupts. */
void nap(long ms) {
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
}

/* A worker serves calls: one has begun its epoch and has not stopped, nor begun to stop. */
bool worker_up(ipc::Region &r) {
    return r.server_epoch() != 0 && r.stats().header().server_up.load(std::memory_order_acquire) != 0;
}

[[noreturn]] void raise_no_worker(ipc::Region &r) {
    if (r.server_epoch() == 0)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the courier worker has not started"),
                        errdetail("Waited %d ms (courier.slot_wait_timeout) for it.", guc_slot_wait_timeout_ms),
                        errhint("The server log says why: look for \"courier\" there. max_worker_processes (%d) "
                                "may be used up by other background workers: courier needs one.",
                                max_worker_processes)));
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("the courier worker stopped and has not started again"),
                    errdetail("Waited %d ms (courier.slot_wait_timeout) for it.", guc_slot_wait_timeout_ms),
                    errhint("The server log says why it stopped: look for \"courier\" there.")));
    pg_unreachable();
}

/*
 * Waits, up to courier.slot_wait_timeout, for a worker: the first, or the
 * successor of one that stopped (the postmaster starts it 1 s later). A call
 * begun with none would be failed by the successor as begun under a dead
 * server, though no server ever saw it.
 *
 * PostgreSQL 15's postmaster can sleep through that restart: it computes its
 * timeout with signals blocked, and a SIGCHLD taken on unblocking, just before
 * select(), leaves it asleep for up to a minute. Each second of waiting asks
 * it to look at its background workers (the signal a dynamic registration
 * sends), which ends such a sleep and is harmless otherwise.
 */
void wait_for_worker(ipc::Region &r) {
    if (worker_up(r))
        return;
    const auto start = clock_type::now();
    long next_nudge_ms = 1000;
    while (!worker_up(r)) {
        const long waited_ms = elapsed_ms(start);
        if (waited_ms >= guc_slot_wait_timeout_ms)
            raise_no_worker(r);
        if (waited_ms >= next_nudge_ms) {
            SendPostmasterSignal(PMSIGNAL_BACKGROUND_WORKER_CHANGE);
            next_nudge_ms += 1000;
        }
        nap(10);
    }
}

/*
 * A session that calls back to back leaves its worker thread's CPU
 * (courier/ipc/call.h); PostgreSQL's timeouts give it back its CPUs once
 * it stops calling, wherever the backend is then (idle, or running SQL),
 * and so does the abort of its transaction (on_xact), since an error
 * cancels every timeout. The handler runs in the SIGALRM handler:
 * return_to_cpus() is one system call on state the session wrote before
 * it armed the timeout.
 */
TimeoutId cpu_return_timeout;

void return_to_cpus_now() {
    if (client != nullptr)
        client->return_to_cpus();
}

void return_to_cpus_later() {
    enable_timeout_after(cpu_return_timeout, static_cast<int>(ipc::return_to_cpus_after.count()));
}

void open_session() {
    if (!guc_enabled)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("courier is disabled in this session"),
                        errhint("SET courier.enabled = on to use it.")));
    ipc::Region &r = region_or_error();
    if (client == nullptr) {
        client = new (client_storage) ipc::Client(r, backend_waker, MyProcPid, my_proc_number());
        cpu_return_timeout = RegisterTimeout(USER_TIMEOUT, return_to_cpus_now);
        client->leave_server_cpu(return_to_cpus_later);
    }
    if (!callbacks_registered) {
        before_shmem_exit(on_backend_exit, 0);
        RegisterXactCallback(on_xact, nullptr);
        RegisterSubXactCallback(on_subxact, nullptr);
        callbacks_registered = true;
    }
    release_pending = false;
    wait_for_worker(r);
    if (client->is_open())
        return;
    const auto start = clock_type::now();
    long nap_ms = 1;
    for (;;) {
        const ipc::Status s = client->open();
        if (s == ipc::Status::ok)
            break;
        if (s != ipc::Status::no_slot)
            ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                            errmsg("courier could not lease a slot: %s", ipc::describe(s))));
        if (elapsed_ms(start) >= guc_slot_wait_timeout_ms) {
            r.stats().add(ipc::GlobalCounter::slot_wait_timeouts);
            ereport(ERROR, (errcode(ERRCODE_TOO_MANY_CONNECTIONS),
                            errmsg("all %d courier slots are in use", guc_slots),
                            errdetail("Waited %d ms for a free slot (courier.slot_wait_timeout).",
                                      guc_slot_wait_timeout_ms),
                            errhint("Raise courier.slots (a restart is needed; courier-config generate sizes "
                                    "it from the expected concurrency) or make fewer sessions call courier.")));
        }
        nap(nap_ms);
        nap_ms = std::min(nap_ms * 2, 10L);
    }
    r.stats().add(ipc::GlobalCounter::slot_wait_ns,
                  static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                 clock_type::now() - start).count()));
}

ipc::WaitPolicy call_policy() {
    ipc::WaitPolicy p;
    p.spin = spin_budget();
    if (guc_call_timeout_ms > 0)
        p.deadline = clock_type::now() + std::chrono::milliseconds(guc_call_timeout_ms);
    return p;
}

/* Ends a failed call (abandoning the slot) and reports why. */
[[noreturn]] void fail_call(ipc::Status s) {
    call_in_flight = false;
    current.stage = Stage::idle;
    client->end(s);
    switch (s) {
    case ipc::Status::timeout:
        ereport(ERROR, (errcode(ERRCODE_QUERY_CANCELED),
                        errmsg("courier call to \"%s\" timed out after %d ms", current.fn, guc_call_timeout_ms),
                        errhint("courier.call_timeout limits how long a call may take.")));
        break;
    case ipc::Status::too_large:
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("courier message exceeds courier.max_message_size (%d kB)", guc_max_message_size_kb),
                        errhint("Raise courier.max_message_size (a restart is needed) or send less.")));
        break;
    case ipc::Status::server_restarted:
        ereport(ERROR, (errcode(ERRCODE_CONNECTION_FAILURE),
                        errmsg("the courier worker stopped or restarted during the call to \"%s\"", current.fn),
                        errhint("The call may be retried.")));
        break;
    case ipc::Status::corrupt:
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("courier shared memory of this session's slot holds invalid data")));
        break;
    default:
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                        errmsg("courier call to \"%s\" failed: %s", current.fn, ipc::describe(s))));
    }
    pg_unreachable();
}

/* Runs step() until it is not interrupted; fails the call on error. */
template <typename Step>
void pump(Step &&step) {
    for (;;) {
        const ipc::Status s = step();
        if (s == ipc::Status::ok)
            return;
        if (s != ipc::Status::interrupted)
            fail_call(s);
        CHECK_FOR_INTERRUPTS();  // an ERROR here aborts: on_xact abandons the call
    }
}

CourierCall *check_call(CourierCall *call, Stage expected, const char *what) {
    if (call != &current || !call_in_flight || current.stage != expected)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s: no courier call in the right state", what),
                        errhint("Use courier_call_begin, _write, _end_request, _read, _finish in that order.")));
    return call;
}

[[noreturn]] void raise_aborted_response();

/* Waits for the response's next frame and makes it the current piece. */
void read_piece() {
    std::span<const std::byte> chunk;
    bool last = false;
    ipc::Status s;
    pump([&] {
        s = client->response().next(&chunk, &last);
        return s == ipc::Status::aborted ? ipc::Status::ok : s;
    });
    if (s == ipc::Status::aborted)
        raise_aborted_response();
    current.piece = chunk.data();
    current.piece_left = chunk.size();
    current.last_piece = last;
}

/* Appends a runtime's message; a NUL would cut the ERROR's text short, so it shows as \0. */
void append_message(StringInfo msg, const std::byte *bytes, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        if (bytes[i] == std::byte{0})
            appendStringInfoString(msg, "\\0");
        else
            appendStringInfoChar(msg, static_cast<char>(bytes[i]));
    }
}

/*
 * Ends the call and raises its error message (in msg): the runtime's, or
 * the worker's own (it is stopping, out of memory, the runtime did not
 * load), which the operator rather than the runtime's author acts on.
 */
[[noreturn]] void raise_message(StringInfo msg) {
    const bool from_worker = client->response().from_host();
    call_in_flight = false;
    current.stage = Stage::idle;
    client->end(ipc::Status::ok);
    if (from_worker)
        ereport(ERROR, (errcode(ERRCODE_SYSTEM_ERROR),
                        errmsg("courier worker failed the call to \"%s\": %s", current.fn, msg->data),
                        errhint("The server log has more; courier.stats() shows the worker's state.")));
    ereport(ERROR, (errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
                    errmsg("courier runtime error in \"%s\": %s", current.fn, msg->data)));
    pg_unreachable();
}

/* The error response's text, as an ERROR. */
[[noreturn]] void raise_runtime_error() {
    StringInfoData msg;
    initStringInfo(&msg);
    for (;;) {
        append_message(&msg, current.piece, current.piece_left);
        if (current.last_piece)
            break;
        read_piece();
    }
    client->response().release();
    raise_message(&msg);
}

/*
 * The worker gave up on the response part way (too large, or the runtime
 * failed after writing some): the error message that follows says why.
 * It is read in pieces small enough to leave no C++ object on the stack.
 */
[[noreturn]] void raise_aborted_response() {
    StringInfoData msg;
    initStringInfo(&msg);
    ipc::MessageReader &reader = client->response();
    reader.release();
    reader = ipc::MessageReader(reader.endpoint());
    for (bool last = false; !last;) {
        std::span<const std::byte> chunk;
        pump([&] { return reader.next(&chunk, &last); });
        if (reader.kind() != ipc::FrameKind::error)
            fail_call(ipc::Status::corrupt);
        append_message(&msg, chunk.data(), chunk.size());
    }
    reader.release();
    raise_message(&msg);
}

/* Makes the next response piece current; false at the end. */
bool next_piece() {
    if (current.last_piece)
        return false;
    read_piece();
    if (client->response().kind() == ipc::FrameKind::error)
        raise_runtime_error();
    return true;
}

}  // namespace
}  // namespace courier::ext

using namespace courier;
using namespace courier::ext;

void courier::ext::define_enabled_setting() {
    DefineCustomBoolVariable("courier.enabled", "Whether this session may use courier.",
                             "Turning it off gives the session's slot back at the end of the transaction.",
                             &guc_enabled, true, PGC_USERSET, 0, nullptr, assign_enabled, nullptr);
}

extern "C" void courier_open_session(void) {
    pg::door([] { open_session(); });
}

namespace courier::ext {
namespace {

/*
 * The runtime a call goes to: `runtime` if given, else the prefix of
 * "runtime.fn", else the first of courier.runtimes. Sets *fn to the name
 * the runtime sees.
 */
std::uint32_t resolve_runtime(const char *runtime, const char **fn) {
    std::string_view name = runtime != nullptr ? std::string_view(runtime) : std::string_view();
    if (runtime == nullptr) {
        const char *dot = *fn != nullptr ? std::strchr(*fn, '.') : nullptr;
        if (dot == nullptr)
            return 0;
        name = std::string_view(*fn, static_cast<std::size_t>(dot - *fn));
        *fn = dot + 1;
    }
    const int index = runtime_index(name);
    if (index < 0)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
                        errmsg("courier runtime \"%.*s\" is not configured", static_cast<int>(name.size()),
                               name.data()),
                        errdetail("courier.runtimes lists: %s.", runtime_names()),
                        errhint("Call a listed runtime as 'runtime.function', or add it to courier.runtimes "
                                "and restart the server.")));
    return static_cast<std::uint32_t>(index);
}

}  // namespace
}  // namespace courier::ext

extern "C" CourierCall *courier_call_begin_runtime(const char *runtime, const char *fn, int64_t total_len) {
    return pg::door([&] {
        open_session();
        abandon_call();  // one left by an ERROR the callbacks did not see
        const char *shown = fn;
        const std::uint32_t index = resolve_runtime(runtime, &fn);
        const std::size_t fn_len = fn != nullptr ? strnlen(fn, ipc::max_function_name + 1) : 0;
        if (fn_len == 0 || fn_len > ipc::max_function_name)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("courier function name must be 1 to %zu bytes long", ipc::max_function_name)));
        if (runtime != nullptr)
            snprintf(current.fn, sizeof current.fn, "%s.%s", runtime, fn);
        else
            snprintf(current.fn, sizeof current.fn, "%s", shown);
        current.stage = Stage::request;
        current.piece = nullptr;
        current.piece_left = 0;
        current.last_piece = false;
        call_in_flight = true;
        const std::uint64_t total = total_len < 0 ? ipc::unknown_length : static_cast<std::uint64_t>(total_len);
        const ipc::WaitPolicy policy = call_policy();
        pump([&] { return client->start(index, std::string_view(fn, fn_len), total, policy); });
        return &current;
    });
}

extern "C" CourierCall *courier_call_begin(const char *fn, int64_t total_len) {
    return pg::door([&] {
        return courier_call_begin_runtime(nullptr, fn, total_len);
    });
}

extern "C" void courier_call_write(CourierCall *call, const void *data, size_t len) {
    return pg::door([&] {
        check_call(call, Stage::request, "courier_call_write");
        ipc::MessageWriter &w = client->request();
        const auto *bytes = static_cast<const std::byte *>(data);
        std::size_t done = 0;
        pump([&] {
            const std::uint64_t before = w.written();
            const ipc::Status s = w.write(std::span<const std::byte>(bytes + done, len - done));
            done += w.written() - before;
            return s;
        });
    });
}

extern "C" void courier_call_end_request(CourierCall *call) {
    return pg::door([&] {
        check_call(call, Stage::request, "courier_call_end_request");
        pump([&] { return client->finish_request(); });
        current.stage = Stage::response;
    });
}

extern "C" size_t courier_call_read(CourierCall *call, void *buf, size_t cap) {
    return pg::door([&] {
        check_call(call, Stage::response, "courier_call_read");
        std::size_t copied = 0;
        auto *out = static_cast<std::byte *>(buf);
        while (copied < cap) {
            if (current.piece_left == 0) {
                if (!next_piece())
                    break;
                continue;  // an empty piece: look at the next one
            }
            const std::size_t k = std::min(cap - copied, current.piece_left);
            std::memcpy(out + copied, current.piece, k);
            copied += k;
            current.piece += k;
            current.piece_left -= k;
        }
        return copied;
    });
}

extern "C" void courier_call_finish(CourierCall *call) {
    return pg::door([&] {
        check_call(call, Stage::response, "courier_call_finish");
        ipc::MessageReader &reader = client->response();
        if (!reader.finished())
            pump([&] { return reader.skip_rest(); });
        reader.release();
        call_in_flight = false;
        current.stage = Stage::idle;
        client->end(ipc::Status::ok);
    });
}

extern "C" struct varlena *courier_call(const char *fn, const void *data, size_t len) {
    return pg::door([&] {
        return courier_call_runtime(nullptr, fn, data, len);
    });
}

extern "C" struct varlena *courier_call_runtime(const char *runtime, const char *fn, const void *data, size_t len) {
    return pg::door([&] {
        CourierCall *call = courier_call_begin_runtime(runtime, fn, static_cast<int64_t>(len));
        courier_call_write(call, data, len);
        courier_call_end_request(call);
        /* Size the result from the first frame when the worker declared it. */
        if (!next_piece())
            ereport(ERROR, (errmsg("courier response ended early")));
        const std::uint64_t total = client->response().total();
        std::size_t cap = total != ipc::unknown_length ? static_cast<std::size_t>(total) : 1024;
        auto *result = static_cast<struct varlena *>(palloc(VARHDRSZ + cap));
        std::size_t used = 0;
        for (;;) {
            if (used == cap) {  // grow, but never past the largest message a response may be
                cap = std::min<std::size_t>(cap * 2, static_cast<std::size_t>(guc_max_message_size_kb) * 1024);
                result = static_cast<struct varlena *>(repalloc(result, VARHDRSZ + cap));
            }
            const std::size_t n = courier_call_read(call, VARDATA(result) + used, cap - used);
            used += n;
            if (n == 0 || (current.piece_left == 0 && current.last_piece))
                break;
        }
        courier_call_finish(call);
        SET_VARSIZE(result, VARHDRSZ + used);
        return result;
    });
}

extern "C" const CourierApi *courier_api_v2(void) {
    static const CourierApi api = {COURIER_API_VERSION,      courier_open_session, courier_call_runtime,
                                   courier_call_begin_runtime, courier_call_write,   courier_call_end_request,
                                   courier_call_read,          courier_call_finish};
    return &api;
}
