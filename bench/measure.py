#!/usr/bin/env python3
"""Measurement helper for bench/run.sh (Python 3.11 standard library only).

Subcommands (run.sh drives them; each appends one JSON line to --out):

  ports N                      print N free 127.0.0.1 TCP ports
  wait-port PORT [TIMEOUT]     wait until 127.0.0.1:PORT accepts connections
  wait-log FILE TEXT [TIMEOUT] wait until FILE contains TEXT
  check URL                    GET URL over HTTP/1.1, require 200 and body "ok"
  affinity PID...              print the CPU lists of every thread of PID (and its children)
  meta KEY=VALUE...            record run metadata (machine info is added here)
  mem  --target T --when W --pids P...
                               record VmRSS/VmHWM (summed over P and its children)
  run  --scenario S --target T --kind tput|lat --rep R --subject P... --upstream P...
       [--latency-log FILE] -- COMMAND...
                               run the load generator COMMAND, measure the CPU
                               time (utime+stime, /proc/PID/stat fields 14+15)
                               of the subject and upstream processes over it,
                               sample their RSS, parse the generator's output
  vg   --target T --scenario S --n N --small FILE --large FILE
                               instructions/request from two cachegrind outputs
                               (N and 5N requests): (I(5N) - I(N)) / 4N
  report --results FILE --out FILE
                               print and save the markdown summary
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc

def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()  # index 0 is field 3 (state)


def family(pids: list[int]) -> list[int]:
    """The given PIDs plus all their live descendants (nginx master -> workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])  # field 4
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid in out or not Path(f"/proc/{pid}").exists():
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(out)


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime (fields 14 and 15) summed over pids, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total


def status_kb(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# ---------------------------------------------------------------- load generator output

def parse_wrk(text: str) -> dict:
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if not m:
        raise ValueError("cannot parse wrk output:\n" + text)
    requests = int(m.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = 0
    if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)):
        errors += int(m.group(1))
    if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)):
        errors += sum(int(g) for g in m.groups())
    return {"requests": requests, "rps": rps, "errors": errors}


def parse_h2load(text: str) -> dict:
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    f = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (m and f and s):
        raise ValueError("cannot parse h2load output:\n" + text)
    two_xx = int(s.group(1))
    errors = int(m.group(5)) + int(m.group(6)) + int(m.group(7)) + int(s.group(3)) + int(s.group(4))
    return {"requests": two_xx, "rps": float(f.group(3)), "errors": errors,
            "started": int(m.group(2))}


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def parse_latency_log(path: str) -> dict:
    """h2load --log-file: start µs since epoch <TAB> status <TAB> µs to end of response."""
    vals = []
    for line in Path(path).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].startswith("2"):
            vals.append(float(parts[2]))
    vals.sort()
    return {"lat_n": len(vals), "p50_us": percentile(vals, 50), "p90_us": percentile(vals, 90),
            "p99_us": percentile(vals, 99), "p999_us": percentile(vals, 99.9)}


# ---------------------------------------------------------------- subcommands

def machine_ticks() -> tuple[int, int]:
    """(user+nice+system, steal) over all CPUs from /proc/stat, in clock ticks."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(f[1]) + int(f[2]) + int(f[3]), int(f[8])


def children_cpu_s() -> float:
    """CPU of the load generator (our finished children) plus our own sampling."""
    c, s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime


def wait_quiet(max_wait: float, threshold_pct: float = 15.0) -> float:
    """Wait (up to max_wait s) until the machine is quiet: less than threshold_pct of one CPU busy
    over half a second while our servers are idle. Returns the busy percentage last seen."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_ticks()[0], time.monotonic()
        time.sleep(0.5)
        busy = 100 * (machine_ticks()[0] - b0) / CLK_TCK / (time.monotonic() - t0)
        if busy < threshold_pct or time.monotonic() >= deadline:
            return busy
        time.sleep(1)


def cmd_run(a) -> int:
    if a.quiet_wait > 0:
        t = time.monotonic()
        busy = wait_quiet(a.quiet_wait)
        waited = time.monotonic() - t
        if waited > 2:
            print(f"  (waited {waited:.0f} s for other processes to calm down; now {busy:.0f}% of a CPU busy)",
                  flush=True)
    subject, upstream = family(a.subject), family(a.upstream)
    same = set(subject) == set(upstream)
    ours = sorted(set(subject) | set(upstream))
    rss_max = 0
    done = threading.Event()

    def sampler():
        nonlocal rss_max
        while not done.wait(0.2):
            rss_max = max(rss_max, status_kb(subject, "VmRSS"))

    m0, s0, g0 = *machine_ticks(), children_cpu_s()
    c0, u0, o0, t0 = cpu_ticks(subject), cpu_ticks(upstream), cpu_ticks(ours), time.monotonic()
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    proc = subprocess.run(a.command, capture_output=True, text=True)
    done.set()
    th.join()
    c1, u1, o1, t1 = cpu_ticks(subject), cpu_ticks(upstream), cpu_ticks(ours), time.monotonic()
    m1, s1, g1 = *machine_ticks(), children_cpu_s()
    gen_s = g1 - g0
    # CPU used on the machine by anything but the servers and the load generator: a noise gauge.
    other_s = (m1 - m0 - (o1 - o0)) / CLK_TCK - gen_s
    out = proc.stdout + proc.stderr
    Path(a.raw_dir, f"{a.scenario}-{a.target}-{a.kind}-{a.rep}.txt").write_text(
        " ".join(a.command) + "\n\n" + out)
    if proc.returncode != 0:
        print(f"load generator failed (exit {proc.returncode}):\n{out}", file=sys.stderr)
        return 1
    parsed = parse_wrk(out) if "Requests/sec:" in out else parse_h2load(out)
    rec = {"type": "run", "scenario": a.scenario, "target": a.target, "kind": a.kind, "rep": a.rep,
           "wall_s": round(t1 - t0, 3), **parsed,
           "subject_pids": subject, "upstream_pids": upstream,
           "subject_cpu_s": (c1 - c0) / CLK_TCK, "upstream_cpu_s": (u1 - u0) / CLK_TCK,
           "rss_max_kb": rss_max, "loadgen_cpu_s": round(gen_s, 3),
           "other_cpu_pct": round(100 * max(other_s, 0) / (t1 - t0), 1),
           "steal_pct": round(100 * (s1 - s0) / CLK_TCK / (t1 - t0), 1)}
    n = parsed["requests"]
    rec["cpu_us_per_req"] = rec["subject_cpu_s"] * 1e6 / n if n else None
    rec["upstream_us_per_req"] = rec["upstream_cpu_s"] * 1e6 / n if n else None
    if a.latency_log:
        rec.update(parse_latency_log(a.latency_log))
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    line = (f"  {a.scenario:3} {a.kind:4} rep {a.rep} {a.target:7} {n:>8} req  {parsed['rps']:>10.0f} req/s  "
            f"cpu {rec['cpu_us_per_req'] or 0:6.2f} µs/req")
    if not same:
        line += f"  upstream {rec['upstream_us_per_req'] or 0:6.2f} µs/req"
    if a.latency_log:
        line += f"  p50 {rec['p50_us']:.0f} µs  p99 {rec['p99_us']:.0f} µs"
    if parsed["errors"]:
        line += f"  ERRORS {parsed['errors']}"
    if rec["other_cpu_pct"] >= 5 or rec["steal_pct"] >= 5:
        line += f"  (noise: other processes {rec['other_cpu_pct']}% CPU, steal {rec['steal_pct']}%)"
    print(line, flush=True)
    return 0


def cmd_mem(a) -> int:
    pids = family(a.pids)
    rec = {"type": "mem", "target": a.target, "when": a.when, "pids": pids,
           "rss_kb": status_kb(pids, "VmRSS"), "hwm_kb": status_kb(pids, "VmHWM")}
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"  memory {a.target:7} {a.when:5} VmRSS {rec['rss_kb'] / 1024:.1f} MiB  VmHWM {rec['hwm_kb'] / 1024:.1f} MiB"
          f"  (pids {pids})", flush=True)
    return 0


def cachegrind_total(path: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"no summary line in {path}")


def cmd_vg(a) -> int:
    small, large = cachegrind_total(a.small), cachegrind_total(a.large)
    per = (large - small) / (4 * a.n)
    rec = {"type": "vg", "target": a.target, "scenario": a.scenario, "n": a.n,
           "ir_small": small, "ir_large": large, "ins_per_req": per}
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"  valgrind {a.scenario:3} {a.target:7} I({a.n})={small:,}  I({5 * a.n})={large:,}  "
          f"=> {per:,.0f} instructions/request", flush=True)
    return 0


def cmd_meta(a) -> int:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    u = os.uname()
    rec = {"type": "meta", "nproc": os.cpu_count(), "cpu_model": model,
           "kernel": f"{u.sysname} {u.release} {u.machine}",
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "clk_tck": CLK_TCK}
    for kv in a.pairs:
        k, _, v = kv.partition("=")
        rec[k] = v
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


def cmd_ports(a) -> int:
    socks = []
    for _ in range(a.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()
    return 0


def cmd_wait_port(a) -> int:
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", a.port), timeout=1).close()
            return 0
        except OSError:
            time.sleep(0.05)
    print(f"127.0.0.1:{a.port} not accepting after {a.timeout} s", file=sys.stderr)
    return 1


def cmd_wait_log(a) -> int:
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            if a.text in Path(a.file).read_text(errors="replace"):
                return 0
        except OSError:
            pass
        if a.pid and not Path(f"/proc/{a.pid}").exists():
            print(f"process {a.pid} exited before logging {a.text!r}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"{a.file}: no {a.text!r} after {a.timeout} s", file=sys.stderr)
    return 1


def cmd_check(a) -> int:
    with urllib.request.urlopen(a.url, timeout=5) as r:
        body = r.read()
        if r.status != 200 or body != b"ok":
            print(f"{a.url}: status {r.status}, body {body[:80]!r}", file=sys.stderr)
            return 1
    return 0


def cmd_affinity(a) -> int:
    bad = 0
    for pid in family(a.pids):
        for task in sorted(os.listdir(f"/proc/{pid}/task")):
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    cpus = line.split()[1]
                    if cpus != a.expect:
                        print(f"  warning: pid {pid} thread {task} may run on CPUs {cpus}, expected {a.expect}",
                              file=sys.stderr)
                        bad += 1
    return 1 if bad else 0


# ---------------------------------------------------------------- report

def _med(vals):
    vals = [v for v in vals if v is not None and v == v]  # drop None and NaN
    return statistics.median(vals) if vals else None


def _fmt(v, spec=".1f", none="—"):
    return none if v is None else format(v, spec)


def _mib(kb):
    return None if kb is None else kb / 1024


def cmd_report(a) -> int:
    recs = [json.loads(line) for line in Path(a.results).read_text().splitlines() if line.strip()]
    meta: dict = {}
    for r in recs:
        if r["type"] == "meta":
            meta.update(r)
    runs = [r for r in recs if r["type"] == "run"]
    mems = [r for r in recs if r["type"] == "mem"]
    vgs = [r for r in recs if r["type"] == "vg"]
    targets = ["direct", "wasp", "nginx"]
    scenarios = [s for s in ("h1", "h2c") if any(r["scenario"] == s for r in runs + vgs)]
    labels = {"h1": "HTTP/1.1", "h2c": "h2c"}

    def sel(scn, tgt, kind):
        return [r for r in runs if r["scenario"] == scn and r["target"] == tgt and r["kind"] == kind]

    def mem(tgt, when, key):
        v = [m[key] for m in mems if m["target"] == tgt and m["when"] == when]
        return v[-1] if v else None

    L = []
    L.append(f"# wasp benchmark: direct vs wasp vs nginx")
    L.append("")
    L.append(f"- Date: {meta.get('date', '?')}")
    L.append(f"- Machine: {meta.get('nproc', '?')} CPUs (nproc), {meta.get('cpu_model', '?')}, {meta.get('kernel', '?')}")
    for k in ("wasp", "nginx", "wrk", "h2load", "valgrind"):
        if k in meta:
            L.append(f"- {k}: {meta[k]}")
    L.append(f"- Parameters: {meta.get('params', '?')}")
    L.append(f"- Pinning: load generator on CPU 0; proxy and upstream on CPU 1.")
    L.append("")
    L.append("| scenario | target | CPU µs/req | upstream µs/req | req/s | vs direct | p50 added | p99 added "
             "| RSS idle | RSS load | VmHWM | instr/req |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scn in scenarios:
        d_rps = _med([r["rps"] for r in sel(scn, "direct", "tput")])
        d_lat = sel(scn, "direct", "lat")
        d_p50, d_p99 = _med([r.get("p50_us") for r in d_lat]), _med([r.get("p99_us") for r in d_lat])
        for tgt in targets:
            tp, lat = sel(scn, tgt, "tput"), sel(scn, tgt, "lat")
            vg = [v for v in vgs if v["scenario"] == scn and v["target"] == tgt]
            if not tp and not lat and not vg:
                continue
            cpu = [r["cpu_us_per_req"] for r in tp if r["cpu_us_per_req"] is not None]
            ups = [r["upstream_us_per_req"] for r in tp]
            rps = [r["rps"] for r in tp]
            cpu_s = "—"
            if cpu:
                cpu_s = f"{_med(cpu):.2f}"
                if len(cpu) > 1:
                    cpu_s += f" ({min(cpu):.2f}–{max(cpu):.2f})"
                if tgt == "direct":
                    cpu_s += " (upstream)"
            rps_s = "—"
            if rps:
                rps_s = f"{_med(rps):,.0f}"
                if len(rps) > 1:
                    rps_s += f" ({min(rps):,.0f}–{max(rps):,.0f})"
            ratio = f"{_med(rps) / d_rps:.2f}×" if rps and d_rps else "—"
            p50, p99 = _med([r.get("p50_us") for r in lat]), _med([r.get("p99_us") for r in lat])
            if tgt == "direct":
                p50_s = f"{p50:.0f} µs (abs)" if p50 is not None else "—"
                p99_s = f"{p99:.0f} µs (abs)" if p99 is not None else "—"
            else:
                p50_s = f"{p50 - d_p50:+.0f} µs" if p50 is not None and d_p50 is not None else "—"
                p99_s = f"{p99 - d_p99:+.0f} µs" if p99 is not None and d_p99 is not None else "—"
            rss_load = max([r["rss_max_kb"] for r in tp + lat] or [None], key=lambda v: v or 0)
            mem_tgt = "upstream" if tgt == "direct" else tgt
            ins = _med([v["ins_per_req"] for v in vg])
            errs = sum(r["errors"] for r in tp + lat)
            name = tgt + (f" ⚠ {errs} errors" if errs else "")
            L.append(f"| {labels[scn]} | {name} | {cpu_s} | {_fmt(_med(ups), '.2f')} | {rps_s} | {ratio} "
                     f"| {p50_s} | {p99_s} | {_fmt(_mib(mem(mem_tgt, 'idle', 'rss_kb')))} MiB "
                     f"| {_fmt(_mib(rss_load))} MiB | {_fmt(_mib(mem(mem_tgt, 'end', 'hwm_kb')))} MiB "
                     f"| {_fmt(ins, ',.0f')} |")
    L.append("")
    L.append("Memory (MiB; nginx and the upstream: master + worker summed):")
    L.append("")
    L.append("| process | VmRSS idle | VmRSS max under load | VmRSS after load | VmHWM after load |")
    L.append("|---|---:|---:|---:|---:|")
    for tgt, subj in (("upstream", "direct"), ("wasp", "wasp"), ("nginx", "nginx")):
        peak = max([r["rss_max_kb"] for r in runs if r["target"] == subj] or [None], key=lambda v: v or 0)
        L.append(f"| {tgt} | {_fmt(_mib(mem(tgt, 'idle', 'rss_kb')))} | {_fmt(_mib(peak))} "
                 f"| {_fmt(_mib(mem(tgt, 'end', 'rss_kb')))} | {_fmt(_mib(mem(tgt, 'end', 'hwm_kb')))} |")
    other = _med([r.get("other_cpu_pct") for r in runs])
    if other is not None and other >= 10:
        L.append("")
        L.append(f"**Warning:** other processes used a median {other:.0f}% of a CPU during the runs; "
                 "CPU/request and req/s are disturbed. Rerun on a quiet machine.")
    L.append("")
    L.append("Columns: *CPU µs/req* = utime+stime of the proxy process(es) (nginx: master + worker) "
             "over the throughput run ÷ requests completed, median over repetitions (min–max); for *direct* "
             "it is the upstream's own cost. *upstream µs/req* = the shared upstream's CPU per request in the "
             "same run (subtract to compare; in the h2c rows the proxies talk HTTP/1.1 to it, direct talks h2c). "
             "*req/s* = throughput at saturation (wrk/h2load, 50 connections), noisy on shared machines. "
             "*p50/p99 added* = latency at a fixed ~2k req/s (h2load --rps, 4 connections) minus direct's. "
             "*RSS* = VmRSS after start (idle) and the highest sample during that scenario's load; *VmHWM* at the "
             "end of all load (direct rows: the upstream nginx, master + worker). "
             "*instr/req* = user-space instructions per request under valgrind (cachegrind), (I(5N)−I(N))/4N.")
    # per-repetition details
    L.append("")
    L.append("<details><summary>Per-run values</summary>")
    L.append("")
    L.append("| scenario | kind | rep | target | requests | req/s | CPU µs/req | upstream µs/req | p50 µs | p99 µs "
             "| errors | other CPU % | steal % |")
    L.append("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        L.append(f"| {r['scenario']} | {r['kind']} | {r['rep']} | {r['target']} | {r['requests']} | {r['rps']:,.0f} "
                 f"| {_fmt(r['cpu_us_per_req'], '.2f')} | {_fmt(r['upstream_us_per_req'], '.2f')} "
                 f"| {_fmt(r.get('p50_us'), '.0f')} | {_fmt(r.get('p99_us'), '.0f')} | {r['errors']} "
                 f"| {_fmt(r.get('other_cpu_pct'))} | {_fmt(r.get('steal_pct'))} |")
    for v in vgs:
        L.append(f"| {v['scenario']} | valgrind | | {v['target']} | N={v['n']} | | | | | | "
                 f"I(N)={v['ir_small']:,} I(5N)={v['ir_large']:,} | | |")
    L.append("")
    L.append("*other CPU %* = CPU time used on the machine during the run by anything but the servers and the "
             "load generator (100% = one core); high values mean the numbers of that run are disturbed.")
    L.append("")
    L.append("</details>")
    if meta.get("notes"):
        L.append("")
        L.append("Notes:")
        for n in meta["notes"].split(" || "):
            if n.strip():
                L.append(f"- {n.strip()}")
    text = "\n".join(L) + "\n"
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("run")
    s.add_argument("--scenario", required=True)
    s.add_argument("--target", required=True)
    s.add_argument("--kind", required=True, choices=["tput", "lat", "warmup"])
    s.add_argument("--rep", type=int, default=0)
    s.add_argument("--subject", type=int, nargs="+", required=True)
    s.add_argument("--upstream", type=int, nargs="+", required=True)
    s.add_argument("--latency-log")
    s.add_argument("--quiet-wait", type=float, default=0,
                   help="first wait up to this many seconds for the machine to be idle")
    s.add_argument("--raw-dir", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("mem")
    s.add_argument("--target", required=True)
    s.add_argument("--when", required=True)
    s.add_argument("--pids", type=int, nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_mem)

    s = sub.add_parser("vg")
    s.add_argument("--target", required=True)
    s.add_argument("--scenario", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--small", required=True)
    s.add_argument("--large", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_vg)

    s = sub.add_parser("meta")
    s.add_argument("--out", required=True)
    s.add_argument("pairs", nargs="*")
    s.set_defaults(fn=cmd_meta)

    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s.set_defaults(fn=cmd_ports)

    s = sub.add_parser("wait-port")
    s.add_argument("port", type=int)
    s.add_argument("timeout", type=float, nargs="?", default=30)
    s.set_defaults(fn=cmd_wait_port)

    s = sub.add_parser("wait-log")
    s.add_argument("file")
    s.add_argument("text")
    s.add_argument("timeout", type=float, nargs="?", default=30)
    s.add_argument("--pid", type=int)
    s.set_defaults(fn=cmd_wait_log)

    s = sub.add_parser("check")
    s.add_argument("url")
    s.set_defaults(fn=cmd_check)

    s = sub.add_parser("affinity")
    s.add_argument("--expect", default="1")
    s.add_argument("pids", type=int, nargs="+")
    s.set_defaults(fn=cmd_affinity)

    s = sub.add_parser("report")
    s.add_argument("--results", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_report)

    a = p.parse_args()
    if getattr(a, "command", None) and a.command[0] == "--":
        a.command = a.command[1:]
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
