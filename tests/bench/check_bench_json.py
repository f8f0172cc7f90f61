#!/usr/bin/env python3
"""Checks that bench/run --json wrote every figure the issue asks for (never a speed)."""
import json
import math
import os
import sys

RATIOS = ["courier_vs_shm_mq_rtt_64B", "courier_vs_socket_rtt_64B", "core_vs_spin_floor_rtt_64B",
          "throughput_vs_memcpy_1MiB", "scaling_64_vs_peak", "idle_worker_cpu_fraction",
          "wakeups_per_message_under_load", "slow_64_vs_one_cpp_v1", "slow_64_vs_one_cpp_v2_async",
          "slow_64_vs_one_cpp_v2_driven", "courier_vs_shm_mq_p99_64B", "scaling_16_vs_2", "spread_64_sessions",
          "mixed_short_p99_beside_long_vs_alone", "courier_vs_shm_mq_now_and_then_64B"] + \
    [f"calls_{n}_sessions_vs_{b}" for n in (4, 16, 64) for b in ("shm_mq", "socket")]

data = json.load(open(sys.argv[1]))
two_cpus = len(os.sched_getaffinity(0)) >= 2
errors = []
missing = sorted(set(RATIOS) - set(data.get("ratios", {})))
if missing:
    errors.append(f"ratios missing: {missing}")
for key, value in data.get("ratios", {}).items():
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        errors.append(f"ratio {key} = {value!r} is not a finite non-negative number")
for key in ["cores", "model", "kernel"]:
    if key not in data.get("machine", {}):
        errors.append(f"machine.{key} missing")
for transport in ["courier", "courier_spin0", "shm_mq", "socket"]:
    for size in ["64", "4096", "65536", "1048576"]:
        fig = data.get("rtt", {}).get(transport, {}).get(size)
        if not fig or not fig.get("median_ns", 0) > 0 or not fig.get("p99_ns", 0) >= fig["median_ns"] \
                or not fig.get("p999_ns", 0) >= fig["p99_ns"]:
            errors.append(f"rtt {transport} {size}: {fig!r}")
for transport in ["courier", "shm_mq", "socket"]:
    fig = data.get("rtt_sporadic", {}).get(transport)
    if not fig or not 0 < fig.get("median_ns", 0) <= fig.get("p99_ns", 0) <= fig.get("p999_ns", 0):
        errors.append(f"rtt_sporadic {transport}: {fig!r}")
for transport in ["courier", "shm_mq", "socket"]:
    for sessions in ["1", "2", "4", "16", "64"]:
        row = data.get("concurrency", {}).get(transport, {}).get(sessions)
        if not row or not row.get("calls_per_s", 0) > 0 or not 0 < row.get("p50_ns", 0) <= row["p99_ns"] <= row["p999_ns"]:
            errors.append(f"concurrency {transport} {sessions}: {row!r}")
        elif row.get("calls_per_s") not in row.get("calls_per_s_runs", []):
            errors.append(f"concurrency {transport} {sessions}: the kept row is not one of its runs")
        elif os.path.exists("/proc/stat"):
            switches = row.get("switches_per_call")
            # A shm_mq or socket call always sleeps for its reply, so their rows cannot show none.
            none_allowed = transport == "courier"
            if not isinstance(switches, (int, float)) or not math.isfinite(switches) or switches < 0 \
                    or (switches == 0 and not none_allowed):
                errors.append(f"concurrency {transport} {sessions}: switches_per_call = {switches!r}")
            # Who switched: the sessions' sleeps for an answer, the worker's threads switched out while runnable.
            for key in ["session_sleeps_per_call", "worker_switched_out_per_call"] if transport == "courier" else []:
                value = row.get(key)
                if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    errors.append(f"concurrency courier {sessions}: {key} = {value!r}")
# The placed sweep (courier.worker_cpus) runs wherever the bench may use two CPUs or more.
if two_cpus:
    for key in [f"placed_calls_{n}_sessions_vs_{b}" for n in (4, 16, 64) for b in ("shm_mq", "unplaced")] + \
            ["placed_scaling_16_vs_2", "placed_spread_64_sessions"]:
        if key not in data.get("ratios", {}):
            errors.append(f"ratio {key} missing")
    for transport in ["courier", "shm_mq", "socket"]:
        for sessions in ["2", "4", "16", "64"]:
            row = (data.get("placed") or {}).get(transport, {}).get(sessions)
            if not row or not row.get("calls_per_s", 0) > 0 or not 0 < row.get("p50_ns", 0) <= row["p99_ns"]:
                errors.append(f"placed {transport} {sessions}: {row!r}")
for name in ["short_alone", "short_beside_long"]:
    row = data.get("mixed", {}).get(name)
    if not row or not row.get("calls_per_s", 0) > 0 or not row.get("p99_ns", 0) > 0:
        errors.append(f"mixed {name}: {row!r}")
for name in ["floor", "core_spin", "core_one_cpu", "core_park", "pipe", "socket", "mqueue"]:
    if not data.get("core", {}).get("rtt_64B", {}).get(name, {}).get("median_ns", 0) > 0:
        errors.append(f"core rtt {name} missing")
# What a wake costs its waker, the sleeper on its CPU and, with two CPUs or more, on another.
wake = data.get("core", {}).get("wake", {})
for where in ["same_cpu"] + (["other_cpu"] if two_cpus else []):
    if not 0 < wake.get(where, {}).get("median_ns", 0) <= wake[where].get("p99_ns", 0):
        errors.append(f"core wake {where}: {wake.get(where)!r}")
if two_cpus and "wake_other_cpu_vs_same_cpu" not in data.get("ratios", {}):
    errors.append("ratio wake_other_cpu_vs_same_cpu missing")
if "cpp_v1" not in data.get("runtime_rtt", {}):
    errors.append("runtime_rtt cpp_v1 missing")
for label, row in data.get("slow_calls", {}).items():
    if not row.get("one_s", 0) > 0 or not row.get("concurrent_64_s", 0) > 0:
        errors.append(f"slow_calls {label}: {row!r}")
print("\n".join(errors) if errors else "bench JSON complete")
sys.exit(1 if errors else 0)
