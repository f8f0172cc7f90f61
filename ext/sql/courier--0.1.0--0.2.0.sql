/* courier 0.1.0 → 0.2.0: ALTER EXTENSION courier UPDATE. */
\echo Use "ALTER EXTENSION courier UPDATE" to load this file. \quit

-- The SQL interface is unchanged. What 0.2.0 changes is in courier.so
-- (loaded by the restart that installing it needs): courier.slots() shows
-- 'serving' for a call a worker thread holds, and courier.stats() has
-- per-runtime rows (runtime.<name>.calls, .call_errors, .loaded) and
-- calls_dropped_unstarted.
COMMENT ON FUNCTION @extschema@.slots() IS
    'One row per courier slot: free, leased, calling (queued), serving (a worker holds the call) or abandoned';
