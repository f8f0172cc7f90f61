/*
 * courier.cc — loading courier into PostgreSQL.
 *
 * _PG_init (in the postmaster, through shared_preload_libraries) defines the
 * GUCs, asks for the region's memory, and registers the worker. The shmem
 * startup hook then formats two things before any child is forked:
 *
 *   - the region ("courier" in pg_shmem_allocations), sized by ipc's
 *     compute_layout() and nothing else;
 *   - the stats segment, a POSIX shared memory object named after the
 *     cluster's port (/courier-<port>), mode 0640, which the exporter maps
 *     read-only without a database connection.
 *
 * After a crash the postmaster re-runs the hook with fresh shared memory:
 * the stats segment is recreated with it. It is removed when the
 * postmaster exits (children reset the postmaster's exit callbacks).
 */
#include <fcntl.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "courier/ipc/layout.h"
#include "host.h"

extern "C" {
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/bgworker_internals.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#if PG_VERSION_NUM < 150000
#error "courier needs PostgreSQL 15 or later (shmem_request_hook, MarkGUCPrefixReserved)"
#endif

PG_MODULE_MAGIC;

PGDLLEXPORT void _PG_init(void);
}

namespace courier::ext {

int guc_slots = 64;
int guc_ring_size_kb = 64;
int guc_max_message_size_kb = 64 * 1024;
char *guc_runtimes = nullptr;
char *guc_runtime_obsolete = nullptr;
int guc_worker_threads = 4;
int guc_spin_us = 50;
int guc_call_timeout_ms = 0;
int guc_slot_wait_timeout_ms = 5000;
bool guc_enabled = true;
char *guc_worker_cpus = nullptr;

namespace {

ipc::Region region;
bool region_ready = false;
void *stats_base = nullptr;
std::size_t stats_size = 0;
char stats_name[64];
bool stats_cleanup_registered = false;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
shmem_request_hook_type prev_shmem_request_hook = nullptr;

std::vector<worker::RuntimeSpec> runtimes;
std::string runtime_list;
worker::CpuSet worker_cpus;  // courier.worker_cpus, parsed; none when it is empty

ipc::RegionParams params_from_gucs() {
    return ipc::RegionParams{static_cast<std::uint32_t>(guc_slots),
                             static_cast<std::uint64_t>(guc_ring_size_kb) * 1024,
                             static_cast<std::uint64_t>(guc_max_message_size_kb) * 1024,
                             static_cast<std::uint32_t>(std::max<std::size_t>(runtimes.size(), 1))};
}

bool valid_runtime_name(std::string_view name) {
    if (name.empty() || name.size() >= ipc::runtime_name_bytes)
        return false;
    for (char c : name)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
            return false;
    return true;
}

/*
 * "name", "name=library" or "library", comma-separated; a bare library
 * (a path, or "courier_echo.so") is named after its file. Returns the
 * reason on error, or nullptr.
 */
const char *parse_runtimes(const char *value, std::vector<worker::RuntimeSpec> *out) {
    out->clear();
    std::string_view rest(value != nullptr ? value : "");
    while (!rest.empty()) {
        const std::size_t comma = rest.find(',');
        std::string_view item = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front())))
            item.remove_prefix(1);
        while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back())))
            item.remove_suffix(1);
        if (item.empty())
            return "an entry is empty";
        const std::size_t eq = item.find('=');
        std::string_view library = eq == std::string_view::npos ? item : item.substr(eq + 1);
        std::string_view name = item.substr(0, eq);
        if (eq == std::string_view::npos) {
            name = name.substr(name.rfind('/') == std::string_view::npos ? 0 : name.rfind('/') + 1);
            if (name.size() > 3 && name.substr(name.size() - 3) == ".so")
                name.remove_suffix(3);
        }
        if (!valid_runtime_name(name))
            return "a runtime name must be 1 to 63 letters, digits or underscores (write name=library)";
        if (library.empty())
            return "a library is empty";
        for (const auto &r : *out)
            if (r.name == name)
                return "a runtime name appears twice";
        out->push_back(worker::RuntimeSpec{std::string(name), std::string(library)});
    }
    if (out->empty())
        return "it lists no runtime";
    if (out->size() > ipc::max_runtimes)
        return "it lists more than 8 runtimes";
    return nullptr;
}

bool check_runtimes(char **newval, void **, GucSource) {
    /* The list is parsed and dropped before the report: GUC_check_errdetail allocates and may longjmp. */
    const char *why = pg::door([&] {
        std::vector<worker::RuntimeSpec> parsed;
        return parse_runtimes(*newval, &parsed);
    });
    if (why == nullptr)
        return true;
    GUC_check_errdetail("courier.runtimes: %s.", why);
    GUC_check_errhint("Write a comma-separated list of runtime libraries, each as name=library or library, "
                      "for example 'courier_echo, fusion=/opt/fusion/libfusion.so'.");
    return false;
}

/* courier.runtimes, or the obsolete courier.runtime when only that is set. */
void load_runtime_list() {
    const char *value = guc_runtimes;
    if (guc_runtime_obsolete != nullptr && guc_runtime_obsolete[0] != '\0') {
        if (std::string_view(guc_runtimes) != "courier_echo")
            ereport(FATAL, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("both courier.runtime and courier.runtimes are set"),
                            errhint("Remove courier.runtime: courier.runtimes replaces it.")));
        ereport(WARNING, (errmsg("courier.runtime is obsolete; use courier.runtimes = '%s'", guc_runtime_obsolete)));
        value = guc_runtime_obsolete;
    }
    if (const char *why = parse_runtimes(value, &runtimes))
        ereport(FATAL, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid courier.runtimes: %s", why)));
    /* A library that is not there is a typo: refuse to start rather than fail every call later. */
    for (const auto &r : runtimes) {
        const std::string path = worker::resolve_runtime_path(r.library, pkglib_path);
        if (access(path.c_str(), R_OK) != 0)
            ereport(FATAL, (errcode(ERRCODE_UNDEFINED_FILE),
                            errmsg("courier runtime \"%s\": cannot read library \"%s\": %m", r.name.c_str(),
                                   path.c_str()),
                            errhint("courier.runtimes names libraries in %s (installed runtimes: courier_echo, "
                                    "courier_echo_async, courier_echo_driven), or absolute paths.",
                                    pkglib_path)));
    }
    for (const auto &r : runtimes)
        runtime_list += (runtime_list.empty() ? "" : ", ") + r.name;
}

ipc::RegionLayout layout_or_fatal() {
    ipc::RegionLayout layout;
    const ipc::RegionParams p = params_from_gucs();
    if (ipc::compute_layout(p, &layout) != ipc::Status::ok)
        ereport(FATAL, (errmsg("invalid courier settings: %s", ipc::describe_layout_error(p)),
                        errhint("Check courier.slots, courier.ring_size and courier.max_message_size.")));
    return layout;
}

bool check_worker_cpus(char **newval, void **, GucSource) {
    if (*newval == nullptr || (*newval)[0] == '\0')
        return true;
    char why[256];
    const bool ok = pg::door([&] {
        worker::CpuSet cpus;
        std::string error;
        if (worker::parse_cpu_list(*newval, &cpus, &error))
            return true;
        snprintf(why, sizeof why, "%s", error.c_str());
        return false;
    });
    if (ok)
        return true;
    GUC_check_errdetail("courier.worker_cpus: %s.", why);
    GUC_check_errhint("Leave it empty to let the kernel place the worker among the sessions.");
    return false;
}

/*
 * courier.worker_cpus: the postmaster leaves the worker's CPUs before it
 * forks anything, so that every other process of the server inherits the
 * rest (courier/worker/placement.h); the worker takes them when it starts.
 */
void place_postmaster() {
    if (guc_worker_cpus == nullptr || guc_worker_cpus[0] == '\0')
        return;
    char why[512] = "";
    worker::CpuSet rest;
    pg::door([&] {
        worker::CpuSet allowed;
        std::string error;
        if (!worker::parse_cpu_list(guc_worker_cpus, &worker_cpus, &error) ||
            !worker::allowed_cpus(&allowed, &error) || !worker::split_cpus(allowed, worker_cpus, &rest, &error) ||
            !worker::run_on(rest, &error))
            snprintf(why, sizeof why, "%s", error.c_str());
    });
    if (why[0] != '\0')
        ereport(FATAL, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid courier.worker_cpus: %s", why),
                        errhint("Name CPUs this server may use (see taskset -cp on the postmaster), or leave "
                                "courier.worker_cpus empty.")));
    ereport(LOG, (errmsg("courier worker runs on CPUs %s, the rest of the server on CPUs %s",
                         worker::format_cpu_list(worker_cpus).c_str(), worker::format_cpu_list(rest).c_str())));
}

bool check_ring_size(int *newval, void **, GucSource) {
    const int v = *newval;
    if (v <= 0 || (v & (v - 1)) != 0) {
        GUC_check_errdetail("courier.ring_size must be a power of two (for example 64kB or 1MB).");
        return false;
    }
    return true;
}

void remove_stats_segment(int, Datum) {
    if (stats_base != nullptr)
        munmap(stats_base, stats_size);
    stats_base = nullptr;
    if (stats_name[0] != '\0')
        shm_unlink(stats_name);
}

/*
 * Creates the segment's file, or returns -1 when the name is taken by
 * another user. One of ours (left by a postmaster that was killed) is
 * replaced. Someone else's is left alone: that user could otherwise feed
 * the exporter numbers of their own, or keep the server from starting.
 */
int create_segment_file() {
    int fd = shm_open(stats_name, O_CREAT | O_EXCL | O_RDWR, 0640);
    if (fd >= 0 || errno != EEXIST)
        return fd >= 0 ? fd : -2;
    char path[96];
    snprintf(path, sizeof path, "%s", ipc::stats_segment_path(PostPortNumber).c_str());
    struct stat st {};
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid()) {
        shm_unlink(stats_name);
        fd = shm_open(stats_name, O_CREAT | O_EXCL | O_RDWR, 0640);
        return fd >= 0 ? fd : -2;
    }
    const struct passwd *owner = getpwuid(st.st_uid);
    ereport(WARNING,
            (errmsg("courier statistics segment \"%s\" belongs to user \"%s\" (uid %u), not to this server: not using it",
                    path, owner != nullptr ? owner->pw_name : "?", static_cast<unsigned>(st.st_uid)),
             errdetail("The server keeps courier's statistics in private memory instead: courier.stats() works, "
                       "but courier_exporter reports courier_up 0 for this cluster."),
             errhint("Another local user created that file. Remove it as root (rm %s) and restart the server.", path)));
    return -1;
}

ipc::StatsView create_stats_segment(std::uint32_t slots) {
    remove_stats_segment(0, 0);  // a previous life of this postmaster, or a crash
    snprintf(stats_name, sizeof stats_name, "%s", ipc::stats_segment_name(PostPortNumber).c_str());
    stats_size = ipc::stats_segment_size(slots);
    const int fd = create_segment_file();
    if (fd == -2)
        ereport(FATAL, (errcode_for_file_access(),
                        errmsg("could not create courier stats segment \"%s\": %m", stats_name)));
    if (fd == -1) {
        stats_name[0] = '\0';  // not ours: nothing to remove at exit
        stats_base = mmap(nullptr, stats_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else {
        if (fchmod(fd, 0640) != 0 || ftruncate(fd, static_cast<off_t>(stats_size)) != 0) {
            close(fd);
            ereport(FATAL, (errcode_for_file_access(),
                            errmsg("could not size courier stats segment \"%s\": %m", stats_name)));
        }
        stats_base = mmap(nullptr, stats_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    }
    if (stats_base == MAP_FAILED) {
        stats_base = nullptr;
        ereport(FATAL, (errmsg("could not map courier stats segment \"%s\": %m", stats_name)));
    }
    if (!stats_cleanup_registered) {
        on_proc_exit(remove_stats_segment, 0);
        stats_cleanup_registered = true;
    }
    return ipc::StatsView::create(stats_base, stats_size, slots);
}

void shmem_request() {
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
    RequestAddinShmemSpace(layout_or_fatal().request_size);
}

void shmem_startup() {
    pg::door([&] {
        if (prev_shmem_startup_hook)
            prev_shmem_startup_hook();
        const ipc::RegionLayout layout = layout_or_fatal();
        LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
        bool found = false;
        void *raw = ShmemInitStruct("courier", layout.request_size, &found);
        auto *base = reinterpret_cast<void *>((reinterpret_cast<std::uintptr_t>(raw) + ipc::cache_line - 1) &
                                              ~static_cast<std::uintptr_t>(ipc::cache_line - 1));
        if (!found) {
            const ipc::StatsView stats = create_stats_segment(layout.params.slots);
            std::vector<std::string> names;
            for (const auto &r : runtimes)
                names.push_back(r.name);
            stats.set_runtimes(names);
            region = ipc::Region::create(base, layout, stats);
            if (worker_cpus.any())
                region.lift_spinner_cap();  // no session spins on the worker's CPUs
            region_ready = true;
        }
        LWLockRelease(AddinShmemInitLock);
    });
}

/*
 * PostgreSQL only warns about an invalid value of an extension's setting
 * in postgresql.conf and starts with the default, which an operator may
 * not notice for a long time. courier refuses to start instead: the raw
 * values are read before the settings are defined and applied again
 * afterwards at ERROR level, which is FATAL in the postmaster.
 */
constexpr const char *setting_names[] = {"courier.slots",          "courier.ring_size",   "courier.max_message_size",
                                         "courier.runtimes",       "courier.runtime",     "courier.worker_threads",
                                         "courier.spin_us",        "courier.call_timeout", "courier.slot_wait_timeout",
                                         "courier.enabled",        "courier.worker_cpus"};
char *raw_settings[std::size(setting_names)];

void remember_raw_settings() {
    for (std::size_t i = 0; i < std::size(setting_names); ++i) {
        const char *value = GetConfigOption(setting_names[i], true, false);
        raw_settings[i] = value != nullptr ? MemoryContextStrdup(TopMemoryContext, value) : nullptr;
    }
}

void refuse_invalid_settings() {
    for (std::size_t i = 0; i < std::size(setting_names); ++i)
        if (raw_settings[i] != nullptr)
            (void)set_config_option(setting_names[i], raw_settings[i], PGC_POSTMASTER, PGC_S_FILE, GUC_ACTION_SET, true,
                                    ERROR, false);
}

void define_gucs() {
    remember_raw_settings();
    DefineCustomIntVariable("courier.slots", "Number of courier slots (concurrent sessions).",
                            "Each backend that calls courier holds one slot for its session. "
                            "courier-config computes it from the expected concurrency.",
                            &guc_slots, 64, 1, static_cast<int>(ipc::max_slots), PGC_POSTMASTER, 0,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("courier.ring_size", "Size of each of a slot's two rings.",
                            "A power of two between 4kB and 1GB. Larger messages stream through the ring.",
                            &guc_ring_size_kb, 64, static_cast<int>(ipc::min_ring_size / 1024),
                            static_cast<int>(ipc::max_ring_size / 1024), PGC_POSTMASTER, GUC_UNIT_KB,
                            check_ring_size, nullptr, nullptr);
    DefineCustomIntVariable("courier.max_message_size", "Largest request or response courier accepts.",
                            "The payload of a request or response, enforced by both sides; a larger one fails the call. "
                            "At most 1 GB - 1 kB, what a bytea in one allocation can hold.",
                            &guc_max_message_size_kb, 64 * 1024, 1, static_cast<int>(ipc::max_max_message_size / 1024),
                            PGC_POSTMASTER,
                            GUC_UNIT_KB, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("courier.runtimes", "Runtime libraries the courier worker loads after fork.",
                               "Comma-separated, each name=library or library (a file in the server's library "
                               "directory, or an absolute path). A call names its runtime as 'name.function'; "
                               "a call without a name goes to the first.",
                               &guc_runtimes, "courier_echo", PGC_POSTMASTER, 0, check_runtimes, nullptr, nullptr);
    DefineCustomStringVariable("courier.runtime", "Obsolete: use courier.runtimes.", nullptr, &guc_runtime_obsolete,
                               "", PGC_POSTMASTER, GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("courier.worker_threads", "Threads of the courier worker's pool, per runtime.",
                            "Callback-mode runtimes (ABI v1, v2 callback) each get this many threads; "
                            "driven-mode runtimes get it as a hint for their own.",
                            &guc_worker_threads, 4, 1, ipc::max_worker_threads, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("courier.spin_us",
                            "Microseconds a waiting side spins before it sleeps on its latch.",
                            "0 sleeps at once (lowest CPU use, highest latency).", &guc_spin_us, 50, 0,
                            1000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("courier.call_timeout", "Longest a courier call may take; 0 waits forever.",
                            nullptr, &guc_call_timeout_ms, 0, 0, INT_MAX, PGC_USERSET, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("courier.slot_wait_timeout",
                            "How long a call waits for a free courier slot, or for the courier worker to start, before it fails.", nullptr,
                            &guc_slot_wait_timeout_ms, 5000, 0, INT_MAX, PGC_USERSET, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    DefineCustomStringVariable("courier.worker_cpus", "CPUs the courier worker has to itself; empty: none.",
                               "A CPU list such as '0' or '0-1'. The rest of the server leaves these CPUs to the "
                               "worker and its runtimes' threads. Sessions that outnumber the CPUs then keep theirs "
                               "from one call to the next.",
                               &guc_worker_cpus, "", PGC_POSTMASTER, 0, check_worker_cpus, nullptr, nullptr);
    define_enabled_setting();  // session.cc: courier.enabled and its assign hook
    MarkGUCPrefixReserved("courier");
    refuse_invalid_settings();
}

void register_worker() {
    BackgroundWorker w;
    std::memset(&w, 0, sizeof w);
    w.bgw_flags = BGWORKER_SHMEM_ACCESS;
    w.bgw_start_time = BgWorkerStart_PostmasterStart;
    w.bgw_restart_time = 1;
    snprintf(w.bgw_name, BGW_MAXLEN, "courier worker");
    snprintf(w.bgw_type, BGW_MAXLEN, "courier");
    snprintf(w.bgw_library_name, BGW_MAXLEN, "courier");
    snprintf(w.bgw_function_name, BGW_MAXLEN, "courier_worker_main");
    RegisterBackgroundWorker(&w);
    /* PostgreSQL's own message when max_worker_processes is used up does not say whose worker it is. */
    /* Walked by hand: the ilist iteration macros are C-only. PostgreSQL 18 made the list doubly linked (and circular). */
#if PG_VERSION_NUM >= 180000
    using WorkerNode = dlist_node;
#else
    using WorkerNode = slist_node;
#endif
    for (const WorkerNode *n = BackgroundWorkerList.head.next; n != nullptr && n != &BackgroundWorkerList.head;
         n = n->next) {
        const auto *rw = reinterpret_cast<const RegisteredBgWorker *>(reinterpret_cast<const char *>(n) -
                                                                      offsetof(RegisteredBgWorker, rw_lnode));
        if (strcmp(rw->rw_worker.bgw_library_name, "courier") == 0)
            return;
    }
    ereport(WARNING, (errmsg("courier could not register its background worker: max_worker_processes (%d) is used up",
                             max_worker_processes),
                      errdetail("Every courier call will fail with \"the courier worker has not started\"."),
                      errhint("Raise max_worker_processes by one and restart the server "
                              "(courier-config generate includes it).")));
}

}  // namespace

ipc::Region *shared_region() { return region_ready ? &region : nullptr; }

const std::vector<worker::RuntimeSpec> &runtime_specs() { return runtimes; }

int runtime_index(std::string_view name) {
    for (std::size_t i = 0; i < runtimes.size(); ++i)
        if (runtimes[i].name == name)
            return static_cast<int>(i);
    return -1;
}

const char *runtime_names() { return runtime_list.c_str(); }

std::chrono::nanoseconds spin_budget() { return std::chrono::microseconds(guc_spin_us); }

const worker::CpuSet &worker_cpu_set() { return worker_cpus; }

}  // namespace courier::ext

extern "C" void _PG_init(void) {
    courier::pg::door([&] {
        using namespace courier::ext;
        if (!process_shared_preload_libraries_in_progress)
            ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                            errmsg("courier must be loaded via shared_preload_libraries"),
                            errhint("Add 'courier' to shared_preload_libraries (courier-config install writes it, "
                                    "with the sizes) and restart the server.")));
        define_gucs();
        load_runtime_list();
        layout_or_fatal();  // refuse bad settings before the postmaster allocates anything
        place_postmaster();
        prev_shmem_request_hook = shmem_request_hook;
        shmem_request_hook = shmem_request;
        prev_shmem_startup_hook = shmem_startup_hook;
        shmem_startup_hook = shmem_startup;
        register_worker();
    });
}
