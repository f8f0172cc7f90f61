/*
 * call.h — a request and its response, from either side of a slot.
 *
 * Client (a backend, or a test process) holds one leased slot for its
 * session and makes calls on it one at a time:
 *
 *   start: wait until the previous call's server has let go of the slot,
 *   set held_by_server → request frames; the first one rings the
 *   runtime's doorbell, unless a spinning thread of that runtime watches
 *   the slot (region.h; setting the bit says so), and wakes a thread
 *   asleep on the slot for it → response frames → done; the server clears
 *   its bit after its last frame and then wakes the client if it sleeps.
 *
 * A request is "fn\0payload". The response is one message of kind response
 * (the result) or error (a message text). A response the server gave up
 * on (aborted: too large, or the runtime failed after writing part of it)
 * is followed by an error message that says why. Any failure of a call
 * other than an error response leaves the slot in an unknown state, so the
 * client abandons it and leases a fresh one on the next call.
 *
 * Turns: a session whose calls follow each other with no pause of a turn
 * (session_turn) offers its CPU once a turn (a yield, which returns at once
 * when nothing else is runnable there). With owed wakes (region.h) the
 * sessions that end calls wake the sleeping ones, which then wait in the
 * run queue of a session that, answered within its spin, would call on
 * until the kernel's slice ran out: at 64 sessions on 2 vCPUs one session
 * made 4-6.6 times another's calls, and with the turn 1.24-1.41 times,
 * and the calls/s rose from 3.0 to 5.6-5.9 times those without owed wakes
 * (bench/README.md). A turn of 100 µs cost a sixth of that, 400 µs a
 * fifth; without owed wakes the turn alone helped 4 sessions (2.3 times)
 * and cost 64 sessions 15 %. Only a run of calls counts: a yield every
 * turn whatever the pauses between calls made 4 and 16 sessions 0.6 times
 * as fast.
 *
 * Leaving the worker's CPU: a session that calls back to back (its calls
 * end within a turn of each other) and waits on the worker more than it
 * works takes the CPU its slot's worker thread last ran on out of its own
 * affinity mask. It looks again every cpu_check_period, follows that
 * thread when it moves, goes back to its whole mask at a look that finds
 * it working more than waiting, and gets its whole mask back once it stops
 * (return_to_cpus(), which the host runs return_to_cpus_after its last
 * look). "Waits more than it works": in at least half of its calls since
 * the last look, the time since the previous call ended was shorter than
 * the call took, times the other CPUs of its mask (note_gap).
 *
 * When sessions outnumber the CPUs, the kernel shares each CPU among the
 * runnable threads, the worker's too, and the sessions that spin or wake
 * on the worker thread's CPU took about half its time: it made 0.6M
 * calls/s for 4 sessions and 0.35-0.48M for 16 on 2 vCPUs. With the
 * sessions off its CPU it keeps that CPU, as when an operator sets
 * courier.worker_cpus, but only while they call and with nothing else
 * PostgreSQL runs kept off: 1.1-1.2M calls/s for 4 and 16 sessions
 * (bench/README.md). The second condition is for sessions that are bound
 * by their own CPUs: pgbench's 8 sessions (scripts/demo), each call a
 * statement from a client over a socket, made 0.26M calls in 10 s instead
 * of 0.46M when they left the worker's CPU too, crowding one vCPU with
 * pgbench while the worker's idled; they do not leave now. Only the
 * session's own thread is moved, within the mask it had: one allowed a
 * single CPU, or whose worker thread runs where it may not, stays where it
 * is. The host turns this on (leave_server_cpu()): a test process keeps
 * its CPUs.
 *
 * The kept call (region.h): an answer whose last frame says the serving
 * thread kept the call lets the session's next call, for the same runtime
 * and of one frame (its name and payload within the ring's max_chunk()),
 * skip begin_call and the bell: start() writes the request straight into
 * the ring. If the keeper lets go first, the reader begins the call then
 * (Endpoint::begin_after_let_go). Any other next call recalls the kept
 * one, and begins as usual once the keeper has let go.
 *
 * ServerCall is the serving side of one call, from a slot accepted off the
 * doorbell (Dispatcher). It reads the request, writes the response, and
 * lets go (finish), or keeps the call if offer_keep() was called and an
 * answer went out whole: the thread then hands the call to
 * Dispatcher::next, which lets go of it unless the next request comes. If the client abandons meanwhile, every wait returns
 * abandoned, the response is dropped, and finish() returns the slot. The
 * server must read the whole request before it answers: the client writes
 * all of it before it reads.
 */
#pragma once

#include "courier/ipc/before_postgres.h"  // checked on every inclusion

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "courier/ipc/channel.h"
#include "courier/ipc/dispatch.h"
#include "courier/ipc/wait.h"

namespace courier::ipc {

/* How long a session calls back to back before it offers its CPU to others (see the top). */
inline constexpr std::chrono::microseconds session_turn{200};
/* How often a session that calls back to back looks where its worker thread runs, and how long after its last look it gets its CPUs back (see the top). */
inline constexpr std::chrono::milliseconds cpu_check_period{10};
inline constexpr std::chrono::milliseconds return_to_cpus_after{50};

class Client {
public:
    Client(Region &region, Waker &waker, std::int32_t pid, std::int32_t latch_proc = -1)
        : region_(&region), waker_(&waker), pid_(pid), latch_proc_(latch_proc) {}
    /* Its writer and reader refer to its Endpoint. */
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    /* Leases a slot (no_slot when none is free). */
    Status open();
    bool is_open() const { return handle_.valid(); }
    const SlotHandle &handle() const { return handle_; }
    /* Gives the slot back; abandon() if a call may be in flight. */
    void close();
    void abandon();

    /*
     * Streaming: start, write the request, finish it, then read. start()
     * may return interrupted (or timeout) while it waits for the slot's
     * previous call to end; nothing has changed then, and it may be called
     * again.
     */
    Status start(std::uint32_t runtime, std::string_view fn, std::uint64_t payload_total,
                 const WaitPolicy &policy);
    MessageWriter &request() { return writer_; }
    Status finish_request();
    MessageReader &response() { return reader_; }
    /* After an aborted response: the error message that says why, into *why. */
    Status read_abort_reason(std::vector<std::byte> *why);
    /* After the response is read, or on failure (abandons). Records the call. */
    void end(Status outcome);

    /*
     * Whole call. On ok, *kind is response or error and *out its bytes.
     * On any other status the slot has been abandoned.
     */
    Status call(std::uint32_t runtime, std::string_view fn, std::span<const std::byte> payload,
                std::vector<std::byte> *out, FrameKind *kind, const WaitPolicy &policy);

    /*
     * Lets this session leave its worker thread's CPU while it calls back
     * to back (see the top). `away` runs after every look that leaves the
     * session away, at most once per cpu_check_period: the host then makes
     * sure return_to_cpus() runs return_to_cpus_after later unless `away`
     * runs again.
     */
    void leave_server_cpu(void (*away)()) { away_ = away; }
    /* Puts this thread back on the CPUs it had when it left one; safe in a signal handler. */
    void return_to_cpus();
    /* The CPU this session has left, or -1. */
    int left_cpu() const { return left_cpu_.load(std::memory_order_relaxed); }

private:
    bool write_to_keeper(std::uint32_t runtime, std::string_view fn, std::uint64_t payload_total);
    Status write_name(std::string_view fn, std::uint64_t payload_total);
    void take_turns(std::uint64_t now, SideCounters *counters);
    void look_for_server_cpu(std::uint64_t now, SideCounters *counters);
    void note_gap(std::uint64_t gap_ns, std::uint64_t took_ns);

    Region *region_;
    Waker *waker_;
    std::int32_t pid_;
    std::int32_t latch_proc_;
    SlotHandle handle_{};
    Endpoint ep_{};
    MessageWriter writer_;
    MessageReader reader_;
    std::uint32_t runtime_ = 0;
    std::int32_t kept_runtime_ = -1;  // the last answer said kept: its runtime (see the top)
    bool kept_phase_ = false;         // and the keep's phase (region.h)
    bool attempted_ = false;  // start() was entered: end() records the call
    std::uint64_t started_ns_ = 0;
    std::uint64_t last_end_ns_ = 0;      // when the last call ended
    std::uint64_t turn_started_ns_ = 0;  // when this run of calls began, or this session last yielded
    void (*away_)() = nullptr;             // set: this session may leave its worker thread's CPU
    std::uint64_t next_look_ns_ = 0;       // when it next looks where that thread runs
    std::uint64_t calls_since_look_ = 0;   // calls it ended since its last look
    std::uint64_t worker_bound_calls_ = 0; // of those, the ones that were the worker's (note_gap)
    unsigned own_cpu_count_ = 0;           // CPUs in own_cpus_; 0 until its first look
    CpuMask own_cpus_;                     // its mask before it left a CPU; read only while it has not
    std::atomic<int> left_cpu_{-1};        // the CPU it has left, -1: none
    std::atomic<bool> looking_{false};     // a look is under way: return_to_cpus() leaves it be
};

class ServerCall {
public:
    /* `stopping`, if given, ends every wait of this call with Status::stopping. */
    ServerCall(Region &region, const Accepted &call, Waker &waker, const WaitPolicy &policy,
               const std::atomic<bool> *stopping = nullptr);
    /* Its reader, and the writers respond() returns, refer to its Endpoint. */
    ServerCall(const ServerCall &) = delete;
    ServerCall &operator=(const ServerCall &) = delete;

    /* Reads the function name (everything up to the first NUL) into name; allocates nothing. */
    Status read_function(std::span<char, max_function_name + 1> name, std::size_t *length);
    /* The payload bytes that came in the name's frame (held until read on). */
    std::span<const std::byte> first_piece() const { return pending_; }
    /* Then the payload, streamed or whole. */
    MessageReader &request() { return reader_; }
    Status read_payload(std::vector<std::byte> *out);
    /* Reads and drops what is left of the request. */
    Status drain_request();

    MessageWriter respond(FrameKind kind, std::uint64_t total);
    Status respond_all(FrameKind kind, std::span<const std::byte> bytes);
    /* An error message; from_host: the host's own (out of memory, shutting down), not the runtime's. */
    Status respond_error(std::string_view message, bool from_host = false);

    /*
     * Before the answer: the thread will spin for the session's next call
     * after this one (see the top). Its answer's last frame says so.
     */
    void offer_keep() { ep_.keep_offered = true; }
    /*
     * Lets go of the slot, then wakes the client; the slot returns to the
     * free list if abandoned. After offer_keep() and a whole answer, keeps
     * the call instead (kept()), and only wakes the client.
     */
    void finish();
    bool kept() const { return kept_; }
    const Endpoint &endpoint() const { return ep_; }

private:
    Endpoint ep_{};
    MessageReader reader_;
    std::span<const std::byte> pending_;  // payload in the held first frame, after the name
    bool finished_ = false;
    bool kept_ = false;
};

}  // namespace courier::ipc
