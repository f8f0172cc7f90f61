/*
 * pgconf.cc — a reader for postgresql.conf's syntax: `name = value` or
 * `name value`, values bare or in single quotes ('' for a quote), # comments,
 * include / include_if_exists / include_dir relative to the including file.
 */
#include "pgconf.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <libpq-fe.h>

namespace courier::config {
namespace fs = std::filesystem;
namespace {

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

std::string trim(const std::string &s) {
    const auto b = s.find_first_not_of(" \t\r");
    const auto e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

/* One line: name and value; false for blank lines and comments. */
bool parse_line(const std::string &raw, std::string *name, std::string *value) {
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#')
        return false;
    std::size_t i = 0;
    while (i < line.size() && (std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '_' || line[i] == '.'))
        ++i;
    if (i == 0)
        return false;
    *name = lower(line.substr(0, i));
    std::string rest = trim(line.substr(i));
    if (!rest.empty() && rest[0] == '=')
        rest = trim(rest.substr(1));
    if (!rest.empty() && rest[0] == '\'') {
        std::string v;
        for (std::size_t j = 1; j < rest.size(); ++j) {
            if (rest[j] == '\'') {
                if (j + 1 < rest.size() && rest[j + 1] == '\'') {
                    v += '\'';
                    ++j;
                    continue;
                }
                break;
            }
            v += rest[j];
        }
        *value = v;
    } else {
        const auto hash = rest.find('#');
        *value = trim(hash == std::string::npos ? rest : rest.substr(0, hash));
    }
    return true;
}

void read_into(const fs::path &path, std::map<std::string, std::string> *out, int depth, bool must_exist) {
    std::ifstream f(path);
    if (!f) {
        if (must_exist)
            throw InputError("cannot read " + path.string());
        return;
    }
    if (depth > 10)
        throw InputError(path.string() + ": includes nested too deeply");
    std::string line, name, value;
    while (std::getline(f, line)) {
        if (!parse_line(line, &name, &value))
            continue;
        const fs::path rel = fs::path(value).is_absolute() ? fs::path(value) : path.parent_path() / value;
        if (name == "include") {
            read_into(rel, out, depth + 1, true);
        } else if (name == "include_if_exists") {
            read_into(rel, out, depth + 1, false);
        } else if (name == "include_dir") {
            std::vector<fs::path> files;
            std::error_code ec;
            for (const auto &e : fs::directory_iterator(rel, ec))
                if (e.path().extension() == ".conf" && e.path().filename().string()[0] != '.')
                    files.push_back(e.path());
            std::sort(files.begin(), files.end());
            for (const auto &p : files)
                read_into(p, out, depth + 1, true);
        } else {
            (*out)[name] = value;
        }
    }
}

Existing from_settings(const std::map<std::string, std::string> &s, const std::string &source) {
    Existing e;
    e.source = source;
    if (auto it = s.find("shared_preload_libraries"); it != s.end())
        e.preload = split_list(it->second);
    if (auto it = s.find("max_worker_processes"); it != s.end())
        e.max_worker_processes = std::stoi(it->second);
    if (auto it = s.find("max_connections"); it != s.end())
        e.max_connections = std::stoi(it->second);
    else
        e.max_connections = 100;  // PostgreSQL's default
    return e;
}

}  // namespace

std::vector<std::string> split_list(const std::string &value) {
    std::vector<std::string> out;
    std::string item;
    for (char c : value + ",") {
        if (c == ',') {
            item = trim(item);
            if (item.size() >= 2 && item.front() == '"' && item.back() == '"')
                item = item.substr(1, item.size() - 2);
            if (!item.empty())
                out.push_back(item);
            item.clear();
        } else {
            item += c;
        }
    }
    return out;
}

std::map<std::string, std::string> read_conf_file(const std::string &path) {
    std::map<std::string, std::string> out;
    read_into(path, &out, 0, true);
    return out;
}

Existing existing_from_files(const std::string &conf_dir, const std::string &data_dir) {
    auto settings = read_conf_file((fs::path(conf_dir) / "postgresql.conf").string());
    std::string data = data_dir;
    if (data.empty())
        data = settings.count("data_directory") ? settings["data_directory"] : conf_dir;
    read_into(fs::path(data) / "postgresql.auto.conf", &settings, 0, false);
    return from_settings(settings, "the configuration in " + conf_dir);
}

Existing existing_from_server(const std::string &dsn) {
    PGconn *c = PQconnectdb(dsn.c_str());
    if (PQstatus(c) != CONNECTION_OK) {
        const std::string why = PQerrorMessage(c);
        PQfinish(c);
        throw InputError("cannot connect with --dsn: " + why);
    }
    std::map<std::string, std::string> s;
    for (const char *name : {"shared_preload_libraries", "max_worker_processes", "max_connections"}) {
        PGresult *r = PQexec(c, (std::string("SHOW ") + name).c_str());
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            s[name] = PQgetvalue(r, 0, 0);
        PQclear(r);
    }
    PQfinish(c);
    return from_settings(s, "the server");
}

bool has_include_dir(const std::string &conf_dir, const std::string &dir) {
    std::ifstream f(fs::path(conf_dir) / "postgresql.conf");
    std::string line, name, value;
    while (std::getline(f, line))
        if (parse_line(line, &name, &value) && name == "include_dir" && trim(value) == dir)
            return true;
    return false;
}

}  // namespace courier::config
