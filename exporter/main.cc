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

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include <prometheus/exposer.h>

#include "collector.h"

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
           "  --version, --help\n";
    std::exit(status);
}

/* The port of the cluster in `dir`: postmaster.pid's 4th line, else postgresql.conf, else 5432. */
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

}  // namespace

int main(int argc, char **argv) {
    auto flags = parse(argc, argv);
    int port = 5432;
    if (flags.count("courier.data-directory"))
        port = port_of(flags["courier.data-directory"]);
    if (flags.count("courier.port")) {
        char *end = nullptr;
        port = static_cast<int>(std::strtol(flags["courier.port"].c_str(), &end, 10));
        if (*end != '\0' || port < 1 || port > 65535)
            usage("--courier.port expects a port number, got " + flags["courier.port"]);
    }
    std::string password;
    if (flags.count("web.basic-auth-user")) {
        std::ifstream f(flags["web.basic-auth-password-file"]);
        if (!flags.count("web.basic-auth-password-file") || !std::getline(f, password) || password.empty())
            usage("--web.basic-auth-user needs --web.basic-auth-password-file naming a file with the password");
    }

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
    auto collector = std::make_shared<courier::exporter::StatsCollector>(courier::exporter::segment_name(port));
    exposer->RegisterCollectable(collector, path);
    if (flags.count("web.basic-auth-user")) {
        const std::string user = flags["web.basic-auth-user"];
        exposer->RegisterAuth([user, password](const std::string &u, const std::string &p) { return u == user && p == password; },
                              "courier_exporter", path);
    }
    std::cerr << "courier_exporter " << COURIER_VERSION << ": serving " << path << " on " << flags["web.listen-address"]
              << " for the cluster on port " << port << "\n";
    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}
