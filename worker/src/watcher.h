/*
 * watcher.h — tells runtimes that a caller has gone, without their polling.
 *
 * A client that abandons a call the server holds rings the region's cancel
 * bell and wakes the cancel Waiter (Region::abandon). This one thread of the
 * worker parks on that Waiter (futex: a backend wakes it with no signal),
 * drains the bell, and runs each call's on_cancel callback. When the
 * worker stops, it runs every open call's callback once.
 */
#pragma once

#include <atomic>
#include <thread>

#include "state.h"

namespace courier::worker {

class CancelWatcher {
public:
    explicit CancelWatcher(Worker::State &worker) : w_(worker) {}
    void start();
    /* Wakes it to look again (the worker is stopping). */
    void poke();
    void quit();

private:
    void run();

    Worker::State &w_;
    std::atomic<bool> quit_{false};
    std::thread thread_;
};

}  // namespace courier::worker
