/*
 * plan.h — courier-config's model: the YAML description of a workload in,
 * the settings courier should have out, each with the reason for its value.
 *
 * Sizes come from ipc::compute_layout(), the function the extension uses to
 * ask PostgreSQL for memory: the generator never has a formula of its own.
 */
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace courier::config {

/* A problem with the input: where it is, which field, what was expected. */
struct InputError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class Policy { latency, balanced, efficiency };

struct Workload {
    std::string file;
    int postgres_version = 15;
    std::optional<int> max_connections;        // absent: "server" (read it)
    std::optional<std::int64_t> sessions;      // absolute
    std::optional<double> sessions_fraction;   // of max_connections
    std::uint64_t typical_message = 0;
    std::uint64_t largest_message = 0;
    std::uint64_t memory_budget = 0;
    std::optional<int> worker_threads;         // absent: auto
    std::optional<std::string> worker_cpus;    // a CPU list, canonical ("0-1"); absent: none
    Policy policy = Policy::balanced;
};

/* What the cluster already has (from its files, the server, or flags). */
struct Existing {
    std::vector<std::string> preload;  // shared_preload_libraries
    int max_worker_processes = 8;
    std::optional<int> max_connections;
    std::string source = "PostgreSQL's defaults";
};

struct Setting {
    std::string name;
    std::string value;   // as written in postgresql.conf
    std::string inputs;  // what it was computed from
    std::string rule;    // why it has this value
};

struct Plan {
    std::vector<Setting> settings;
    std::uint64_t region_bytes = 0;  // pg_shmem_allocations size for "courier"
    std::uint64_t stats_bytes = 0;
    int slots = 0;
    std::uint64_t ring_size = 0;
    std::uint64_t max_message_size = 0;
};

/* Parses YAML text; `file` names it in errors (file:line:column). */
Workload load_workload(const std::string &text, const std::string &file);
Plan make_plan(const Workload &w, const Existing &existing);

/* PostgreSQL memory units: "64kB", "16MB", "1GB", "512" (bytes). */
std::optional<std::uint64_t> parse_size(const std::string &text);
std::string format_size(std::uint64_t bytes);  // exact, in the largest whole unit
std::string human_bytes(std::uint64_t bytes);   // rounded, for comments

}  // namespace courier::config
