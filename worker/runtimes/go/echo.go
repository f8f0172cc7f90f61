// Command courier_go_echo is a courier runtime in Go (ABI v2, driven
// mode), built with -buildmode=c-shared: the FerretDB case. The worker
// loads it with dlopen after fork; goroutines take calls with next_call
// and answer them, so no call ever enters Go from a thread Go did not
// create (only a rare cancel callback does).
//
//	echo    returns the request
//	sleep   answers after the request's milliseconds, from a timer (no
//	        goroutine or thread waits per call); fails at once on cancel
//	sha256  the SHA-256 of the request (32 bytes)
//	fail    fails the call with the request as its message
//	panic   panics; the panic is recovered into a call error
//
// Signals: courier loads the library and calls init with every signal
// blocked, so Go's threads never take PostgreSQL's SIGTERM, SIGHUP or
// SIGUSR1. SIGURG is the signal PostgreSQL's latches use, and Go's
// asynchronous preemption unblocks it on every Go thread and ignores one
// it did not send: build with
//
//	go build -buildmode=c-shared -ldflags=-X=runtime.godebugDefault=asyncpreemptoff=1
//
// (what a //go:debug line would set, if it accepted this setting; the
// environment's GODEBUG cannot, since Go reads the environment the process
// started with). Goroutines are then preempted at function calls. The
// worker checks every new thread's signal mask and warns if one takes a
// PostgreSQL signal. Do not call os/signal.Notify here.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#include <stdlib.h>
#include "courier/runtime.h"

int next_call(uint32_t rt, courier_call_info *out, int64_t ms);
int respond_call(courier_call_id id, const void *data, size_t len);
int fail_call(courier_call_id id, const char *msg, size_t len);
int read_call(courier_call_id id, void *buf, size_t cap, size_t *n);
int watch_call(courier_call_id id);
*/
import "C"

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

var (
	takers  sync.WaitGroup
	sleeps  sync.Map // courier_call_id → *sleep
	scratch = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}
)

type call struct {
	id  C.courier_call_id
	fn  string
	req []byte
}

//export goInit
func goInit(runtime C.uint32_t, threads C.int) *C.char {
	for i := 0; i < int(threads); i++ {
		takers.Add(1)
		go take(runtime)
	}
	return nil
}

//export goShutdown
func goShutdown() { takers.Wait() } // next_call has told every taker that the worker stops

// take runs on a goroutine: the cgo call blocks in courier's dispatcher.
func take(runtime C.uint32_t) {
	defer takers.Done()
	var info C.courier_call_info
	for {
		switch C.next_call(runtime, &info, -1) {
		case C.COURIER_STOPPING:
			return
		case C.COURIER_OK:
			if c, ok := receive(&info); ok {
				serve(c)
			}
		}
	}
}

// receive reads the call: its name and a request that came whole are
// borrowed in place in shared memory (valid until the call ends; no copy
// on the common path), a longer request is read into Go memory.
func receive(info *C.courier_call_info) (call, bool) {
	c := call{id: info.id, fn: borrowString(info.fn)}
	c.req = unsafe.Slice((*byte)(info.request), int(info.request_len))
	if info.request_complete != 0 {
		return c, true
	}
	c.req = append([]byte(nil), c.req...)
	buf := scratch.Get().(*[]byte)
	defer scratch.Put(buf)
	for {
		var n C.size_t
		if C.read_call(c.id, unsafe.Pointer(&(*buf)[0]), C.size_t(len(*buf)), &n) != C.COURIER_OK {
			return c, false // the caller left: the call has ended
		}
		if n == 0 {
			return c, true
		}
		c.req = append(c.req, (*buf)[:n]...)
	}
}

// borrowString views a C string without copying it.
func borrowString(p *C.char) string {
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return unsafe.String((*byte)(unsafe.Pointer(p)), n)
}

func serve(c call) {
	defer func() {
		if r := recover(); r != nil {
			fail(c.id, fmt.Sprint("panic: ", r))
		}
	}()
	switch c.fn {
	case "echo":
		respond(c.id, c.req)
	case "sha256":
		sum := sha256.Sum256(c.req)
		respond(c.id, sum[:])
	case "sleep":
		startSleep(c)
	case "fail":
		fail(c.id, string(c.req))
	case "panic":
		panic(string(c.req))
	default:
		fail(c.id, fmt.Sprintf("unknown function %q (courier_go_echo offers echo, sleep, sha256, fail, panic)", c.fn))
	}
}

func respond(id C.courier_call_id, b []byte) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	C.respond_call(id, p, C.size_t(len(b)))
}

func fail(id C.courier_call_id, msg string) {
	cs := C.CString(msg)
	defer C.free(unsafe.Pointer(cs))
	C.fail_call(id, cs, C.size_t(len(msg)))
}

type sleep struct {
	once  sync.Once
	timer *time.Timer
}

// settle answers a sleep once: at its deadline, or with an error when its caller left.
func (s *sleep) settle(c call, cancelled bool) {
	s.once.Do(func() {
		sleeps.Delete(c.id)
		if cancelled {
			s.timer.Stop()
			fail(c.id, "cancelled")
		} else {
			respond(c.id, c.req)
		}
	})
}

func startSleep(c call) {
	ms, err := strconv.Atoi(string(c.req))
	if err != nil || ms < 0 {
		fail(c.id, fmt.Sprintf("sleep expects a non-negative number of milliseconds, got %q", c.req))
		return
	}
	c = call{id: c.id, req: append([]byte(nil), c.req...)} // outlives the call's shared memory
	s := &sleep{}
	s.timer = time.AfterFunc(time.Duration(ms)*time.Millisecond, func() { s.settle(c, false) })
	sleeps.Store(c.id, s) // after the timer exists: a cancel may come from now on
	C.watch_call(c.id)    // may run goCancel at once if the caller already left
}

//export goCancel
func goCancel(id C.courier_call_id) {
	if v, ok := sleeps.Load(id); ok {
		s := v.(*sleep)
		go s.settle(call{id: id}, true) // not on courier's watcher thread
	}
}

func main() {}
