/*
 * before_postgres.h — every ipc header includes this, and it has no include
 * guard, so each of them checks again.
 *
 * PostgreSQL's c.h (through postgres.h) defines macros such as printf,
 * snprintf and gettext that break the C++ standard headers the ipc core
 * includes. A file that needs both includes courier's headers first; this
 * turns a wrong order into a compile error instead of a puzzle.
 */
#if defined(PG_VERSION_NUM)
#error "courier's ipc headers must come before postgres.h (include C++ and courier headers first)"
#endif
