/*
 * slots.pml — the slot protocol of ipc/, checked exhaustively by spin.
 *
 * What is modelled, at the grain of one atomic operation per step:
 *
 *   FreeList::pop/push      the free list, each one atomic step (see push_free)
 *   Region::lease/release/abandon/begin_call/accept/finish_serving/
 *     begin_server_epoch    the ownership word's three bits and epochs
 *   Doorbell + notify_idle + Dispatcher::next/claim/spin_for_bell
 *                           idle serving threads: `sleeping` counts the
 *                           parked ones, `spinning` announces the spinner
 *   wait_until + notify     a client's spin / prepare / announce /
 *                           re-check / park, and the elided wakeup
 *   MessageReader::wait_frame, ServerCall::finish
 *                           the response, its last look, let go then wake
 *   Region::wake_or_owe/pay_owed_wakes, the bounded park
 *                           owed wakes and who pays them (see below)
 *
 * Who runs: NC clients (backends) of CALLS calls each, a serving process
 * of NT threads, and a restarter that may kill that process at any step
 * and start a new one (begin_server_epoch, then NT new threads). A client
 * may abandon (cancel, timeout, exit) at every point where it waits.
 *
 * Abstractions: a request and a response are one frame each, tagged with
 * the generation of the lease (the ring's bytes are not modelled: a frame
 * is a bit and a generation); futex and latch wakes are the same thing
 * (a wake that lands between prepare and park makes park return, a wake
 * of a Waiter many threads sleep on wakes one of them); a spin is any
 * number of looks, which nondeterminism covers with one look or none.
 * The server's wait for the request is modelled with the slot's server
 * Waiter (a thread may take a call before its request is written); its
 * wait on a full ring is not. The epoch's scan is one step (see
 * Restarter). These keep the restart configuration at 96 M states; it has
 * one serving thread per process, the others two.
 *
 * -DLONG_CALL makes client 0's calls end only once client 1 is done: with
 * two threads, client 1's calls must then be taken by the idle thread, so
 * a wakeup lost to it is a call that never ends.
 *
 * The claims: each is a flag named after it, set and asserted false where it
 * would break (so a violation reads "assertion violated !(lost_wakeup)"),
 * all checked in one exhaustive run per configuration (model/check):
 *   no_double_lease      a slot is never leased by two clients at once
 *   never_free_in_use    a slot is never on the free list while its client
 *                        holds it or a serving thread may still write to it
 *   generation_fresh     a lease never reuses a generation of its slot
 *   no_lost_wakeup       when everything is quiet, no call waits in the
 *                        doorbell while a live thread is idle, and no
 *                        client sleeps on a response that is there
 *   every_call_ends      when everything is quiet, every client is done
 *                        (each call got its response or failed cleanly)
 *   no_double_serve      no two live threads serve one slot at once
 *
 * Mutations, each of which model/check expects to fail no_lost_wakeup:
 *   -DSINGLE_FLAG        the dispatcher before issue 10: one `sleeping` flag
 *                        for all idle threads, set by the one that parks and
 *                        cleared by the one that wakes
 *   -DKEEP_DEAD_SPINNER  begin_server_epoch without resetting the runtime's
 *                        DispatchControl: a thread of the dead process that
 *                        was spinning leaves `spinning` set, and every later
 *                        ring is elided (found by this model)
 *   -DWAKE_ONLY_CLEARED  begin_server_epoch waking only the clients whose
 *                        call it cleared: a server that let go and died
 *                        before its wake leaves its client asleep (found by
 *                        this model)
 *   -DNO_FIRST_NOTIFY    the request's first frame rings the bell and does
 *                        not notify the slot's server Waiter: a bit a dead
 *                        server left in the bell makes a new thread take
 *                        the slot's next call before its request, and park
 *                        for it (found by this model, once it modelled that
 *                        wait; Region::ring_doorbell)
 *
 * -DWATCH: the watched slot (issue 12). A serving thread that becomes the
 * bell's spinner watches the slot it served last, if that slot's session
 * is between calls: one CAS turns its state word from exactly
 * held_by_client into that plus watched_by_server (WS). The session's next
 * begin_call (fetch_or of held_by_server) sees WS and does not ring the
 * doorbell: that saves the two transfers of the bell's line a call. The
 * watcher resolves the watch, before it does anything else, in one RMW on
 * the state word: it takes the call begun under WS (accepts it, as a claim
 * would), or it gives up (the bell rang, the spin ended) by clearing WS,
 * and if a call began meanwhile that RMW sees it and the watcher takes it.
 * No Dekker pair: the session's fetch_or and the watcher's RMW are on one
 * word. A watched call may be taken before its request is written, so
 * the request notifies the slot's server Waiter (NO_FIRST_NOTIFY). A
 * watcher that dies leaves WS set: begin_server_epoch clears it and rings
 * the bell for a call of the new epoch begun under it; the scan is one
 * step per slot here, so that a session can read the new epoch and see a
 * dead watcher's WS before the scan reaches its slot. WS counts in
 * "whoever makes the word zero frees the slot". Not modelled: a session
 * that calls another runtime than the watcher's (the session rings unless
 * the runtime the watcher wrote is its own; the watcher takes only calls
 * for its runtime), and the cancel bell (abandon's wake is modelled).
 * Configurations: dispatch and abandon with WATCH, and restart with one
 * session of two calls (with two sessions of one call none begins a call
 * under a dead watcher's WS, and two of two is past what CI can run).
 * Mutations:
 *   -DGIVE_UP_DROPS        the watcher gives up without taking a call that
 *                          began under WS: nobody takes it (call_hung)
 *   -DNO_FIRST_NOTIFY      (above) with a watcher that took the call before
 *                          its request (lost_wakeup)
 *   -DSCAN_FORGETS_WATCHED begin_server_epoch clears a dead watcher's WS
 *                          but does not ring for the call begun under it
 *                          (call_hung)
 *
 * Owed wakes (issue 12, Region::wake_or_owe, region.h). A serving thread
 * that lets go of a call whose client sleeps does not wake it while calls
 * wait in the bell: it sets the slot's bit in the region's owed-wakes
 * bitmap and goes on to the next call. A session that ends a call pays up
 * to two owed wakes (NS is 2: all of them here), and a thread that finds
 * the bell empty pays them all before it spins or parks. A wake can still
 * be left owed while every thread that could pay it is inside a long
 * call, so a client's park is bounded (the backstop): it looks again after
 * a while, backing off. The backstop is modelled as a park that ends on
 * `timeout` (when nothing else in the system can move): a backstop that
 * fires earlier is a spurious wakeup, which the wait loop tolerates, and
 * firing it only at quiescence keeps every quiescent state in view of the
 * Monitor. no_lost_wakeup then reads: a client asleep on a response that
 * is there is lost unless its wake is owed, the backstop is there, and a
 * live thread is inside a call (a wake is left to the backstop only while
 * the worker is busy). -DHOLD (one thread): client 0 begins its call only
 * once client 1's has been taken, and that call ends only once client 1
 * is done, the case of a callback that waits for what the owed session
 * does next: the owing thread takes client 0's call and holds it, so only
 * the backstop gets client 1 its answer. Mutations:
 *   -DNO_BACKSTOP   a client parks until woken (lost_wakeup in HOLD)
 *   -DNO_DRAIN      a thread that finds the bell empty parks without paying
 *                   (lost_wakeup with abandons: a call rung and abandoned
 *                   leaves a bit that makes the thread owe, and nobody
 *                   else pays while every thread is idle)
 *
 * -DKEEP: the kept call (issue 12, region.h). A thread that answers may
 * keep the call: HS and AS stay set and the response says kept. The
 * session's next call, in the same epoch, writes its request with no
 * begin_call, no bell and no notify (Client::write_to_keeper); otherwise
 * it recalls (RC, a CAS that sets it only while HS is set) and begins as
 * usual. The keeper keeps only as the bell's spinner (else it answers
 * without keeping), and after its response sets KS and flips KP (the
 * phase, which the response carries), and polls the request; at its "64th poll" it makes the
 * answer's deferred notify; the spin ends at any point (the bell, the
 * budget, RC, the client gone, a stop: all nondeterminism here) and then
 * it lets go, a CAS that clears the serving bits only while KS is set. A
 * request it sees it takes by clearing KS, and serves only if KS was set.
 * Both come before it stops being the spinner, so no other thread sets KS
 * meanwhile. The session, waiting for its answer, may take the call back
 * at any point (a keeper preempted among more sessions than CPUs): the
 * same CAS, if KS is set with the phase of the answer it read. A session
 * that finds HS clear and no answer while its request went to the keeper
 * (let go, or taken back) begins the call then and rings for it
 * (Endpoint::begin_after_let_go). The 64th poll's notify is for latency
 * only: the let-go always wakes, so the model cannot miss its absence; a
 * unit test checks it (Keep.AKeeperWakesItsParkedSessionWithoutLettingGo).
 * Configurations: dispatch, and restart with one session of two calls
 * (dispatch with abandons is past what CI can run). Mutations:
 *   -DRESUME_NO_RING       the session begins the call after the let-go but
 *                          does not ring: nobody takes it (call_hung)
 *   -DSERVE_AFTER_LET_GO   the keeper looks at the ring once more after its
 *                          let-go and serves what it finds: the slot may be
 *                          free by then (free_in_use)
 *   -DTAKE_IGNORES_REVOKE  the keeper serves the request it saw though the
 *                          session took the call back: two threads serve it,
 *                          and one lets the slot go under the other
 *                          (free_in_use)
 *   -DKEEP_WITHOUT_SPINNER any thread keeps, spinner or not: a late keeper's
 *                          take takes another's keep (lost_wakeup)
 * The phase in the take-back is not shown needed here: without it the
 * session takes back the keep of the answer it has not read yet, and the
 * thread rung for that waits for the session's next request, which these
 * configurations always send to it (the same runtime, one frame). With
 * a next call to another runtime that thread and the session's begin_call
 * would wait on each other. The model has one runtime, so the runtime a
 * keep names (kept_for, region.h) is checked by a unit test instead
 * (Keep.ALateKeeperLeavesAnotherRuntimesKeepAlone).
 */

#define NS 2            /* slots */
#ifndef NC
#define NC 2            /* clients (1 or 2) */
#endif
#ifndef NT
#define NT 2            /* serving threads per server process */
#endif
#ifndef CALLS
#define CALLS 2         /* calls per client */
#endif
#define NIL 255
#define NTHREADS 4      /* thread ids: the first server's 0..NT-1, then the second's NT..2NT-1 */

#define HC 1            /* held_by_client */
#define HS 2            /* held_by_server */
#define AS 4            /* accepted_by_server */
#define WS 8            /* watched_by_server (-DWATCH) */
#define RC 16           /* recalled_by_client (-DKEEP) */
#define KS 32           /* kept_by_server (-DKEEP) */
#define KP 64           /* kept_phase (-DKEEP) */
#define SERVING (HS | AS | RC | KS | KP)

/* ---- region (region.h) */
byte state[NS];
byte gen[NS];
byte call_epoch[NS];
byte server_epoch = 1;
byte head_idx = 0;      /* FreeList: the top index */
byte link[NS];
bit  on_free[NS];       /* bookkeeping for the claims, not in the code */
bit  bell[NS];          /* the runtime's doorbell */

/* ---- rings: one frame each way */
bit  request[NS];
byte request_gen[NS];
bit  response[NS];
byte response_gen[NS];
bit  response_kept[NS];  /* the response's last frame says the thread keeps the call (-DKEEP) */
bit  response_phase[NS]; /* and the phase of that keep (kept_phase) */

/* ---- the runtime's DispatchControl */
byte idle_sleeping;     /* parked threads (a flag with SINGLE_FLAG) */
bit  spinning;
bit  idle_armed[NTHREADS];   /* prepared: a wake now makes park return */
bit  idle_asleep[NTHREADS];  /* in the kernel's queue */

/* ---- each slot's client Waiter; the sleeper is a client process */
bit  client_sleeping[NS];
byte client_of[NS];          /* latch_proc: whom a wake of this Waiter reaches */
bit  client_armed[NC];
bit  client_asleep[NC];

/* ---- processes */
bit  dead[2];                /* a serving process was killed */
byte serving_by[NTHREADS];   /* the slot a live thread may write to, between accept and let-go */
byte leased_by[NS];          /* bookkeeping: the client holding the lease */
byte last_gen[NS];
byte clients_done;
bit  short_done;             /* client 1 has made all its calls: client 0's long call may end */
bit  thread_alive[NTHREADS];

/* ---- each slot's server Waiter: the thread serving it parks there for the request */
bit  server_sleeping[NS];
byte server_of[NS];          /* the thread serving the slot, NIL */
bit  srv_armed[NTHREADS];
bit  srv_asleep[NTHREADS];

/* ---- owed wakes: slots whose client's wake a serving thread left to others */
bit  owed[NS];
bit  taken1;                 /* -DHOLD: a thread has taken client 1's call */

/* ---- what the claims look at */
bit double_lease, free_in_use, generation_reused, lost_wakeup, call_hung, double_serve;

/*
 * FreeList::push (push_free). The stack itself is one step here: its ABA tag
 * is tested with real processes (tests/ipc freelist stress), and modelling
 * its two-step CAS multiplied the states by more than CI can afford.
 */
inline push_free(i) {
    atomic {
        if
        :: state[i] != 0 || on_free[i] -> free_in_use = 1; assert(!free_in_use)
        :: else -> skip
        fi;
        k = 0;
        do
        :: k < NTHREADS && serving_by[k] == i -> free_in_use = 1; assert(!free_in_use); k++
        :: k < NTHREADS && serving_by[k] != i -> k++
        :: else -> k = 0; break
        od;
        link[i] = head_idx; head_idx = i; on_free[i] = 1
    }
}

/* Thread `id` starts serving slot i: no other live thread may be serving it (double_serve). */
inline serve_slot(i) {
    k = 0;
    do
    :: k < NTHREADS && k != id && serving_by[k] == i -> double_serve = 1; assert(!double_serve)
    :: k < NTHREADS && (k == id || serving_by[k] != i) -> k++
    :: else -> k = 0; break
    od;
    serving_by[id] = i
}

/* Waker::wake on the idle Waiter: the word changes, one sleeper leaves the queue. */
inline wake_idle() {
    atomic {
        idle_armed[0] = 0; idle_armed[1] = 0; idle_armed[2] = 0; idle_armed[3] = 0;
        if      /* FUTEX_WAKE of one: any of the sleepers (NTHREADS is 4) */
        :: idle_asleep[0] -> idle_asleep[0] = 0
        :: idle_asleep[1] -> idle_asleep[1] = 0
        :: idle_asleep[2] -> idle_asleep[2] = 0
        :: idle_asleep[3] -> idle_asleep[3] = 0
        :: else -> skip
        fi
    }
}

/* notify_idle: fence, then wake one parked thread unless a spinner will look. */
inline notify_idle() {
    if
    :: atomic { spinning == 0 && idle_sleeping != 0 -> wake_idle() }
    :: atomic { !(spinning == 0 && idle_sleeping != 0) -> skip }  /* elided */
    fi
}

/* Waker::wake on slot i's client Waiter: reaches the process in latch_proc. */
inline wake_client(i) {
    atomic {
        if
        :: client_of[i] != NIL -> client_armed[client_of[i]] = 0; client_asleep[client_of[i]] = 0
        :: else -> skip
        fi
    }
}

/* notify: fence, read the peer's sleeping flag, wake only a sleeper. */
inline notify_client(i) {
    if
    :: atomic { client_sleeping[i] -> wake_client(i) }
    :: atomic { !client_sleeping[i] -> skip }
    fi
}

/* Region::pay_owed_wakes for slot k: take its bit (fetch_and), then notify its client. */
inline pay_owed_wake(k) {
    if
    :: atomic { owed[k] -> owed[k] = 0 } -> notify_client(k)
    :: atomic { !owed[k] -> skip }
    fi
}

/* Waker::wake and notify on slot i's server Waiter. */
inline wake_server(i) {
    atomic {
        if
        :: server_of[i] != NIL -> srv_armed[server_of[i]] = 0; srv_asleep[server_of[i]] = 0
        :: else -> skip
        fi
    }
}

inline notify_server(i) {
    if
    :: atomic { server_sleeping[i] -> wake_server(i) }
    :: atomic { !server_sleeping[i] -> skip }
    fi
}

/* ------------------------------------------------------------------ client */

/* Region::abandon (or release: the same bits), then whoever made the word 0 frees the slot. */
inline give_back(idx) {
    atomic { prev = state[idx]; state[idx] = state[idx] & ~HC; leased_by[idx] = NIL; client_of[idx] = NIL }
    if
    :: (prev & ~HC) == 0 -> prev = 0; push_free(idx)
    :: (prev & HS) != 0 -> prev = 0; notify_server(idx)   /* abandon wakes a server parked on the slot */
    :: (prev & ~HC) != 0 && (prev & HS) == 0 -> prev = 0  /* WS only: the watcher's give-up frees it */
    fi;
    idx = NIL; mygen = 0; epoch = 0
}

/*
 * wait_until's sleep half for a client that found its condition false:
 * prepare, announce, re-check (the caller's condition), park. The caller
 * re-checks after this returns; it may also abandon instead of waiting.
 */
#define CLIENT_PREPARE  atomic { client_armed[me] = 1; client_sleeping[idx] = 1 }
#ifndef NO_BACKSTOP
/* the backstop: the park ends by itself, here only once nothing else can move (see the top) */
#define CLIENT_AWAKE    if :: !client_asleep[me] :: atomic { timeout && client_asleep[me] -> client_asleep[me] = 0; client_armed[me] = 0 } fi
#else
#define CLIENT_AWAKE    !client_asleep[me]
#endif
#define CLIENT_PARK     atomic { if :: client_armed[me] -> client_asleep[me] = 1 :: else -> skip fi }; \
                        CLIENT_AWAKE; client_sleeping[idx] = 0

#ifdef KEEP
/*
 * Endpoint::begin_after_let_go: no answer, and the call let go (by its keeper) or taken back (by this
 * session) without its request taken, which waits in the ring: the call begins now (the word's HS is
 * clear: only this session sets it), and rings, the request's first frame having gone out without a bell.
 */
inline begin_after_let_go(idx) {
    atomic { (state[idx] & HS) == 0 -> epoch = server_epoch }
    atomic { call_epoch[idx] = epoch; skip_ring = (state[idx] & WS) != 0; state[idx] = state[idx] | HS }
    if
    :: skip_ring -> skip_ring = 0
#ifndef RESUME_NO_RING
    :: else -> bell[idx] = 1; notify_idle()
#else
    :: else -> skip
#endif
    fi;
    notify_server(idx)
}
#endif

proctype Client(byte me) {
    byte idx = NIL, mygen, epoch, calls, prev, k;
    bit ok, skip_ring;
#ifdef KEEP
    bit kept, keptpath;   /* the last answer said kept; this request went to the keeper */
    bit rv;               /* the session took the call back */
    bit kphase;           /* the phase of that keep */
#endif

    do
    :: calls == CALLS -> break
    :: calls < CALLS ->
        /* Region::lease: FreeList::pop, then the ownership word 0 -> held_by_client */
        if
        :: idx == NIL ->
            atomic {
                if
                :: head_idx == NIL -> calls = CALLS; goto next_call    /* no slot: the call fails at once */
                :: else -> idx = head_idx; head_idx = link[idx]; on_free[idx] = 0
                fi
            }
            atomic {
                if :: state[idx] != 0 || leased_by[idx] != NIL -> double_lease = 1; assert(!double_lease) :: else -> skip fi;
                state[idx] = HC; leased_by[idx] = me;
                request[idx] = 0; response[idx] = 0;           /* discard() */
                client_sleeping[idx] = 0; client_of[idx] = me;  /* init_waiter, then Client::open */
                server_sleeping[idx] = 0; server_of[idx] = NIL;
                gen[idx] = gen[idx] + 1;
                if :: gen[idx] <= last_gen[idx] -> generation_reused = 1; assert(!generation_reused) :: else -> skip fi;
                last_gen[idx] = gen[idx]; mygen = gen[idx]
            }
        :: else -> skip
        fi;

#ifdef HOLD
        (me != 0 || taken1);     /* client 0 calls once client 1's call is taken */
#endif
#ifdef KEEP
        /*
         * Client::start after a kept answer: in the same epoch the request may go straight to the
         * keeper; else (another runtime, a request of more than one frame, a new epoch) the session
         * recalls the call (a CAS: only while the server holds it) and begins as any call does.
         */
        if
        :: kept && server_epoch == epoch -> kept = 0; keptpath = 1; goto request_out
        :: kept ->
           kept = 0;
           atomic { if :: (state[idx] & HS) && !(state[idx] & RC) -> state[idx] = state[idx] | RC :: else -> skip fi }
        :: !kept -> skip
        fi;
#endif
        /* Client::start: begin_call waits while the previous call's server has not let go */
        do
        :: atomic { (state[idx] & HS) == 0 -> epoch = server_epoch }
           atomic { call_epoch[idx] = epoch; skip_ring = (state[idx] & WS) != 0; state[idx] = state[idx] | HS }
           break
        :: (state[idx] & HS) != 0 ->
            CLIENT_PREPARE;
            if
            :: atomic { (state[idx] & HS) == 0 -> client_sleeping[idx] = 0 }
            :: (state[idx] & HS) != 0 -> CLIENT_PARK
            fi
#ifdef ABANDON
        :: give_back(idx); goto call_failed      /* cancelled while waiting */
#endif
        od;

        /* the request frame, then ring_doorbell: the bit, then notify_idle */
request_out:
        atomic { request[idx] = 1; request_gen[idx] = mygen }
        if
        :: skip_ring -> skip_ring = 0    /* the watcher will see the call (-DWATCH) */
#ifdef KEEP
        :: keptpath -> skip              /* the keeper polls the request ring */
#endif
        :: else ->
           bell[idx] = 1;
           notify_idle()
        fi;
#ifndef NO_FIRST_NOTIFY
        /* a thread may have taken the call before this frame (a watcher, or a stale bit of a dead epoch);
         * not a kept call: only its keeper holds it, and it polls */
#ifdef KEEP
        if :: !keptpath -> notify_server(idx) :: else -> skip fi;
#else
        notify_server(idx);
#endif
#endif

        /* MessageReader::wait_frame: the response, or why there is none */
        do
        :: atomic { response[idx] && response_gen[idx] == mygen -> response[idx] = 0; ok = 1
#ifdef KEEP
                    ; kept = response_kept[idx]; kphase = response_phase[idx]; keptpath = 0
#endif
           }
           break
        :: atomic { !response[idx] && server_epoch != epoch -> ok = 0 }
           break
        :: atomic { !response[idx] && server_epoch == epoch && (state[idx] & HS) == 0 -> ok = 0 }
           /* the last look: published before the server let go? */
           atomic { if :: response[idx] && response_gen[idx] == mygen -> response[idx] = 0; ok = 1
#ifdef KEEP
                                ; kept = response_kept[idx]; kphase = response_phase[idx]; keptpath = 0
#endif
                    :: else -> skip fi }
#ifdef KEEP
           if
           :: !ok && keptpath -> keptpath = 0; begin_after_let_go(idx)
           :: else -> break
           fi
#else
           break
#endif
#ifdef KEEP
        /*
         * Region::revoke_kept, at a check of the wait (its 64th poll, before a park), after a look that
         * found no answer: if the keeper has not taken the request (KS still set, of the keep of the
         * answer the session read), the session takes the call back, and begins it. Two steps: the keeper
         * may answer, and keep again, in between.
         */
        :: atomic { keptpath && !response[idx] && (state[idx] & KS) } ->
           atomic {
               if :: (state[idx] & (KS | KP)) == KS + kphase * KP ->
                     state[idx] = state[idx] & ~SERVING; rv = 1
                  :: else -> skip
               fi
           }
           if :: rv -> rv = 0; keptpath = 0; begin_after_let_go(idx) :: else -> skip fi
#endif
        :: atomic { !response[idx] && server_epoch == epoch && (state[idx] & HS) != 0 } ->
            CLIENT_PREPARE;
            if
            :: atomic { (response[idx] || server_epoch != epoch || (state[idx] & HS) == 0) -> client_sleeping[idx] = 0 }
            :: atomic { !(response[idx] || server_epoch != epoch || (state[idx] & HS) == 0) } -> CLIENT_PARK
            fi
#ifdef ABANDON
        :: ok = 0; break                          /* cancelled, timed out, or the backend exits */
#endif
        od;
#ifdef KEEP
        keptpath = 0;
        if :: !ok -> kept = 0 :: else -> skip fi;
#endif
        if
        :: ok -> ok = 0
        :: !ok -> give_back(idx)                  /* Client::end abandons a failed call */
        fi;
call_failed:
        pay_owed_wake(0); pay_owed_wake(1);       /* Client::end, after any outcome, pays owed wakes */
        calls++;
next_call:
        skip
    od;
    if
    :: idx != NIL -> give_back(idx)               /* Client::close at session end */
    :: else -> skip
    fi;
    atomic { clients_done++; short_done = short_done || me == 1 }
}

/* ------------------------------------------------------------------ server */

/* Region::finish_serving: clear both server bits; free the slot if its client left. */
inline finish_serving(i) {
    atomic { prev = state[i]; state[i] = state[i] & ~SERVING; serving_by[id] = NIL }
    if
    :: (prev & HS) && (prev & HC) == 0 -> prev = 0; push_free(i)
    :: else -> prev = 0
    fi
}

#ifdef WATCH

/*
 * The watcher takes a call begun under WS: WS off, accepted on, as accept()
 * does for a claimed call. The caller goes on as after accept.
 */
inline take_watched() {
    state[w] = (state[w] & ~WS) | AS; i = w; g = gen[i]; serve_slot(i); server_of[i] = id; w = NIL
}
#endif

proctype Thread(byte id; byte proc) {
    byte i, g, prev, k, st;
    bit gone;
#ifdef KEEP
    bit keep, kph;
#endif
#ifdef WATCH
    byte w = NIL;
    bit spin_me;
#endif

    thread_alive[id] = 1;
top:
    {
#ifdef WATCH
    /*
     * Dispatcher::next with a watched slot: watch it (as the bell's spinner
     * if there is none), then resolve the watch before anything else: take
     * the call begun on it, or give up (the bell rang, the budget ran out,
     * another thread spins), in one RMW that takes a call begun meanwhile.
     */
    if
    :: w != NIL ->
        /* as the bell's spinner only, and only while the slot is idle: its session between calls */
        if
        :: atomic { spinning == 0 && state[w] == HC -> spinning = 1; spin_me = 1; state[w] = HC | WS }
        :: else -> w = NIL; goto top
        fi;
        if
        :: atomic { (state[w] & (HS | AS | WS)) == (HS | WS) -> take_watched() }
        :: atomic {
               prev = state[w]; state[w] = prev & ~WS;
               if
#ifndef GIVE_UP_DROPS
               :: (prev & (HS | AS)) == HS -> take_watched()
#endif
               :: else -> st = w; w = NIL
               fi
           }
           if
           :: w == NIL && prev == WS -> push_free(st)   /* the client left while watched: this made it 0 */
           :: else -> skip
           fi;
           st = 0
        fi;
        if
        :: spin_me -> spinning = 0; spin_me = 0
        :: else -> skip
        fi;
        if
        :: serving_by[id] != NIL -> prev = 0; goto accepted
        :: else -> prev = 0; goto top
        fi
    :: else -> skip
    fi;
#endif
    if
    /* Dispatcher::claim: take a rung bit (Doorbell::claim's fetch_and), then accept it */
    :: atomic { bell[0] -> bell[0] = 0; i = 0 }
    :: atomic { bell[1] -> bell[1] = 0; i = 1 }
    :: atomic { !bell[0] && !bell[1] } ->
#ifndef NO_DRAIN
        pay_owed_wake(0); pay_owed_wake(1);       /* Dispatcher::next: the bell is empty, pay what is owed */
#endif
        /* spin_for_bell: at most one spinner, announced */
        if
        :: atomic { spinning == 0 -> spinning = 1 }
           if
           :: atomic { bell[0] || bell[1] -> spinning = 0 }
           :: spinning = 0                        /* the budget ran out */
           fi
        :: skip                                   /* another thread spins, or no budget */
        fi;
        /* Dispatcher::next: prepare, announce, re-check, park */
        /* prepare() reads the futex word; nothing can tell it apart from the announce that follows */
        atomic {
            idle_armed[id] = 1;
#ifdef SINGLE_FLAG
            idle_sleeping = 1
#else
            idle_sleeping++
#endif
        }
        if
        :: atomic { bell[0] || bell[1] -> idle_armed[id] = 0 }
        :: atomic { !bell[0] && !bell[1] } ->
            atomic { if :: idle_armed[id] -> idle_asleep[id] = 1 :: else -> skip fi };
end_parked:
            !idle_asleep[id]
        fi;
#ifdef SINGLE_FLAG
        idle_sleeping = 0;
#else
        idle_sleeping--;
#endif
        goto top
    fi;

    /* Region::accept: claim the call unless it is stale or taken */
    atomic {
        st = state[i];
        if
        :: (st & HS) == 0 || (st & AS) != 0 -> st = 0; i = 0; goto top
        :: else -> state[i] = st | AS; g = gen[i]; serve_slot(i); server_of[i] = id; st = 0;
                   taken1 = taken1 || leased_by[i] == 1
        fi
    }
accepted:
    if
    :: call_epoch[i] != server_epoch ->
        finish_serving(i);                        /* begun under a dead server */
        notify_client(i);
        i = 0; g = 0;
        goto top
    :: else -> skip
    fi;
    /* more calls rung: one more thread */
    if
    :: bell[0] || bell[1] -> notify_idle()
    :: else -> skip
    fi;
    /*
     * ServerCall::read_*: wait for the request on the slot's server Waiter, or see the client gone. A call
     * may be taken before its request is written: from a stale bit of a dead epoch, or by a watcher.
     */
#define REQUEST_OR_GONE ((request[i] && request_gen[i] == g) || (state[i] & HC) == 0 || gen[i] != g)
kept_request:
    do
    :: atomic { request[i] && request_gen[i] == g -> request[i] = 0 }; break
    :: atomic { (state[i] & HC) == 0 || gen[i] != g }; break
    :: atomic { !REQUEST_OR_GONE } ->
        atomic { srv_armed[id] = 1; server_sleeping[i] = 1 }
        if
        :: atomic { REQUEST_OR_GONE -> server_sleeping[i] = 0 }
        :: atomic { !REQUEST_OR_GONE } ->
            atomic { if :: srv_armed[id] -> srv_asleep[id] = 1 :: else -> skip fi };
end_request:
            !srv_asleep[id]; server_sleeping[i] = 0
        fi
    od;
    /* With LONG_CALL, client 0's calls are long: they end only once client 1 is done (or client 0 has gone).
     * So client 1's calls must be taken by another thread, whose wakeup must not be lost. */
#if defined(LONG_CALL) || defined(HOLD)
    if
    :: atomic { leased_by[i] == 0 && g == gen[i] } -> (short_done || (state[i] & HC) == 0 || gen[i] != g)
    :: else -> skip
    fi;
#endif
#ifdef KEEP
    /*
     * ServerCall::offer_keep (any thread may offer): Region::may_keep makes the thread its bell's spinner,
     * or it keeps nothing if another thread spins there, and reads the phase the keep will have; the
     * answer says kept, with that phase; then MessageWriter::publish releases the request frame and
     * Region::keep sets KS (below). So a thread that finds KS set while it spins on a kept call finds
     * its own keep (the take, below). The request bit here is cleared when it is read; the code's frame
     * stays in the ring until released, which is why the release comes before KS: a session that takes
     * the call back rings for a thread that reads the ring from its head.
     */
    if
#ifndef KEEP_WITHOUT_SPINNER
    :: atomic { spinning == 0 -> spinning = 1;
#else
    :: atomic {
#endif
                assert((state[i] & KS) == 0); keep = 1; kph = (state[i] & KP) == 0 }
    :: keep = 0
    fi;
#endif
    /* the response, unless the client has gone (ServerCall::finish drops it) */
    atomic {
        if :: on_free[i] -> free_in_use = 1; assert(!free_in_use) :: else -> skip fi;
        gone = ((state[i] & HC) == 0 || gen[i] != g);
        if :: !gone -> response[i] = 1; response_gen[i] = g :: else -> skip fi
#ifdef KEEP
        ; response_kept[i] = keep; response_phase[i] = kph
#endif
    }
#ifdef KEEP
    if
    :: keep ->
        /* Region::keep, after the answer and the request frame's release: from here it reads nothing of the call */
        atomic { state[i] = state[i] ^ (KS | KP); assert(kph == ((state[i] & KP) != 0)); serving_by[id] = NIL };
        /* ServerCall::finish keeps the call: no let-go, and its notify is left to the spin below */
        keep = 0;   /* keeping is not serving: the take (below) begins that */
        /*
         * Dispatcher::next with a kept call, as the bell's spinner: it polls the request ring and the bell,
         * and makes the answer's notify at its 64th poll; the bell, the budget, a recall, the client gone
         * or a stop end the spin, which is any number of polls here: the let-go may come after the request
         * is there, unseen. A request means the answer was read: no notify. Every end of the spin, its
         * let-go or its take, comes before it stops being the spinner.
         */
        do
        :: atomic { request[i] && request_gen[i] == g };
           /* Region::take_kept: the request is this thread's unless the session took the call back */
           atomic {
               prev = state[i]; state[i] = state[i] & ~KS;
#ifndef TAKE_IGNORES_REVOKE
               if :: (prev & KS) -> serve_slot(i) :: else -> skip fi
#else
               prev = KS; serve_slot(i)
#endif
           }
           if
           :: (prev & KS) ->
              prev = 0; spinning = 0;
              if :: bell[0] || bell[1] -> notify_idle() :: else -> skip fi;   /* ringers elided for it */
              goto kept_request
           :: else -> prev = 0; break      /* taken back: the let-go below finds KS clear */
           fi
        :: !keep ->
           notify_client(i);
           keep = 1
        :: keep = 0; break
        od;
        keep = 0;
        /* Region::let_go: clear the serving bits only if still kept (the session may have taken it back) */
        atomic {
            prev = state[i]; serving_by[id] = NIL;
            if
            :: (prev & KS) -> state[i] = prev & ~SERVING
            :: else -> gone = 1      /* taken back: the session is awake, no wake to make */
            fi
        }
        if
        :: (prev & KS) && (prev & HC) == 0 -> prev = 0; push_free(i)
        :: else -> prev = 0
        fi;
        spinning = 0;
#ifdef SERVE_AFTER_LET_GO
        if
        :: atomic { request[i] && request_gen[i] == g } -> serve_slot(i); goto kept_request
        :: else -> skip
        fi;
#endif
        gone = gone || (state[i] & HC) == 0 || gen[i] != g;
        goto woken
    :: else -> skip
    fi;
#endif
    /* ServerCall::finish: let go, then wake */
    finish_serving(i);
woken:
#ifdef WATCH
    w = i;     /* the slot to watch next: the one this thread served last */
#endif
    if
    /* Region::wake_or_owe: notify, but while calls wait in the bell leave the wake owed (the flag and the
     * bell read, then the owed bit set) */
    :: !gone ->
        if
        :: atomic { client_sleeping[i] && (bell[0] || bell[1]) } -> owed[i] = 1
        :: atomic { client_sleeping[i] && !bell[0] && !bell[1] -> wake_client(i) }
        :: atomic { !client_sleeping[i] -> skip }
        fi
    :: else -> skip
    fi;
    i = 0; g = 0; gone = 0;
    goto top
    } unless { dead[proc] }
}

/* The serving process dies at any step; a new one begins an epoch, then starts its threads. */
active proctype Restarter() {
    byte i, st, k;

    if
    :: skip
#ifdef RESTART
    :: atomic {         /* the process dies: its threads stop wherever they are */
           dead[0] = 1;
           k = 0;
           do
           :: k < NT -> thread_alive[k] = 0; idle_asleep[k] = 0; idle_armed[k] = 0; serving_by[k] = NIL;
                        srv_asleep[k] = 0; srv_armed[k] = 0; k++
           :: else -> k = 0; break
           od
       }
       /*
        * Region::begin_server_epoch, one step here: the race that matters (a client
        * that read the old epoch sets held_by_server after the scan) straddles it.
        */
#ifdef WATCH
       server_epoch++;     /* the scan that follows is one step per slot: a client may come between */
#endif
       atomic {
#ifndef WATCH
           server_epoch++;
#endif
           i = 0;
           do
           :: i < NS ->
#ifdef WATCH
             atomic {
               /* a dead watcher's WS goes; a call of this epoch begun under it did not ring: ring for it */
#ifndef SCAN_FORGETS_WATCHED
               if
               :: (state[i] & (HS | AS | WS)) == (HS | WS) && call_epoch[i] == server_epoch -> bell[i] = 1
               :: else -> skip
               fi;
#endif
               k = state[i]; state[i] = k & ~WS;
               if
               :: k == WS -> k = 0; push_free(i)   /* its client left while watched: this made the word 0 */
               :: else -> k = 0
               fi;
#endif
               st = state[i];
               if
               :: (st & HS) && call_epoch[i] != server_epoch -> state[i] = st & ~SERVING
               :: else -> st = 0
               fi;
               if
               :: (st & HS) && (st & HC) == 0 -> push_free(i)
               :: else -> skip
               fi;
               /* every client on a slot: the dead server may have let go and died before its wake */
               if
#ifdef WAKE_ONLY_CLEARED
               :: (st & HS) && (state[i] & HC) && client_sleeping[i] -> wake_client(i)
#else
               :: (state[i] & HC) && client_sleeping[i] -> wake_client(i)
#endif
               :: else -> skip
               fi;
               i++
#ifdef WATCH
             }
#endif
           :: else -> i = 0; st = 0; break
           od;
#ifndef KEEP_DEAD_SPINNER
           /* the dead process's spinner and sleepers are gone: forget them */
           spinning = 0; idle_sleeping = 0
#endif
       }
       atomic {
           run Thread(NT, 1);
#if NT > 1
           run Thread(NT + 1, 1)
#endif
       }
#endif
    fi
}

/* A call of this epoch rung and not yet taken by any thread. */
#define CALL_WAITS(b) (bell[b] && (state[b] & (HS | AS)) == HS && call_epoch[b] == server_epoch)

#ifndef NO_BACKSTOP
/* Left to the backstop: slot k's wake is owed while a live thread is inside a call (see the top). */
#define BUSY(t) (thread_alive[t] && serving_by[t] != NIL)
#define LEFT_TO_BACKSTOP(k) (owed[k] && (BUSY(0) || BUSY(1) || BUSY(2) || BUSY(3)))
#define BACKSTOP_PENDING ((leased_by[0] != NIL && client_asleep[leased_by[0]] && owed[0]) || \
                          (leased_by[1] != NIL && client_asleep[leased_by[1]] && owed[1]))
#else
#define LEFT_TO_BACKSTOP(k) 0
#define BACKSTOP_PENDING 0
#endif

/* When nothing can move any more, look at what is left waiting (a backstop may still move: owed wakes, at the top). */
active proctype Monitor() {
    byte k;

end_watch:
    timeout ->
    atomic {
        k = 0;
        do
        :: k < NTHREADS ->
            if :: thread_alive[k] && idle_asleep[k] && (CALL_WAITS(0) || CALL_WAITS(1)) -> lost_wakeup = 1; assert(!lost_wakeup) :: else -> skip fi;
            /* asleep on its slot for a request that is there, or for a client that has gone */
            if
            :: thread_alive[k] && srv_asleep[k] && serving_by[k] != NIL &&
               (request[serving_by[k]] || (state[serving_by[k]] & HC) == 0) -> lost_wakeup = 1; assert(!lost_wakeup)
            :: else -> skip
            fi;
            k++
        :: else -> break
        od;
        k = 0;
        do
        :: k < NS ->
            if
            :: leased_by[k] != NIL && client_asleep[leased_by[k]] && !LEFT_TO_BACKSTOP(k) &&
               (response[k] || (state[k] & HS) == 0) -> lost_wakeup = 1; assert(!lost_wakeup)
            :: else -> skip
            fi;
            k++
        :: else -> break
        od;
        if :: clients_done != NC && !BACKSTOP_PENDING -> call_hung = 1; assert(!call_hung) :: else -> skip fi
    }
}

init {
    byte k;
    atomic {
        head_idx = 0; link[0] = 1; link[1] = NIL; on_free[0] = 1; on_free[1] = 1;
        leased_by[0] = NIL; leased_by[1] = NIL; client_of[0] = NIL; client_of[1] = NIL;
        k = 0;
        do :: k < NTHREADS -> serving_by[k] = NIL; k++ :: else -> break od
    }
    atomic {
        run Thread(0, 0);
#if NT > 1
        run Thread(1, 0);
#endif
        run Client(0)
#if NC > 1
        ; run Client(1)
#endif
    }
}
