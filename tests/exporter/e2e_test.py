#!/usr/bin/env python3
"""End to end: PostgreSQL 15 with courier under a workload, courier_exporter,
and a real Prometheus scraping it every second. Every PromQL expression of the
dashboard and of the alert rules (thresholds removed) must return data through
Prometheus's HTTP API; the exporter must survive the worker being killed and
PostgreSQL being restarted. Usage: e2e_test.py BUILD_DIR"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1])
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def eventually(fn, seconds):
    end = time.time() + seconds
    while time.time() < end:
        try:
            if fn():
                return True
        except Exception:
            pass
        time.sleep(0.5)
    return False


def sh(*cmd):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, cwd=ROOT).stdout


def main():
    work = tempfile.mkdtemp(prefix="courier-e2e-")
    os.chmod(work, 0o755)  # the server runs as postgres and must reach its directory
    cluster = os.path.join(work, "pg")
    conn = sh("scripts/pg-cluster", "start", cluster, "courier.slots = 8").split()
    psql = ["psql", *conn, "-X", "-qAt", "-c"]
    procs = []
    try:
        subprocess.run(psql + ["CREATE EXTENSION courier"], check=True)
        workload = ("DO $$ BEGIN FOR i IN 1..2000000 LOOP PERFORM courier.echo(decode(repeat('ab', 100 + i % 5000), 'hex')); "
                    "END LOOP; END $$")
        for _ in range(3):
            procs.append(subprocess.Popen(psql + [workload], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(psql + ["SELECT courier.call('fail', 'x')"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))

        exporter_port, prom_port = free_port(), free_port()
        exporter = subprocess.Popen([os.path.join(BUILD, "exporter/courier_exporter"),
                                     f"--web.listen-address=127.0.0.1:{exporter_port}",
                                     f"--courier.data-directory={cluster}/data"], stderr=subprocess.DEVNULL)
        procs.append(exporter)
        metrics = f"http://127.0.0.1:{exporter_port}/metrics"
        check(eventually(lambda: "\ncourier_up 1\n" in get(metrics), 10), "exporter serves courier_up 1")

        rules = os.path.join(ROOT, "exporter/rules/courier.rules.yml")
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{rules}']\n"
                    f"scrape_configs:\n  - job_name: courier\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{exporter_port}']\n")
        prom = subprocess.Popen(["prometheus", f"--config.file={work}/prometheus.yml",
                                 f"--storage.tsdb.path={work}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(prom)
        api = f"http://127.0.0.1:{prom_port}/api/v1/query?query="

        def query(expr):
            data = json.loads(get(api + urllib.parse.quote(expr)))
            return data["status"] == "success", data.get("data", {}).get("result", [])

        check(eventually(lambda: query("courier_up")[1], 30), "Prometheus scrapes the exporter")
        time.sleep(8)  # a few samples for rate()

        dashboard = json.load(open(os.path.join(ROOT, "exporter/dashboards/courier-overview.json")))
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        exprs += [v["definition"].replace("label_values(courier_up, instance)", "courier_up")
                  for v in dashboard["templating"]["list"] if v.get("definition")]
        for expr in exprs:
            e = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            ok, result = query(e)
            check(ok and len(result) > 0, f"dashboard: {expr[:90]}")
        rule_text = open(rules).read()
        for expr in re.findall(r"expr: \|\n((?:          .*\n)+)|expr: (.+)\n", rule_text):
            e = " ".join((expr[0] or expr[1]).split())
            ok, _ = query(e)
            check(ok, f"rule is valid: {e[:90]}")
            stripped = re.sub(r"\s*(==|>=|<=|>|<)\s*[0-9.eE+-]+", "", e)
            ok, result = query(stripped)
            check(ok and len(result) > 0, f"rule inputs return data: {stripped[:90]}")

        # The exporter survives the worker being killed (PostgreSQL restarts everything)...
        pid = int(subprocess.run(psql + ["SELECT value FROM courier.stats() WHERE name = 'server_pid'"], text=True,
                                 capture_output=True).stdout.strip() or 0)
        check(pid > 0, "worker pid known")
        # A stopped worker (SIGSTOP) runs but serves nothing: down, not up, until it continues.
        os.kill(pid, signal.SIGSTOP)
        check(eventually(lambda: "\ncourier_worker_up 0\n" in get(metrics) and
                         "\ncourier_worker_running 1\n" in get(metrics), 5), "a stopped worker is reported down")
        os.kill(pid, signal.SIGCONT)
        check(eventually(lambda: "\ncourier_worker_up 1\n" in get(metrics), 5), "and up again once it continues")
        os.kill(pid, 9)
        check(eventually(lambda: get(metrics) is not None, 5), "exporter keeps serving while PostgreSQL restarts")
        check(eventually(lambda: "\ncourier_worker_up 1\n" in get(metrics) and
                         "\ncourier_slot_leases_total 0\n" in get(metrics), 30),
              "exporter picks up the new segment after the crash restart")
        # ... and PostgreSQL being stopped and started.
        bindir = sh("pg_config", "--bindir").strip()
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(as_pg + [f"{bindir}/pg_ctl", "-D", f"{cluster}/data", "-m", "fast", "-w", "stop"], check=True,
                       stdout=subprocess.DEVNULL)
        check("\ncourier_up 0\n" in get(metrics), "stopped PostgreSQL: courier_up 0, the scrape still succeeds")
        subprocess.run(as_pg + [f"{bindir}/pg_ctl", "-D", f"{cluster}/data", "-l", f"{cluster}/server.log", "-w", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        check(eventually(lambda: "\ncourier_up 1\n" in get(metrics) and "\ncourier_worker_up 1\n" in get(metrics), 20),
              "started again: courier_up 1, worker up")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["scripts/pg-cluster", "stop", cluster], cwd=ROOT)
        subprocess.run(["rm", "-rf", work])
    print(f"{len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
