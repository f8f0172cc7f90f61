/*
 * cluster.h — a throwaway PostgreSQL cluster for integration tests.
 *
 * initdb in a fresh directory under /tmp, a free port, the socket in that
 * directory (no TCP), courier preloaded unless asked otherwise, started with
 * pg_ctl. When the tests run as root the server runs as the `postgres`
 * user (PostgreSQL refuses root). Clients talk to it through libpq. The
 * server is the build's, or another major's when COURIER_PG_BINDIR names
 * its bin directory (scripts/pg-majors).
 */
#pragma once

#include <libpq-fe.h>
#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace courier::test {

struct PGresultDeleter {
    void operator()(PGresult *r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, PGresultDeleter>;

class Conn {
public:
    explicit Conn(PGconn *c) : conn_(c) {}
    Conn(Conn &&o) noexcept : conn_(o.conn_) { o.conn_ = nullptr; }
    ~Conn() {
        if (conn_ != nullptr)
            PQfinish(conn_);
    }
    bool ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
    PGconn *raw() const { return conn_; }

    /* Runs sql; on success returns the result, on error nullopt and *error. */
    std::optional<Result> exec(const std::string &sql, std::string *error = nullptr);
    /* First column of the first row as text; throws on error. */
    std::string value(const std::string &sql);
    /* sql with one binary bytea parameter $1; returns the bytea result or the error. */
    std::optional<std::string> bytea(const std::string &sql, const std::string &param, std::string *error);
    int backend_pid() const { return PQbackendPID(conn_); }

private:
    PGconn *conn_;
};

/* The outcome of a query sent with PQsendQuery: its first value, or "ERROR: ..." (waits for it). */
std::string outcome(Conn &c);

/*
 * The threads of `pid` other than its main one that can take a signal PostgreSQL sends (SIGTERM,
 * SIGHUP, SIGINT, SIGUSR1, SIGUSR2, SIGURG, SIGQUIT), as "TASK takes SIG"; *others counts them all.
 */
std::vector<std::string> threads_taking_postgres_signals(pid_t pid, int *others);

class Cluster {
public:
    explicit Cluster(const std::vector<std::string> &settings = {}, bool preload = true);
    ~Cluster();
    Cluster(const Cluster &) = delete;
    Cluster &operator=(const Cluster &) = delete;

    bool running() const { return running_; }
    Conn connect(const std::string &user = "postgres") const;
    /* Retries for a while: after a crash restart the server refuses connections briefly. */
    Conn connect_when_ready(int seconds = 30) const;
    std::string log() const;
    pid_t postmaster_pid() const;
    int port() const { return port_; }
    void stop();
    /* Starts it again after stop(); true when it runs. */
    bool start();

private:
    std::string dir_;
    int port_ = 0;
    bool running_ = false;
};

/* Runs a shell command as the server's user; returns its exit status. */
int run_as_server_user(const std::string &command);
/* Threads of a process, from /proc/<pid>/status (-1 if unknown). */
int thread_count(pid_t pid);
/* Polls cond every 20 ms for up to `seconds`. */
bool eventually(const std::function<bool()> &cond, double seconds);

/* The CPUs this process may use (its affinity mask), lowest first. */
std::vector<int> own_cpus();

}  // namespace courier::test
