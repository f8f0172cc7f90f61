#include "cluster.h"

#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef COURIER_PG_BINDIR
#error "COURIER_PG_BINDIR must name the server's bin directory"
#endif

namespace courier::test {
namespace {

bool running_as_root() { return geteuid() == 0; }

/* The server's bin directory: COURIER_PG_BINDIR from the environment (another major), else the build's. */
std::string bin_dir() {
    const char *env = std::getenv("COURIER_PG_BINDIR");
    return env != nullptr && env[0] != '\0' ? env : COURIER_PG_BINDIR;
}

int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
        close(fd);
        throw std::runtime_error("no free port");
    }
    const int port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

}  // namespace

int run_as_server_user(const std::string &command) {
    const std::string full = running_as_root() ? "runuser -u postgres -- sh -c '" + command + "'" : command;
    const int rc = std::system(full.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

Cluster::Cluster(const std::vector<std::string> &settings, bool preload) {
    char tmpl[] = "/tmp/courier-pg-XXXXXX";
    if (mkdtemp(tmpl) == nullptr)
        throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (running_as_root() && std::system(("chown postgres " + dir_).c_str()) != 0)
        throw std::runtime_error("cannot chown the cluster directory to postgres");
    port_ = free_port();
    const std::string bin = bin_dir();
    if (run_as_server_user(bin + "/initdb -D " + dir_ + "/data -A trust -U postgres --no-sync >" + dir_ +
                           "/initdb.log 2>&1") != 0)
        throw std::runtime_error("initdb failed: see " + dir_ + "/initdb.log");
    std::ostringstream conf;
    conf << "port = " << port_ << "\nlisten_addresses = ''\nunix_socket_directories = '" << dir_
         << "'\nfsync = off\nmax_connections = 40\n";
    if (preload)
        conf << "shared_preload_libraries = 'courier'\n";
    for (const auto &s : settings)
        conf << s << "\n";
    {
        std::ofstream f(dir_ + "/courier.conf");
        f << conf.str();
    }
    if (run_as_server_user("cat " + dir_ + "/courier.conf >> " + dir_ + "/data/postgresql.conf") != 0)
        throw std::runtime_error("cannot write postgresql.conf");
    start();
}

bool Cluster::start() {
    if (!running_)
        running_ = run_as_server_user(bin_dir() + "/pg_ctl -D " + dir_ + "/data -l " + dir_ +
                                      "/server.log -w -t 60 start >/dev/null") == 0;
    return running_;
}

Cluster::~Cluster() {
    stop();
    if (std::getenv("COURIER_KEEP_CLUSTERS") == nullptr)
        std::system(("rm -rf " + dir_).c_str());
}

void Cluster::stop() {
    if (!running_)
        return;
    run_as_server_user(bin_dir() + "/pg_ctl -D " + dir_ + "/data -m fast -w stop >/dev/null 2>&1");
    running_ = false;
}

Conn Cluster::connect(const std::string &user) const {
    const std::string info = "host=" + dir_ + " port=" + std::to_string(port_) + " user=" + user + " dbname=postgres";
    return Conn(PQconnectdb(info.c_str()));
}

Conn Cluster::connect_when_ready(int seconds) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    for (;;) {
        Conn c = connect();
        if (c.ok() || std::chrono::steady_clock::now() > end)
            return c;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

std::string Cluster::log() const {
    std::ifstream f(dir_ + "/server.log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

pid_t Cluster::postmaster_pid() const {
    std::ifstream f(dir_ + "/data/postmaster.pid");
    pid_t pid = -1;
    f >> pid;
    return pid;
}

std::optional<Result> Conn::exec(const std::string &sql, std::string *error) {
    Result r(PQexec(conn_, sql.c_str()));
    const auto st = PQresultStatus(r.get());
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    if (error != nullptr)
        *error = PQerrorMessage(conn_);
    return std::nullopt;
}

std::string Conn::value(const std::string &sql) {
    std::string error;
    auto r = exec(sql, &error);
    if (!r)
        throw std::runtime_error(sql + ": " + error);
    if (PQntuples(r->get()) < 1)
        throw std::runtime_error(sql + ": no rows");
    return PQgetvalue(r->get(), 0, 0);
}

std::optional<std::string> Conn::bytea(const std::string &sql, const std::string &param, std::string *error) {
    const char *values[1] = {param.data()};
    const int lengths[1] = {static_cast<int>(param.size())};
    const int formats[1] = {1};
    Result r(PQexecParams(conn_, sql.c_str(), 1, nullptr, values, lengths, formats, 1));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
        if (error != nullptr)
            *error = PQerrorMessage(conn_);
        return std::nullopt;
    }
    return std::string(PQgetvalue(r.get(), 0, 0), static_cast<std::size_t>(PQgetlength(r.get(), 0, 0)));
}

int thread_count(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("Threads:", 0) == 0)
            return std::stoi(line.substr(8));
    return -1;
}

bool eventually(const std::function<bool()> &cond, double seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
        if (cond())
            return true;
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::string outcome(Conn &c) {
    std::string result;
    while (PGresult *r = PQgetResult(c.raw())) {
        const auto st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && PQntuples(r) > 0)
            result = PQgetvalue(r, 0, 0);
        else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            result = std::string("ERROR: ") + PQresultErrorMessage(r);
        PQclear(r);
    }
    return result;
}

std::vector<std::string> threads_taking_postgres_signals(pid_t pid, int *others) {
    std::vector<std::string> taking;
    *others = 0;
    for (const auto &task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
        if (task.path().filename() == std::to_string(pid))
            continue;
        std::ifstream f(task.path() / "status");
        unsigned long long blocked = 0;
        for (std::string line; std::getline(f, line);)
            if (line.rfind("SigBlk:", 0) == 0)
                blocked = std::stoull(line.substr(7), nullptr, 16);
        for (int sig : {SIGTERM, SIGHUP, SIGINT, SIGUSR1, SIGUSR2, SIGURG, SIGQUIT})
            if (!(blocked & (1ull << (sig - 1))))
                taking.push_back(task.path().string() + " takes signal " + std::to_string(sig));
        ++*others;
    }
    return taking;
}

std::vector<int> own_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &set))
                cpus.push_back(cpu);
    return cpus;
}

}  // namespace courier::test
