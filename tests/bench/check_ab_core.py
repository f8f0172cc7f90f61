#!/usr/bin/env python3
"""Checks bench/ab-core's JSON: every run of every build is counted in one class, with sane figures."""
import json
import sys

d = json.load(open(sys.argv[1]))
errors = []
for i, b in enumerate(d["builds"], 1):
    build = f"{i}: {b['bench']}"
    counted = sum(c["runs"] for c in b["classes"].values()) + b["failed"]
    if counted != d["runs_per_build"]:
        errors.append(f"{build}: {counted} runs counted, {d['runs_per_build']} made")
    for name, c in b["classes"].items():
        if not 0 < c["floor_ns"] < c["core_ns"]:
            errors.append(f"{build} {name}: floor {c['floor_ns']} ns, core {c['core_ns']} ns")
        if (c["floor_ns"] > d["split_ns"]) != (name == "different cores"):
            errors.append(f"{build}: a median floor of {c['floor_ns']} ns in class '{name}'")
if len(d["builds"]) < 2:
    errors.append("fewer than two builds")
print("\n".join(errors) or "ok")
sys.exit(1 if errors else 0)
