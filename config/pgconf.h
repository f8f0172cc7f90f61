/*
 * pgconf.h — what a cluster already has: from its configuration files
 * (postgresql.conf, the files it includes, postgresql.auto.conf) or from a
 * running server (libpq).
 */
#pragma once

#include <map>
#include <string>

#include "plan.h"

namespace courier::config {

/* Settings as the files leave them (later wins), names in lower case. */
std::map<std::string, std::string> read_conf_file(const std::string &path);

/* From a configuration directory (postgresql.conf there) and a data directory. */
Existing existing_from_files(const std::string &conf_dir, const std::string &data_dir);
/* From a running server. */
Existing existing_from_server(const std::string &dsn);

/* Splits a shared_preload_libraries value into names. */
std::vector<std::string> split_list(const std::string &value);

/* Whether postgresql.conf in conf_dir has an active include_dir of `dir`. */
bool has_include_dir(const std::string &conf_dir, const std::string &dir);

}  // namespace courier::config
