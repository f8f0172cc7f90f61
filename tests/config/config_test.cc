/*
 * courier-config as a user runs it: the real binary, real files, and a real
 * PostgreSQL 15 cluster started from the generated snippet.
 */
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "cluster.h"

namespace fs = std::filesystem;
using courier::test::Cluster;
using courier::test::Conn;

namespace {

struct Outcome {
    int status;
    std::string out;  // stdout and stderr
};

Outcome run(const std::string &args) {
    const std::string cmd = std::string(COURIER_CONFIG) + " " + args + " 2>&1";
    FILE *p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (std::size_t n = fread(buf, 1, sizeof buf, p))
        out.append(buf, n);
    const int rc = pclose(p);
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

std::string slurp(const fs::path &p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/courier-config-XXXXXX";
        path_ = mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path_); }
    fs::path operator/(const std::string &name) const { return path_ / name; }
    const fs::path &path() const { return path_; }
    fs::path write(const std::string &name, const std::string &text) const {
        fs::create_directories((path_ / name).parent_path());
        std::ofstream(path_ / name) << text;
        return path_ / name;
    }

private:
    fs::path path_;
};

const std::string valid =
    "postgres_version: 15\nmax_connections: 100\nsessions: 10\ntypical_message_size: 4kB\n"
    "largest_message_size: 1MB\nmemory_budget: 64MB\nworker_threads: 2\nlatency_policy: balanced\n";

}  // namespace

TEST(Config, ExamplesMatchTheirGoldenOutput) {
    for (const auto &e : fs::directory_iterator(std::string(SOURCE_DIR) + "/config/examples")) {
        const std::string name = e.path().stem();
        const std::string rel = "config/examples/" + e.path().filename().string();
        const Outcome r = run("generate " + rel + " --preload pg_stat_statements");
        ASSERT_EQ(r.status, 0) << r.out;
        EXPECT_EQ(r.out, slurp(std::string(SOURCE_DIR) + "/tests/config/golden/" + name + ".conf")) << name;
    }
}

TEST(Config, EveryClassOfBadInputNamesPlaceFieldAndExpectation) {
    TempDir dir;
    struct Case {
        std::string yaml, expect;
    };
    const std::vector<Case> cases = {
        {valid + "sesions: 10\n", "bad.yaml:9:1: sesions: unknown field; did you mean sessions?"},
        {"max_connections: lots\n", "bad.yaml:1:18: max_connections: expected an integer, got \"lots\""},
        {"sessions: -5\n", "bad.yaml:1:11: sessions: expected an integer from 1 to 65536, got -5"},
        {"postgres_version: 9\n", "bad.yaml:1:19: postgres_version: expected an integer from 15 to 18, got 9"},
        {"memory_budget: 12 parsecs\n", "bad.yaml:1:16: memory_budget: expected a size such as 64kB"},
        {"sessions: 150%\n", "bad.yaml:1:11: sessions: expected a percentage from 0% to 100%"},
        {"latency_policy: fast\n", "bad.yaml:1:17: latency_policy: expected latency, balanced or efficiency"},
        {"sessions: [1, 2]\n", "bad.yaml:1:11: sessions: expected a number of sessions or a percentage"},
        {"max_connections: 100\nsessions: 10\ntypical_message_size: 1kB\n", "largest_message_size: missing"},
        {"sessions: 10\ntypical_message_size: 4kB\nlargest_message_size: 1MB\nmemory_budget: 1kB\nmax_connections: 100\n",
         "memory_budget: 1kB is too small for even one slot"},
        {"sessions: 300\ntypical_message_size: 4kB\nlargest_message_size: 1MB\nmemory_budget: 1GB\nmax_connections: 100\n",
         "sessions: 300 is more than max_connections (100)"},
        {"sessions: 10\n  bad: [\n", "bad.yaml:"},
        {"worker_cpus: 0-\n", "bad.yaml:1:14: worker_cpus: \"0-\" is not a range of CPUs; write CPU numbers"},
        {valid + "worker_cpus: 1000\n",
         "worker_cpus: CPUs 1000 are not among those this server may use"},
    };
    for (const Case &c : cases) {
        dir.write("bad.yaml", c.yaml);
        const fs::path out = dir / "out.conf";
        const Outcome r = run("generate " + (dir / "bad.yaml").string() + " --out " + out.string());
        EXPECT_EQ(r.status, 2) << c.yaml << r.out;
        EXPECT_NE(r.out.find(c.expect), std::string::npos) << "expected \"" << c.expect << "\" in: " << r.out;
        EXPECT_FALSE(fs::exists(out)) << "nothing may be written on an error";
    }
}

TEST(Config, OutWritesTheFileAtomically) {
    TempDir dir;
    dir.write("c.yaml", valid);
    const Outcome r = run("generate " + (dir / "c.yaml").string() + " --out " + (dir / "courier.conf").string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(slurp(dir / "courier.conf").find("courier.slots = 12"), std::string::npos);
    for (const auto &e : fs::directory_iterator(dir.path()))
        EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
}

TEST(Config, PreloadIsMergedFromTheClusterFilesNeverDropped) {
    TempDir dir;
    dir.write("c.yaml", valid);
    dir.write("pgdata/postgresql.conf",
              "shared_preload_libraries = 'pg_stat_statements'   # set first\n"
              "include_dir = 'conf.d'\ninclude_if_exists = 'missing.conf'\n");
    dir.write("pgdata/conf.d/10-more.conf", "shared_preload_libraries = 'pg_stat_statements, auto_explain'\n");
    dir.write("pgdata/postgresql.auto.conf", "max_worker_processes = '12'\n");
    Outcome r = run("generate " + (dir / "c.yaml").string() + " --pgdata " + (dir / "pgdata").string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("shared_preload_libraries = 'pg_stat_statements,auto_explain,courier'"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("max_worker_processes = 13"), std::string::npos) << r.out;
    /* Already preloaded: kept once, and its worker is already counted. */
    r = run("generate " + (dir / "c.yaml").string() + " --preload 'courier,pg_cron'");
    EXPECT_NE(r.out.find("shared_preload_libraries = 'courier,pg_cron'"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("max_worker_processes = 8"), std::string::npos) << r.out;
}

TEST(Config, InstallAddsIncludeDirOnlyWithYesAndKeepsABackup) {
    TempDir dir;
    dir.write("c.yaml", valid);
    dir.write("etc/postgresql.conf", "max_connections = 100\nshared_preload_libraries = 'pg_stat_statements'\n");
    const std::string base = "install " + (dir / "c.yaml").string() + " --conf-dir " + (dir / "etc").string();
    Outcome r = run(base);
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("no include_dir = 'conf.d'"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(dir / "etc/conf.d"));
    r = run(base + " --dry-run");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("would write"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(dir / "etc/conf.d/50-courier.conf"));
    r = run(base + " --yes");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_TRUE(fs::exists(dir / "etc/postgresql.conf.courier-backup"));
    EXPECT_NE(slurp(dir / "etc/postgresql.conf").find("include_dir = 'conf.d'"), std::string::npos);
    const std::string installed = slurp(dir / "etc/conf.d/50-courier.conf");
    EXPECT_NE(installed.find("shared_preload_libraries = 'pg_stat_statements,courier'"), std::string::npos) << installed;
    /* Running it again changes no setting (its comments now cite the installed file). */
    auto settings = [](const std::string &text) {
        std::string out;
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);)
            if (!line.empty() && line[0] != '#')
                out += line + "\n";
        return out;
    };
    r = run(base);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(settings(slurp(dir / "etc/conf.d/50-courier.conf")), settings(installed));
}

/*
 * Run as root in a directory the server's user may write: a link planted
 * where the backup goes must not be written through, and the files keep
 * their owner and mode (a root-owned 0600 postgresql.conf stops the server).
 */
TEST(Config, InstallAsRootWritesThroughNoLinkAndKeepsOwnerAndMode) {
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root";
    TempDir dir;
    dir.write("c.yaml", valid);
    const fs::path conf = dir.write("etc/postgresql.conf", "max_connections = 100\n");
    const fs::path victim = dir.write("victim", "precious\n");
    ASSERT_EQ(std::system(("chown -R postgres:postgres " + (dir / "etc").string() + " && chmod 644 " + conf.string())
                              .c_str()),
              0);
    fs::create_symlink(victim, dir / "etc/postgresql.conf.courier-backup");
    const Outcome r = run("install " + (dir / "c.yaml").string() + " --conf-dir " + (dir / "etc").string() + " --yes");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(slurp(victim), "precious\n") << "written through the planted link";
    EXPECT_FALSE(fs::is_symlink(dir / "etc/postgresql.conf.courier-backup"));
    EXPECT_EQ(slurp(dir / "etc/postgresql.conf.courier-backup"), "max_connections = 100\n");
    struct passwd *pg = getpwnam("postgres");
    ASSERT_NE(pg, nullptr);
    for (const fs::path &p : {conf, dir / "etc/postgresql.conf.courier-backup", dir / "etc/conf.d",
                              dir / "etc/conf.d/50-courier.conf"}) {
        struct stat st {};
        ASSERT_EQ(stat(p.c_str(), &st), 0) << p;
        EXPECT_EQ(st.st_uid, pg->pw_uid) << p << " is not the server user's";
        if (S_ISREG(st.st_mode)) {
            EXPECT_EQ(st.st_mode & 07777, 0644u) << p;
        }
    }
    for (const auto &e : fs::directory_iterator(dir / "etc"))  // temporaries are ".NAME.courier-XXXXXX"
        EXPECT_NE(e.path().filename().string()[0], '.') << "left behind: " << e.path();
}

TEST(Config, GeneratedSnippetStartsAClusterWhoseMemoryMatchesAndCheckAgrees) {
    TempDir dir;
    dir.write("c.yaml", valid);
    const Outcome gen = run("generate " + (dir / "c.yaml").string());
    ASSERT_EQ(gen.status, 0) << gen.out;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(gen.out, m, std::regex("\\((\\d+) bytes\\) in PostgreSQL's segment")));
    const std::string predicted = m[1];
    std::vector<std::string> lines;
    std::istringstream in(gen.out);
    for (std::string line; std::getline(in, line);)
        if (!line.empty() && line[0] != '#')
            lines.push_back(line);
    Cluster cluster(lines, /*preload=*/false);  // the snippet preloads courier
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    EXPECT_EQ(c.value("SELECT size FROM pg_shmem_allocations WHERE name = 'courier'"), predicted);
    const std::string dsn = "host=" + c.value("SHOW unix_socket_directories") + " port=" + std::to_string(cluster.port()) +
                            " user=postgres dbname=postgres";
    Outcome check = run("check " + (dir / "c.yaml").string() + " --dsn '" + dsn + "'");
    EXPECT_EQ(check.status, 0) << check.out;
    EXPECT_NE(check.out.find("agrees"), std::string::npos) << check.out;
    /* max_connections: server reads it (and the preload list) from the server itself. */
    dir.write("from-server.yaml", std::regex_replace(valid, std::regex("max_connections: 100"), "max_connections: server"));
    const Outcome from_server = run("generate " + (dir / "from-server.yaml").string() + " --dsn '" + dsn + "'");
    EXPECT_EQ(from_server.status, 0) << from_server.out;
    EXPECT_NE(from_server.out.find("10 sessions, max_connections " + c.value("SHOW max_connections")), std::string::npos)
        << from_server.out;
    EXPECT_NE(from_server.out.find("shared_preload_libraries = 'courier'"), std::string::npos) << from_server.out;
    const Outcome no_source = run("generate " + (dir / "from-server.yaml").string());
    EXPECT_EQ(no_source.status, 2) << no_source.out;
    EXPECT_NE(no_source.out.find("needs --pgdata, --cluster or --dsn"), std::string::npos) << no_source.out;

    ASSERT_TRUE(c.exec("ALTER SYSTEM SET courier.spin_us = 7"));
    c.value("SELECT pg_reload_conf()");
    ASSERT_TRUE(courier::test::eventually([&] { return c.value("SHOW courier.spin_us") == "7"; }, 5));
    check = run("check " + (dir / "c.yaml").string() + " --dsn '" + dsn + "'");
    EXPECT_EQ(check.status, 1) << check.out;
    EXPECT_NE(check.out.find("differs: courier.spin_us is 7 on the server, recommended 50"), std::string::npos) << check.out;
}

/* worker_cpus: the setting as Linux writes CPU lists, one pool thread per CPU, and a server that takes it. */
TEST(Config, WorkerCpusAreWrittenCheckedAndTakenByTheServer) {
    const std::vector<int> cpus = courier::test::own_cpus();
    if (cpus.size() < 2)
        GTEST_SKIP() << "needs two CPUs";
    TempDir dir;
    const std::string first = std::to_string(cpus[0]);
    std::string yaml = std::regex_replace(valid, std::regex("worker_threads: 2\n"), "");
    dir.write("c.yaml", yaml + "worker_cpus: \"" + first + "," + first + "\"\n");
    const Outcome gen = run("generate " + (dir / "c.yaml").string());
    ASSERT_EQ(gen.status, 0) << gen.out;
    EXPECT_NE(gen.out.find("courier.worker_cpus = '" + first + "'"), std::string::npos) << gen.out;
    EXPECT_NE(gen.out.find("# One per CPU of the worker's.\n#   from: worker_threads auto, worker_cpus " + first +
                           "\ncourier.worker_threads = 1\n"),
              std::string::npos)
        << gen.out;
    std::vector<std::string> lines;
    std::istringstream in(gen.out);
    for (std::string line; std::getline(in, line);)
        if (!line.empty() && line[0] != '#')
            lines.push_back(line);
    Cluster cluster(lines, /*preload=*/false);
    ASSERT_TRUE(cluster.running()) << cluster.log();
    Conn c = cluster.connect();
    EXPECT_EQ(c.value("SHOW courier.worker_cpus"), first);
    EXPECT_NE(cluster.log().find("courier worker runs on CPUs " + first), std::string::npos) << cluster.log();
    const std::string dsn = "host=" + c.value("SHOW unix_socket_directories") + " port=" + std::to_string(cluster.port()) +
                            " user=postgres dbname=postgres";
    const Outcome check = run("check " + (dir / "c.yaml").string() + " --dsn '" + dsn + "'");
    EXPECT_EQ(check.status, 0) << check.out;
    /* Without worker_cpus the server's list differs from the plan's none. */
    dir.write("none.yaml", yaml + "worker_cpus: none\n");
    const Outcome differs = run("check " + (dir / "none.yaml").string() + " --dsn '" + dsn + "'");
    EXPECT_EQ(differs.status, 1) << differs.out;
    EXPECT_NE(differs.out.find("differs: courier.worker_cpus is " + first + " on the server, recommended ''"),
              std::string::npos)
        << differs.out;
}
