\echo Use "CREATE EXTENSION courier_bench" to load this file. \quit
CREATE FUNCTION @extschema@.rtt(transport text, size int, n int, gap_us int DEFAULT 0,
    OUT median_ns float8, OUT p99_ns float8, OUT p999_ns float8, OUT mb_per_s float8)
AS 'MODULE_PATHNAME', 'courier_bench_rtt' LANGUAGE C STRICT;
CREATE FUNCTION @extschema@.echo_loop(transport text, size int, start_at float8, duration_ms int,
    OUT calls bigint, OUT cpu_s float8, OUT histogram bigint[])
AS 'MODULE_PATHNAME', 'courier_bench_echo_loop' LANGUAGE C STRICT;
CREATE FUNCTION @extschema@.timed_call(fn text, payload text, start_at float8,
    OUT started float8, OUT ended float8)
AS 'MODULE_PATHNAME', 'courier_bench_timed_call' LANGUAGE C STRICT;
