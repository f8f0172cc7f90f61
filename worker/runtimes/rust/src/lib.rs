//! courier_rust_echo — a courier runtime on tokio (ABI v2, driven mode):
//! the pg_fusion case. The worker loads it with dlopen after fork; `init`
//! starts a multi-threaded tokio runtime and threads of its own that take
//! calls with `next_call`, so no call enters Rust from a thread Rust did
//! not create (only the rare cancel callback does).
//!
//! - `echo`: returns the request
//! - `sleep`: answers after the request's milliseconds, from a tokio timer
//!   (no thread waits per call); fails at once when the caller leaves
//! - `sha256`: the SHA-256 of the request (32 bytes)
//! - `fail`: fails the call with the request as its message
//! - `panic`: panics; the panic is caught into a call error
//!
//! Every entry point from C catches panics (`catch_unwind`): a panic never
//! unwinds into courier. courier calls `init` with every signal blocked, so
//! the runtime's threads never take PostgreSQL's signals; do not use
//! `tokio::signal` here.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

type CallId = u64;

// ---- courier/runtime.h, ABI v2 ----------------------------------------
const COURIER_RUNTIME_V2: u32 = 2;
const COURIER_MODE_DRIVEN: u32 = 1;
const COURIER_OK: c_int = 0;
const COURIER_STOPPING: c_int = 6;

#[repr(C)]
struct CallInfo {
    id: CallId,
    fn_name: *const c_char,
    request: *const c_void,
    request_len: usize,
    request_total: u64,
    request_complete: c_int,
}

type CancelFn = extern "C" fn(*mut c_void, CallId);

#[repr(C)]
struct Host {
    abi_version: u32,
    struct_size: u32,
    write: extern "C" fn(CallId, *const c_void, usize) -> c_int,
    finish: extern "C" fn(CallId) -> c_int,
    fail: extern "C" fn(CallId, *const c_char, usize) -> c_int,
    read: extern "C" fn(CallId, *mut c_void, usize, *mut usize) -> c_int,
    cancelled: extern "C" fn(CallId) -> c_int,
    on_cancel: extern "C" fn(CallId, CancelFn, *mut c_void) -> c_int,
    next_call: extern "C" fn(u32, *mut CallInfo, i64) -> c_int,
    describe: extern "C" fn(c_int) -> *const c_char,
}

#[repr(C)]
struct InitArgs {
    struct_size: u32,
    name: *const c_char,
    runtime_id: u32,
    worker_threads: c_int,
    max_open_calls: u32,
    max_message_size: u64,
}

#[repr(C)]
pub struct Runtime2 {
    abi_version: u32,
    mode: u32,
    name: *const c_char,
    init: extern "C" fn(*mut *mut c_void, *const Host, *const InitArgs) -> *const c_char,
    handle: Option<extern "C" fn(*mut c_void, *const CallInfo)>,
    stop: Option<extern "C" fn(*mut c_void)>,
    shutdown: Option<extern "C" fn(*mut c_void)>,
}
unsafe impl Sync for Runtime2 {}

static RUNTIME: Runtime2 = Runtime2 {
    abi_version: COURIER_RUNTIME_V2,
    mode: COURIER_MODE_DRIVEN,
    name: c"courier_rust_echo".as_ptr(),
    init,
    handle: None,
    stop: None,
    shutdown: Some(shutdown),
};

#[no_mangle]
pub extern "C" fn courier_runtime_v2() -> *const Runtime2 {
    &RUNTIME
}

// ---- the runtime --------------------------------------------------------

struct HostRef(&'static Host);
unsafe impl Sync for HostRef {}
unsafe impl Send for HostRef {}

static HOST: OnceLock<HostRef> = OnceLock::new();
static SLEEPS: OnceLock<Mutex<HashMap<CallId, oneshot::Sender<()>>>> = OnceLock::new();

fn host() -> &'static Host {
    HOST.get().expect("init ran").0
}

fn sleeps() -> &'static Mutex<HashMap<CallId, oneshot::Sender<()>>> {
    SLEEPS.get_or_init(|| Mutex::new(HashMap::new()))
}

struct State {
    runtime: tokio::runtime::Runtime,
    takers: Vec<JoinHandle<()>>,
}

extern "C" fn init(state: *mut *mut c_void, host: *const Host, args: *const InitArgs) -> *const c_char {
    let started = catch_unwind(|| {
        // SAFETY: courier passes tables that outlive the runtime.
        let (host, args) = unsafe { (&*host, &*args) };
        let _ = HOST.set(HostRef(host));
        let threads = args.worker_threads.max(1) as usize;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("courier-tokio")
            .enable_time()
            .build()
            .ok()?;
        let id = args.runtime_id;
        let takers = (0..threads)
            .map(|_| {
                let tokio = runtime.handle().clone();
                std::thread::Builder::new()
                    .name("courier-taker".into())
                    .spawn(move || take(id, tokio))
                    .expect("a taker thread")
            })
            .collect();
        Some(Box::into_raw(Box::new(State { runtime, takers })))
    });
    match started {
        Ok(Some(s)) => {
            // SAFETY: courier gives a valid pointer to store the state in.
            unsafe { *state = s.cast() };
            std::ptr::null()
        }
        _ => c"could not start the tokio runtime".as_ptr(),
    }
}

extern "C" fn shutdown(state: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the pointer init stored; courier calls shutdown once.
        let state = unsafe { Box::from_raw(state.cast::<State>()) };
        for t in state.takers {
            let _ = t.join(); // next_call told each one that the worker stops
        }
        state.runtime.shutdown_timeout(Duration::from_secs(1));
    }));
}

/// A taker: one of our threads, blocked in courier's dispatcher between calls.
fn take(runtime_id: u32, tokio: tokio::runtime::Handle) {
    let mut info = CallInfo {
        id: 0,
        fn_name: std::ptr::null(),
        request: std::ptr::null(),
        request_len: 0,
        request_total: 0,
        request_complete: 0,
    };
    loop {
        match (host().next_call)(runtime_id, &mut info, -1) {
            COURIER_STOPPING => return,
            COURIER_OK => {
                let id = info.id;
                // SAFETY: courier keeps the name valid until the call ends.
                let name = unsafe { CStr::from_ptr(info.fn_name) }.to_str().unwrap_or("");
                let served = catch_unwind(AssertUnwindSafe(|| match request(&info) {
                    Some(req) => serve(id, name, req, &tokio),
                    None => {} // the caller left: the call has ended
                }));
                if let Err(payload) = served {
                    fail(id, &format!("panic: {}", panic_message(payload.as_ref())));
                }
            }
            _ => {}
        }
    }
}

/// What a panic said, if it said it with a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// The whole request: borrowed in place when it came in one piece (the
/// common case: no copy), else the first piece and the rest read into a buffer.
fn request(info: &CallInfo) -> Option<Request<'_>> {
    // SAFETY: courier keeps the first piece valid until the call's first read or its end.
    let first = unsafe { std::slice::from_raw_parts(info.request.cast::<u8>(), info.request_len) };
    if info.request_complete != 0 {
        return Some(Request::InPlace(first));
    }
    let mut req = first.to_vec();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut n = 0usize;
        if (host().read)(info.id, buf.as_mut_ptr().cast(), buf.len(), &mut n) != COURIER_OK {
            return None;
        }
        if n == 0 {
            return Some(Request::Owned(req));
        }
        req.extend_from_slice(&buf[..n]);
    }
}

enum Request<'a> {
    InPlace(&'a [u8]),
    Owned(Vec<u8>),
}

impl Request<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Request::InPlace(b) => b,
            Request::Owned(v) => v,
        }
    }
}

fn serve(id: CallId, name: &str, req: Request<'_>, tokio: &tokio::runtime::Handle) {
    let bytes = req.bytes();
    match name {
        "echo" => respond(id, bytes),
        "sha256" => respond(id, &Sha256::digest(bytes)),
        "sleep" => start_sleep(id, bytes.to_vec(), tokio),
        "fail" => fail(id, &String::from_utf8_lossy(bytes)),
        "panic" => panic!("{}", String::from_utf8_lossy(bytes)),
        other => fail(
            id,
            &format!("unknown function \"{other}\" (courier_rust_echo offers echo, sleep, sha256, fail, panic)"),
        ),
    }
}

fn respond(id: CallId, bytes: &[u8]) {
    (host().write)(id, bytes.as_ptr().cast(), bytes.len());
    (host().finish)(id);
}

fn fail(id: CallId, message: &str) {
    (host().fail)(id, message.as_ptr().cast(), message.len());
}

fn start_sleep(id: CallId, req: Vec<u8>, tokio: &tokio::runtime::Handle) {
    let ms = match std::str::from_utf8(&req).ok().and_then(|s| s.parse::<u64>().ok()) {
        Some(ms) => ms,
        None => return fail(id, &format!("sleep expects a non-negative number of milliseconds, got {:?}",
                                         String::from_utf8_lossy(&req))),
    };
    let (gone, cancelled) = oneshot::channel();
    sleeps().lock().unwrap().insert(id, gone);
    tokio.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                sleeps().lock().unwrap().remove(&id);
                respond(id, &req);
            }
            _ = cancelled => fail(id, "cancelled"),
        }
    });
    (host().on_cancel)(id, on_cancel, std::ptr::null_mut()); // may call on_cancel at once
}

/// On a courier thread when a caller leaves: wakes the sleep's task.
extern "C" fn on_cancel(_arg: *mut c_void, id: CallId) {
    let _ = catch_unwind(|| {
        if let Some(gone) = sleeps().lock().unwrap().remove(&id) {
            let _ = gone.send(());
        }
    });
}
