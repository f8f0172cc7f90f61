/* courier — SQL interface. Loaded by CREATE EXTENSION courier. */
\echo Use "CREATE EXTENSION courier" to load this file. \quit

CREATE FUNCTION @extschema@.echo(payload bytea) RETURNS bytea
AS 'MODULE_PATHNAME', 'courier_echo' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.echo(bytea) IS 'Round trip through the courier worker';

CREATE FUNCTION @extschema@.call(fn text, payload bytea) RETURNS bytea
AS 'MODULE_PATHNAME', 'courier_call_sql' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.call(text, bytea) IS 'Call function fn of the courier runtime';

CREATE FUNCTION @extschema@.slots(
    OUT slot integer, OUT state text, OUT owner_pid integer, OUT generation bigint,
    OUT calls bigint, OUT call_errors bigint, OUT bytes_to_worker bigint,
    OUT bytes_to_backend bigint, OUT wakeups_sent bigint, OUT wakeups_elided bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'courier_slots' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION @extschema@.slots() IS
    'One row per courier slot: free, leased, calling (queued), serving (a worker holds the call) or abandoned';

CREATE FUNCTION @extschema@.stats(OUT name text, OUT value bigint, OUT help text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'courier_stats' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION @extschema@.stats() IS 'courier counters (the exporter serves the same)';

-- Calls run code in the worker: only roles granted it may make them.
REVOKE EXECUTE ON FUNCTION @extschema@.echo(bytea) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.call(text, bytea) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.slots() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION @extschema@.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.slots() TO pg_monitor;
GRANT EXECUTE ON FUNCTION @extschema@.stats() TO pg_monitor;
GRANT USAGE ON SCHEMA @extschema@ TO pg_monitor;
