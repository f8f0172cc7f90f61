/*
 * courier_exporter — serves courier's counters to Prometheus.
 *
 *   courier_exporter [--web.listen-address=127.0.0.1:9471] [--web.telemetry-path=/metrics]
 *                    [--courier.port=5432 | --courier.data-directory=DIR]
 *                    [--web.basic-auth-user=USER --web.basic-auth-password-file=FILE]
 *
 * It reads courier's statistics segment of the cluster on that port
 * (/dev/shm/courier-<port>) read-only, and needs no database connection.
 * A data directory names the cluster by the port in its postmaster.pid or
 * postgresql.conf. Runs until SIGINT or SIGTERM.
 */
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include <prometheus/exposer.h>

#include "courier/exporter/collector.h"
#include "courier/exporter/metrics.h"
#include "courier/ipc/stats.h"

#ifndef COURIER_VERSION
#define COURIER_VERSION "unknown"
#endif

namespace {

[[noreturn]] void usage(const std::string &why, int status = 2) {
    (status == 0 ? std::cout : std::cerr)
        << (why.empty() ? "" : "courier_exporter: " + why + "\n")
        << "usage: courier_exporter [flags]\n"
           "  --web.listen-address=ADDR        where to serve (default 127.0.0.1:9471)\n"
           "  --web.telemetry-path=PATH        metrics path (default /metrics)\n"
           "  --courier.port=PORT              the cluster's port (default 5432)\n"
           "  --courier.data-directory=DIR     or its data directory (port from postmaster.pid / postgresql.conf)\n"
           "  --web.basic-auth-user=USER       require HTTP basic auth with this user...\n"
           "  --web.basic-auth-password-file=F ...and the password in this file\n"
           "  --metrics-markdown               print the metrics served, as exporter/METRICS.md\n"
           "  --version, --help\n";
    std::exit(status);
}

/* The port of the cluster in `dir`: postmaster.pid's 4th line while it runs, else postgresql.conf, else 5432. */
int port_of(const std::string &dir) {
    std::ifstream pid(dir + "/postmaster.pid");
    std::string line;
    for (int i = 0; i < 4 && std::getline(pid, line); ++i)
        if (i == 3 && !line.empty())
            return std::stoi(line);
    std::ifstream conf(dir + "/postgresql.conf");
    while (std::getline(conf, line)) {
        const auto p = line.find_first_not_of(" \t");
        if (p != std::string::npos && line.compare(p, 4, "port") == 0) {
            const auto digits = line.find_first_of("0123456789", p + 4);
            if (digits != std::string::npos)
                return std::stoi(line.substr(digits));
        }
    }
    return 5432;
}

std::map<std::string, std::string> parse(int argc, char **argv) {
    std::map<std::string, std::string> flags = {{"web.listen-address", "127.0.0.1:9471"},
                                                 {"web.telemetry-path", "/metrics"}};
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h")
            usage("", 0);
        if (a == "--version") {
            std::cout << "courier_exporter " << COURIER_VERSION << "\n";
            std::exit(0);
        }
        if (a == "--metrics-markdown") {
            std::cout << courier::exporter::metrics_markdown();
            std::exit(0);
        }
        if (a.rfind("--", 0) != 0)
            usage("unexpected argument " + a);
        a = a.substr(2);
        std::string value;
        if (const auto eq = a.find('='); eq != std::string::npos) {
            value = a.substr(eq + 1);
            a = a.substr(0, eq);
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            usage("--" + a + " needs a value");
        }
        static const char *known[] = {"web.listen-address", "web.telemetry-path", "courier.port",
                                      "courier.data-directory", "web.basic-auth-user", "web.basic-auth-password-file"};
        bool ok = false;
        for (const char *k : known)
            ok = ok || a == k;
        if (!ok)
            usage("unknown flag --" + a);
        flags[a] = value;
    }
    return flags;
}

struct BasicAuth {
    std::string user;
    std::string password;
};

/*
 * Both flags or neither: with only one, /metrics would be served to anyone.
 * The password file must be a regular file of the exporter's user (or
 * root) that no other user may read or write.
 */
std::optional<BasicAuth> basic_auth(std::map<std::string, std::string> &flags) {
    const bool user = flags.count("web.basic-auth-user") != 0, file = flags.count("web.basic-auth-password-file") != 0;
    if (!user && !file)
        return std::nullopt;
    if (!user || !file || flags["web.basic-auth-user"].empty())
        usage("basic auth needs both --web.basic-auth-user and --web.basic-auth-password-file "
              "(with only one, /metrics would be served without authentication)");
    const std::string path = flags["web.basic-auth-password-file"];
    struct stat st {};
    if (stat(path.c_str(), &st) != 0)
        usage("cannot read the password file " + path + ": " + std::strerror(errno), 1);
    if (!S_ISREG(st.st_mode))
        usage("the password file " + path + " is not a regular file", 1);
    if ((st.st_mode & 0027) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        usage("the password file " + path + " has mode " + mode + ": other users may read or change it (chmod 600 it)", 1);
    }
    if (st.st_uid != geteuid() && st.st_uid != 0)
        usage("the password file " + path + " belongs to uid " + std::to_string(st.st_uid) +
                  ", neither the exporter's user nor root", 1);
    BasicAuth auth{flags["web.basic-auth-user"], ""};
    std::ifstream f(path);
    if (!std::getline(f, auth.password) || auth.password.empty())
        usage("the password file " + path + " is empty: its first line is the password", 1);
    return auth;
}

/* Compares in time that depends on the secret's length only, not on where they differ. */
bool same_secret(const std::string &given, const std::string &secret) {
    unsigned char diff = given.size() != secret.size() ? 1 : 0;
    for (std::size_t i = 0; i < secret.size(); ++i)
        diff |= static_cast<unsigned char>((i < given.size() ? given[i] : 0) ^ secret[i]);
    return diff == 0;
}

/* The server's user: the data directory's owner, else whoever runs the exporter. */
uid_t server_user(std::map<std::string, std::string> &flags) {
    struct stat st {};
    if (flags.count("courier.data-directory") && stat(flags["courier.data-directory"].c_str(), &st) == 0)
        return st.st_uid;
    return geteuid();
}

}  // namespace

int main(int argc, char **argv) {
    auto flags = parse(argc, argv);
    /* A given port is fixed; a data directory's is read on every scrape (postmaster.pid exists only while it runs). */
    courier::exporter::StatsCollector::SegmentName segment = [] { return courier::ipc::stats_segment_name(5432); };
    std::string cluster = "the cluster on port 5432";
    if (flags.count("courier.data-directory")) {
        const std::string dir = flags["courier.data-directory"];
        segment = [dir] { return courier::ipc::stats_segment_name(port_of(dir)); };
        cluster = "the cluster in " + dir;
    }
    if (flags.count("courier.port")) {
        char *end = nullptr;
        const int port = static_cast<int>(std::strtol(flags["courier.port"].c_str(), &end, 10));
        if (*end != '\0' || port < 1 || port > 65535)
            usage("--courier.port expects a port number, got " + flags["courier.port"]);
        segment = [port] { return courier::ipc::stats_segment_name(port); };
        cluster = "the cluster on port " + std::to_string(port);
    }
    const std::optional<BasicAuth> auth = basic_auth(flags);

    /* Signals go to sigwait below, not to the server's threads. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    std::unique_ptr<prometheus::Exposer> exposer;
    try {
        exposer = std::make_unique<prometheus::Exposer>(flags["web.listen-address"], 2);
    } catch (const std::exception &e) {
        std::cerr << "courier_exporter: cannot listen on " << flags["web.listen-address"] << ": " << e.what() << "\n";
        return 1;
    }
    const std::string path = flags["web.telemetry-path"];
    auto collector = std::make_shared<courier::exporter::StatsCollector>(segment, server_user(flags));
    exposer->RegisterCollectable(collector, path);
    if (auth)
        exposer->RegisterAuth([auth](const std::string &u, const std::string &p) {
            return same_secret(u, auth->user) & same_secret(p, auth->password);  // both, always: no early exit
        }, "courier_exporter", path);
    std::cerr << "courier_exporter " << COURIER_VERSION << ": serving " << path << " on " << flags["web.listen-address"]
              << " for " << cluster << "\n";
    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}
