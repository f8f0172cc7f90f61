/*
 * calls.h — the calls a runtime holds open, and the host functions on them.
 *
 * One entry per slot: a slot carries at most one call at a time on the
 * server side (held_by_server is exclusive), so the table never grows and
 * open calls are bounded by courier.slots. A call id is
 * (serial << 16) | slot, where serial counts the calls the entry has held:
 * an id of an ended call no longer matches, so it is refused (ENDED)
 * without ever touching the slot's next call.
 *
 * Each entry has a mutex: any thread may work on a call, one at a time.
 * The mutex is held across a write that waits for room in the ring; such
 * a wait ends when the caller reads, abandons (Region::abandon wakes it)
 * or the worker stops (wake_servers). cancelled() takes no lock.
 *
 * Threads of entry: open() on the thread that accepted the call (a pool
 * thread, or a runtime's thread in next_call); write/finish/fail/read/
 * on_cancel on any thread; fire_cancel() on the cancel watcher;
 * fail_open() on the main thread at shutdown.
 *
 * The request's first piece stays in place in the ring (the frame is held)
 * until the runtime reads on, or the call ends: no copy for the common
 * case of a request that fits one frame.
 */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>

#include "courier/ipc/call.h"
#include "courier/runtime.h"

namespace courier::worker {

class CallTable {
public:
    CallTable(ipc::Region &region, ipc::Waker &waker, const std::atomic<bool> &stopping);
    ~CallTable();

    /*
     * Opens an accepted call for `runtime`: reads its function name and
     * first piece into *info. ok, or why the call does not go to the
     * runtime (its caller gave up while it waited, a bad request); the
     * call has been ended then. Allocates nothing, so it cannot throw.
     */
    ipc::Status open(std::uint32_t runtime, const ipc::Accepted &accepted, const ipc::WaitPolicy &policy,
                     courier_call_info *info);

    int write(courier_call_id id, const void *data, std::size_t len);
    /*
     * kept non-null: the calling thread goes on to spin for its runtime's
     * next call (ipc::Dispatcher::next), so it offers to keep this one
     * (ipc/region.h); *kept says whether it did, and then that thread must
     * hand the call to next() as kept: nobody else will let go of it.
     */
    int finish(courier_call_id id, bool *kept = nullptr);
    /* from_host: the worker's own error (it is stopping, out of memory...), not the runtime's. */
    int fail(courier_call_id id, std::string_view message, bool from_host = false);
    int read(courier_call_id id, void *buf, std::size_t cap, std::size_t *n);
    int cancelled(courier_call_id id) const;
    int on_cancel(courier_call_id id, courier_cancel_fn fn, void *arg);

    /* The call on `slot` lost its caller (or the worker stops): run its callback once. */
    void fire_cancel(std::uint32_t slot);
    /* Ends every open call of `runtime` with an error; returns how many. */
    std::size_t fail_open(std::uint32_t runtime, std::string_view why);
    std::size_t open_calls(std::uint32_t runtime) const;

    struct Entry;

private:
    /* Runs fn(entry) with the entry of the open call `id` locked; else why not. */
    template <typename Fn>
    int with_call(courier_call_id id, Fn &&fn);
    Entry *entry(courier_call_id id) const;
    bool is_current(const Entry &e, courier_call_id id, int *rc) const;
    bool end_locked(Entry &e);

    ipc::Region &region_;
    ipc::Waker &waker_;
    const std::atomic<bool> &stopping_;
    std::unique_ptr<Entry[]> entries_;
};

}  // namespace courier::worker
