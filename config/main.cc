/*
 * courier-config — size courier from a YAML description of the workload.
 *
 *   courier-config generate config.yaml [--out FILE] [SOURCE]
 *   courier-config explain  config.yaml [SOURCE]
 *   courier-config check    config.yaml --dsn DSN
 *   courier-config install  config.yaml (--cluster 15/main | --conf-dir DIR) [--pgdata DIR] [--yes] [--dry-run]
 *
 * SOURCE tells what the cluster already has (shared_preload_libraries,
 * max_worker_processes, max_connections): --pgdata DIR, --cluster 15/main,
 * --conf-dir DIR, --dsn DSN, or --preload 'a,b' verbatim.
 *
 * Exit status: 0 done (check: agrees), 1 check found differences or install
 * needs --yes, 2 bad input or usage. Nothing is written on an error; files
 * are written to a temporary name and renamed.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <libpq-fe.h>

#include "courier/worker/placement.h"
#include "pgconf.h"
#include "plan.h"

#ifndef COURIER_VERSION
#define COURIER_VERSION "unknown"
#endif

namespace fs = std::filesystem;
using namespace courier;
using namespace courier::config;

namespace {

struct Args {
    std::string command, file, out, pgdata, cluster, conf_dir, dsn, preload;
    bool have_preload = false, yes = false, dry_run = false;
};

/* The whole help; the manual page is made from it (help2man), so it is said once. */
constexpr const char *help_text =
    "Usage: courier-config COMMAND CONFIG.yaml [OPTION]...\n"
    "Size courier for a PostgreSQL cluster from a YAML description of its load, and\n"
    "write or check the postgresql.conf settings.\n"
    "\n"
    "Commands:\n"
    "  generate     print the commented postgresql.conf snippet (--out FILE writes it)\n"
    "  explain      show every computed value, its inputs and its rule\n"
    "  check        compare a running server (--dsn) with the recommendation\n"
    "  install      write conf.d/50-courier.conf of a cluster (a restart applies it)\n"
    "\n"
    "Options:\n"
    "  --cluster VERSION/NAME  a Debian cluster: /etc/postgresql/VERSION/NAME (as 15/main)\n"
    "  --conf-dir DIR          the directory that holds postgresql.conf\n"
    "  --pgdata DIR            a data directory that holds postgresql.conf\n"
    "  --dsn DSN               read settings from, or check, a running server\n"
    "  --preload LIST          the current shared_preload_libraries, instead of reading it\n"
    "  --out FILE              generate: write the snippet to FILE\n"
    "  --yes                   install: add include_dir = 'conf.d' to postgresql.conf if it\n"
    "                          lacks it (backed up first)\n"
    "  --dry-run               install: show what would be written, write nothing\n"
    "  --help                  display this help and exit\n"
    "  --version               output version information and exit\n"
    "\n"
    "The YAML fields: sessions (calls at once: a count, or N% of max_connections),\n"
    "typical_message_size, largest_message_size, memory_budget (sizes as 64kB, 16MB),\n"
    "and optionally max_connections (a number, or 'server' to read it), worker_threads\n"
    "(a number or 'auto'), worker_cpus (CPUs the worker has to itself, as '0-1', or\n"
    "none), latency_policy (latency, balanced or efficiency) and postgres_version\n"
    "(15 to 18). Examples are in /usr/share/courier/examples/.\n"
    "\n"
    "Libraries already in shared_preload_libraries are kept, in order. Files are\n"
    "written to a new temporary file in the same directory with the owner and mode\n"
    "of the file they replace, then renamed; nothing is written on an error.\n"
    "\n"
    "Exit status: 0 done (check: the server agrees); 1 check found a difference, or\n"
    "install needs --yes; 2 bad input or usage.\n"
    "\n"
    "Examples:\n"
    "  courier-config install /usr/share/courier/examples/small.yaml --cluster 15/main --yes\n"
    "  sudo pg_ctlcluster 15 main restart\n"
    "  courier-config check my-load.yaml --dsn 'dbname=postgres'\n";

[[noreturn]] void usage(const std::string &why) {
    std::cerr << "courier-config: " << why << "\nTry 'courier-config --help' for more information.\n";
    std::exit(2);
}

Args parse_args(int argc, char **argv) {
    Args a;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string s = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                usage(s + " needs a value");
            return argv[++i];
        };
        if (s == "--help" || s == "-h") {
            std::cout << help_text;
            std::exit(0);
        } else if (s == "--version") {
            std::cout << "courier-config " << COURIER_VERSION << "\n";
            std::exit(0);
        } else if (s == "--out") {
            a.out = value();
        } else if (s == "--pgdata") {
            a.pgdata = value();
        } else if (s == "--cluster") {
            a.cluster = value();
        } else if (s == "--conf-dir") {
            a.conf_dir = value();
        } else if (s == "--dsn") {
            a.dsn = value();
        } else if (s == "--preload") {
            a.preload = value();
            a.have_preload = true;
        } else if (s == "--yes") {
            a.yes = true;
        } else if (s == "--dry-run") {
            a.dry_run = true;
        } else if (!s.empty() && s[0] == '-') {
            usage("unknown option " + s);
        } else {
            positional.push_back(s);
        }
    }
    if (positional.size() != 2)
        usage("expected a command and a YAML file");
    a.command = positional[0];
    a.file = positional[1];
    if (!a.cluster.empty()) {
        const auto slash = a.cluster.find('/');
        if (slash == std::string::npos)
            usage("--cluster expects VERSION/NAME, for example 15/main");
        if (a.conf_dir.empty())
            a.conf_dir = "/etc/postgresql/" + a.cluster;
    }
    return a;
}

Existing existing_for(const Args &a) {
    if (a.have_preload) {
        Existing e;
        e.preload = split_list(a.preload);
        e.source = "--preload; other settings at PostgreSQL's defaults";
        return e;
    }
    if (!a.dsn.empty())
        return existing_from_server(a.dsn);
    if (!a.conf_dir.empty())
        return existing_from_files(a.conf_dir, a.pgdata);
    if (!a.pgdata.empty()) {
        const fs::path data = fs::path(a.pgdata).lexically_normal();
        if (!fs::exists(data / "postgresql.conf") && data.parent_path().parent_path() == "/var/lib/postgresql")
            throw InputError(a.pgdata + " holds no postgresql.conf: on Debian's layout the configuration is in "
                             "/etc/postgresql; use --cluster " + data.parent_path().filename().string() + "/" +
                             data.filename().string());
        return existing_from_files(a.pgdata, a.pgdata);
    }
    return Existing{};
}

std::string render(const Plan &plan, const std::string &file) {
    std::ostringstream os;
    os << "# courier settings generated by courier-config " << COURIER_VERSION << " from " << file << ".\n"
       << "# Regenerate rather than edit: courier-config explain " << file << " shows the rules.\n";
    for (const Setting &s : plan.settings)
        os << "\n# " << s.rule << ".\n#   from: " << s.inputs << "\n" << s.name << " = " << s.value << "\n";
    os << "\n# courier's shared memory: " << human_bytes(plan.region_bytes) << " (" << plan.region_bytes
       << " bytes) in PostgreSQL's segment,\n# plus " << human_bytes(plan.stats_bytes)
       << " of statistics in /dev/shm/courier-<port>.\n";
    return os.str();
}

/*
 * Replaces `path` with `text` so that a reader sees the old file or the new
 * one, never a mix, and nothing is written through a link someone planted
 * (courier-config install runs as root in a directory the server's user
 * may write): the text goes to a new file that mkstemp makes in the same
 * directory (O_EXCL, a name nobody can guess), gets the owner, group and
 * mode of the file it replaces (of the directory, and 0644, for a new
 * one), is fsynced, renamed over `path` (rename replaces a link, it does
 * not follow it), and then the directory is fsynced.
 */
void write_atomically(const std::string &path, const std::string &text) {
    const fs::path target(path);
    const std::string dir = target.parent_path().empty() ? "." : target.parent_path().string();
    struct stat like {};
    if (lstat(path.c_str(), &like) != 0 || !S_ISREG(like.st_mode)) {
        if (stat(dir.c_str(), &like) != 0)
            throw InputError("cannot write into " + dir + ": " + std::strerror(errno));
        like.st_mode = 0644;
    }
    std::string tmp = dir + "/." + target.filename().string() + ".courier-XXXXXX";
    const int fd = mkstemp(tmp.data());
    if (fd < 0)
        throw InputError("cannot create a file in " + dir + ": " + std::strerror(errno));
    bool ok = true;
    for (std::size_t done = 0; ok && done < text.size();) {
        const ssize_t n = write(fd, text.data() + done, text.size() - done);
        ok = n > 0;
        done += ok ? static_cast<std::size_t>(n) : 0;
    }
    /* fchown fails for a non-root user, for whom the file is theirs anyway. */
    if (fchown(fd, like.st_uid, like.st_gid) != 0 && geteuid() == 0)
        ok = false;
    ok = ok && fchmod(fd, like.st_mode & 07777) == 0 && fsync(fd) == 0;
    const int saved = errno;
    close(fd);
    if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
        const int why = ok ? errno : saved;
        unlink(tmp.c_str());
        throw InputError("cannot write " + path + ": " + std::strerror(why));
    }
    if (const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY); dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

/* A directory made by root for the server's user belongs to the server's user. */
void make_directory_like(const fs::path &dir, const fs::path &like) {
    if (fs::exists(dir))
        return;
    fs::create_directories(dir);
    struct stat st {};
    if (stat(like.c_str(), &st) == 0 && chown(dir.c_str(), st.st_uid, st.st_gid) != 0 && geteuid() == 0)
        throw InputError("cannot give " + dir.string() + " to the owner of " + like.string() + ": " +
                         std::strerror(errno));
}

std::string read_file(const std::string &path) {
    std::ifstream f(path);
    if (!f)
        throw InputError(path + ": cannot read the file");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

int explain(const Plan &plan) {
    std::printf("%-26s %-22s %s\n", "setting", "value", "inputs → rule");
    for (const Setting &s : plan.settings)
        std::printf("%-26s %-22s %s\n%-49s → %s\n", s.name.c_str(), s.value.c_str(), s.inputs.c_str(), "", s.rule.c_str());
    std::printf("%-26s %-22s %s\n", "shared memory", std::to_string(plan.region_bytes).c_str(),
                "ipc::compute_layout(slots, ring_size, max_message_size), as the extension asks for it");
    return 0;
}

/* A setting as bytes or text, comparable between pg_settings and the plan. */
std::string canonical(const std::string &value, const std::string &unit) {
    std::string v = value;
    if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'')
        v = v.substr(1, v.size() - 2);
    if (unit == "kB")
        return std::to_string(std::stoull(v) * 1024);
    if (unit == "8kB")
        return std::to_string(std::stoull(v) * 8192);
    if (unit.empty() && v.find_first_not_of("0123456789") != std::string::npos && !v.empty() &&
        std::isdigit(static_cast<unsigned char>(v[0])))
        if (auto b = parse_size(v))
            return std::to_string(*b);
    return v;
}

/* Two CPU lists that name the same CPUs, however written. */
bool same_cpus(const std::string &a, const std::string &b) {
    worker::CpuSet x, y;
    std::string error;
    if (a.empty() || b.empty())
        return a == b;
    return worker::parse_cpu_list(a, &x, &error) && worker::parse_cpu_list(b, &y, &error) && x == y;
}

int check(const Plan &plan, const std::string &dsn) {
    PGconn *c = PQconnectdb(dsn.c_str());
    if (PQstatus(c) != CONNECTION_OK)
        throw InputError(std::string("cannot connect with --dsn: ") + PQerrorMessage(c));
    int differences = 0;
    for (const Setting &s : plan.settings) {
        const char *params[1] = {s.name.c_str()};
        PGresult *r = PQexecParams(c, "SELECT setting, coalesce(unit, '') FROM pg_settings WHERE name = $1", 1,
                                   nullptr, params, nullptr, nullptr, 0);
        std::string have = "(not set: is courier preloaded?)";
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            have = canonical(PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
        PQclear(r);
        std::string want = canonical(s.value, "");
        if (s.name == "courier.worker_cpus")
            have = same_cpus(have, want) ? want : have;  // "0,1" on the server is the plan's "0-1"
        if (s.name == "shared_preload_libraries") {
            auto a = split_list(have), b = split_list(want);
            have = want = "";
            for (auto &x : a) have += x + ",";
            for (auto &x : b) want += x + ",";
        }
        if (have != want) {
            std::printf("differs: %s is %s on the server, recommended %s\n", s.name.c_str(), have.c_str(), s.value.c_str());
            ++differences;
        }
    }
    PGresult *r = PQexec(c, "SELECT size FROM pg_shmem_allocations WHERE name = 'courier'");
    const std::string size = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "none";
    PQclear(r);
    PQfinish(c);
    if (size != std::to_string(plan.region_bytes)) {
        std::printf("differs: courier's shared memory is %s bytes on the server, recommended %llu\n", size.c_str(),
                    static_cast<unsigned long long>(plan.region_bytes));
        ++differences;
    }
    if (differences == 0)
        std::printf("agrees: the server has the recommended courier settings\n");
    return differences == 0 ? 0 : 1;
}

int install(const Plan &plan, const Args &a) {
    if (a.conf_dir.empty())
        usage("install needs --cluster VERSION/NAME or --conf-dir DIR");
    const fs::path conf = fs::path(a.conf_dir) / "postgresql.conf";
    if (!fs::exists(conf))
        throw InputError(conf.string() + ": no such file (is --cluster/--conf-dir right?)");
    const fs::path dir = fs::path(a.conf_dir) / "conf.d";
    const fs::path target = dir / "50-courier.conf";
    const bool included = has_include_dir(a.conf_dir, "conf.d");
    const std::string snippet = render(plan, a.file);
    if (!included && !a.yes && !a.dry_run) {
        std::printf("%s has no include_dir = 'conf.d', so a file there would be ignored.\n"
                    "Rerun with --yes to add that line (postgresql.conf is backed up first).\n",
                    conf.c_str());
        return 1;
    }
    if (a.dry_run) {
        if (!included)
            std::printf("would back up %s and add include_dir = 'conf.d' to it\n", conf.c_str());
        std::printf("would write %s:\n%s", target.c_str(), snippet.c_str());
        return 0;
    }
    if (!included) {
        const std::string backup = conf.string() + ".courier-backup";
        const std::string original = read_file(conf.string());
        write_atomically(backup, original);
        write_atomically(conf.string(), original + "\n# added by courier-config install\ninclude_dir = 'conf.d'\n");
        std::printf("added include_dir = 'conf.d' to %s (backup: %s)\n", conf.c_str(), backup.c_str());
    }
    make_directory_like(dir, a.conf_dir);
    write_atomically(target.string(), snippet);
    std::printf("wrote %s\n", target.c_str());
    if (!a.cluster.empty()) {
        const auto slash = a.cluster.find('/');
        std::printf("restart the cluster to apply it: pg_ctlcluster %s %s restart\n", a.cluster.substr(0, slash).c_str(),
                    a.cluster.substr(slash + 1).c_str());
    } else {
        std::printf("restart the server to apply it\n");
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    const Args a = parse_args(argc, argv);
    try {
        const Workload w = load_workload(read_file(a.file), a.file);
        const Plan plan = make_plan(w, existing_for(a));
        if (a.command == "generate") {
            const std::string snippet = render(plan, a.file);
            if (a.out.empty())
                std::cout << snippet;
            else
                write_atomically(a.out, snippet);
            return 0;
        }
        if (a.command == "explain")
            return explain(plan);
        if (a.command == "check") {
            if (a.dsn.empty())
                usage("check needs --dsn");
            return check(plan, a.dsn);
        }
        if (a.command == "install")
            return install(plan, a);
        usage("unknown command " + a.command);
    } catch (const InputError &e) {
        std::cerr << "courier-config: " << e.what() << "\n";
        return 2;
    } catch (const std::exception &e) {
        std::cerr << "courier-config: " << e.what() << "\n";
        return 2;
    }
}
