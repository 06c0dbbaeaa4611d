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
  jwt --secret S [--bad]       print an HS256 JWT (sub "bench", exp in 10 years); --bad: a wrong signature
  perf-check                   exit 0 if `perf stat -e instructions:u` counts on this machine
  repeat --seconds S -- H2LOAD...
                               run an h2load command again and again until S seconds have
                               passed; print one h2load-style summary of all of them (the TLS
                               full-handshake scenario: a fresh h2load process per batch, so
                               every connection makes a full handshake)
  report --results FILE --out FILE
                               print and save the markdown summary

  run also takes --perf-pid P (count P's user-space instructions with perf stat
  over the load), --metrics URL (record how wasp's wasp_tls_* counters on its
  admin /metrics changed over the run) and --expect-non2xx (every response must be non-2xx: a filter
  answering 401 itself; then non-2xx responses are not errors but 2xx are).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
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
    non2xx = socket_errors = 0
    if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)):
        non2xx = int(m.group(1))
    if (m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)):
        socket_errors = sum(int(g) for g in m.groups())
    return {"requests": requests, "rps": rps, "errors": non2xx + socket_errors,
            "non2xx": non2xx, "socket_errors": socket_errors}


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


def parse_tls_info(text: str) -> dict:
    """h2load's TLS lines (first occurrence): protocol, cipher, server temp key (group), ALPN."""
    out = {}
    for key, pat in (("tls_protocol", r"TLS Protocol: (\S+)"), ("tls_cipher", r"Cipher: (\S+)"),
                     ("tls_group", r"Server Temp Key: (.+)"), ("alpn", r"Application protocol: (\S+)")):
        if (m := re.search(pat, text)):
            out[key] = m.group(1).strip()
    return out


def scrape_counters(url: str, prefix: str = "wasp_tls_") -> dict[str, float]:
    """Counters (name{labels} -> value) from a Prometheus text page whose names start with prefix."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError as e:
        return {"error": str(e)}
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix) and "_total" in line:
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


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


PERF_EVENT = "instructions:u"


def perf_start(pid: int, out: str) -> subprocess.Popen:
    """perf stat counting PID's user-space instructions (all its threads) until SIGINT."""
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", PERF_EVENT, "-p", str(pid), "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def perf_stop(proc: subprocess.Popen, out: str) -> tuple[int | None, str]:
    """Stop perf stat; (instructions or None, note)."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    try:
        text = Path(out).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[2].startswith("instructions"):
            if f[0].strip().isdigit():
                return int(f[0]), ""
            return None, f"perf: {f[0].strip()}"
    return None, "perf: no count (" + (err.strip().splitlines() or ["no output"])[-1] + ")"


def cmd_perf_check(a) -> int:
    try:
        p = subprocess.run(["perf", "stat", "-x", ",", "-e", PERF_EVENT, "true"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"perf not usable: {e}")
        return 1
    for line in p.stderr.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[2].startswith("instructions"):
            if f[0].strip().isdigit():
                print(f"perf counts {PERF_EVENT}")
                return 0
            print(f"perf stat -e {PERF_EVENT}: {f[0].strip()}")
            return 1
    print("perf stat gave no count: " + " ".join(p.stderr.split())[:200])
    return 1


def cmd_jwt(a) -> int:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps({"sub": "bench", "iat": now, "exp": now + 10 * 365 * 86400},
                          separators=(",", ":")).encode())
    key = a.secret.encode() + (b"-not-the-key" if a.bad else b"")
    sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    print(f"{head}.{body}.{sig}")
    return 0


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

    # wasp's TLS counters, read outside the measured interval (the scrape costs wasp CPU too).
    metrics0 = scrape_counters(a.metrics) if a.metrics else None
    m0, s0, g0 = *machine_ticks(), children_cpu_s()
    c0, u0, o0, t0 = cpu_ticks(subject), cpu_ticks(upstream), cpu_ticks(ours), time.monotonic()
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    perf_out = str(Path(a.raw_dir, f"perf-{a.scenario}-{a.target}-{a.kind}-{a.rep}.csv"))
    perf = perf_start(a.perf_pid, perf_out) if a.perf_pid else None
    proc = subprocess.run(a.command, capture_output=True, text=True)
    instructions, perf_note = perf_stop(perf, perf_out) if perf else (None, "")
    done.set()
    th.join()
    c1, u1, o1, t1 = cpu_ticks(subject), cpu_ticks(upstream), cpu_ticks(ours), time.monotonic()
    m1, s1, g1 = *machine_ticks(), children_cpu_s()
    metrics1 = scrape_counters(a.metrics) if a.metrics else None
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
    if a.expect_non2xx:
        if "non2xx" not in parsed:
            print("--expect-non2xx needs wrk output", file=sys.stderr)
            return 1
        # The filter answers every request itself: non-2xx is the expected outcome, a 2xx is the error.
        parsed["errors"] = parsed["socket_errors"] + (parsed["requests"] - parsed["non2xx"])
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
    if a.expect_non2xx:
        rec["expect_non2xx"] = True
    rec.update(parse_tls_info(out))
    if metrics0 is not None:
        if "error" in metrics0 or "error" in metrics1:
            rec["metrics_error"] = metrics0.get("error") or metrics1.get("error")
        else:
            delta = {k: v - metrics0.get(k, 0) for k, v in metrics1.items() if v != metrics0.get(k, 0)}
            rec["metrics_delta"] = delta
            rec["tls_handshakes"] = int(sum(v for k, v in delta.items() if k.startswith("wasp_tls_handshakes_total")))
            rec["tls_handshake_errors"] = int(sum(v for k, v in delta.items()
                                                  if k.startswith("wasp_tls_handshake_errors_total")))
    if perf:
        rec["perf_instructions"] = instructions
        rec["perf_ins_per_req"] = instructions / n if instructions is not None and n else None
        if perf_note:
            rec["perf_note"] = perf_note
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
    if rec.get("perf_ins_per_req") is not None:
        line += f"  {rec['perf_ins_per_req']:,.0f} instr/req"
    if a.expect_non2xx:
        line += f"  non-2xx {parsed['non2xx']} (expected)"
    if "tls_handshakes" in rec:
        line += f"  handshakes {rec['tls_handshakes']}"
        if rec["tls_handshake_errors"]:
            line += f"  HANDSHAKE ERRORS {rec['tls_handshake_errors']}"
    if parsed["errors"]:
        line += f"  ERRORS {parsed['errors']}"
    if rec["other_cpu_pct"] >= 5 or rec["steal_pct"] >= 5:
        line += f"  (noise: other processes {rec['other_cpu_pct']}% CPU, steal {rec['steal_pct']}%)"
    print(line, flush=True)
    return 0


def cmd_repeat(a) -> int:
    """Run an h2load command until a.seconds have passed; print one summary in h2load's format."""
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    req = dict.fromkeys(keys, 0)
    codes = [0, 0, 0, 0]
    runs, first = 0, ""
    t0 = time.monotonic()
    while runs == 0 or time.monotonic() - t0 < a.seconds:
        p = subprocess.run(a.command, capture_output=True, text=True)
        out = p.stdout + p.stderr
        m = re.search(r"requests: " + ", ".join(rf"(\d+) {k}" for k in keys), out)
        c = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        if p.returncode != 0 or not (m and c):
            print(f"repeat: run {runs + 1} failed (exit {p.returncode}):\n{out}", file=sys.stderr)
            return 1
        for k, v in zip(keys, m.groups()):
            req[k] += int(v)
        codes = [x + int(y) for x, y in zip(codes, c.groups())]
        runs += 1
        first = first or out
    wall = time.monotonic() - t0
    tls = "\n".join(line for line in first.splitlines()
                    if line.startswith(("TLS Protocol:", "Cipher:", "Server Temp Key:", "Application protocol:")))
    print(f"{runs} runs of: {' '.join(a.command)}\n{tls}\n"
          f"finished in {wall:.2f}s, {req['succeeded'] / wall:.2f} req/s, 0B/s\n"
          "requests: " + ", ".join(f"{req[k]} {k}" for k in keys) + "\n"
          f"status codes: {codes[0]} 2xx, {codes[1]} 3xx, {codes[2]} 4xx, {codes[3]} 5xx")
    return 0


def cmd_mem(a) -> int:
    pids = family(a.pids)
    rec = {"type": "mem", "target": a.target, "when": a.when, "pids": pids,
           "rss_kb": status_kb(pids, "VmRSS"), "hwm_kb": status_kb(pids, "VmHWM"),
           "anon_kb": status_kb(pids, "RssAnon")}
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"  memory {a.target:7} {a.when:5} VmRSS {rec['rss_kb'] / 1024:.1f} MiB  VmHWM {rec['hwm_kb'] / 1024:.1f} MiB"
          f"  RssAnon {rec['anon_kb'] / 1024:.1f} MiB"
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


def process_age_ms(pid: int) -> float:
    """Milliseconds since PID started (/proc/PID/stat field 22 vs /proc/uptime; 1/CLK_TCK resolution)."""
    start = int(_stat_fields(pid)[19]) / CLK_TCK
    return (float(Path("/proc/uptime").read_text().split()[0]) - start) * 1000


def cmd_wait_log(a) -> int:
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            if a.text in Path(a.file).read_text(errors="replace"):
                if a.record_out and a.pid:
                    rec = {"type": "startup", "target": a.record_target, "ms": round(process_age_ms(a.pid))}
                    with open(a.record_out, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                return 0
        except OSError:
            pass
        if a.pid and not Path(f"/proc/{a.pid}").exists():
            print(f"process {a.pid} exited before logging {a.text!r}", file=sys.stderr)
            return 1
        time.sleep(0.01 if a.record_out else 0.05)
    print(f"{a.file}: no {a.text!r} after {a.timeout} s", file=sys.stderr)
    return 1


def cmd_check(a) -> int:
    req = urllib.request.Request(a.url)
    for h in a.header:
        k, _, v = h.partition(":")
        req.add_header(k.strip(), v.strip())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, headers, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read()
    want_body = b"ok" if a.status == 200 else None
    if status != a.status or (want_body is not None and body != want_body):
        print(f"{a.url}: status {status} (expected {a.status}), body {body[:120]!r}", file=sys.stderr)
        return 1
    for name in a.expect_header:
        if headers.get(name) is None:
            print(f"{a.url}: no {name} header in the response (headers: {dict(headers)})", file=sys.stderr)
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


FILTER_TARGETS = {
    "wasp-nf": ("`/nf/`", "no filter"),
    "wasp-hr": ("`/hr/`", "header-rewrite (set a request header to `{request_id}`, add a response header): "
                "standing edits, made by wasp with no call into the filter"),
    "wasp-hrcall": ("`/hrcall/`", "header-rewrite, the same rules and a path prefix: the rules as on `/hr/`, "
                    "plus one call into the filter per request"),
    "wasp-chain": ("`/chain/`", "auth (HS256 JWT) + rate-limit (kv, never limits) + header-rewrite"),
    "wasp-deny": ("`/deny/`", "auth rejecting a badly signed token: the filter answers 401, no upstream call"),
}
MEM_TARGETS = ["wasp-mem-nf", "wasp-mem-f1", "wasp-mem-f10", "wasp-mem-f10same"]


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def filters_report(runs, mems, vgs, startups, meta) -> list[str]:
    """The "Filters" section: filter routes of one wasp process vs its no-filter route, and RSS with filters loaded."""
    fr = [r for r in runs if r["target"] in FILTER_TARGETS and r["kind"] == "tput"]
    fm = [m for m in mems if m["target"] in MEM_TARGETS]
    if not fr and not fm:
        return []
    L = ["", "## Filters", ""]
    L.append(f"- One wasp process ({meta.get('filters_process', 'workers: 1, access log off')}), the routes "
             "below by path prefix, all to the same upstream; wrk -t2 -c50 (HTTP/1.1 keep-alive), pinned like "
             "the core rows, the four routes interleaved with their order rotated, medians over the repetitions "
             "(min–max). *added* = difference to `wasp-nf` of the same process and run.")
    if meta.get("filter_modules"):
        L.append(f"- Filter modules: {meta['filter_modules']}")
    if meta.get("perf"):
        L.append(f"- Instructions: {meta['perf']}")
    L.append("")

    def tsel(t):
        return [r for r in fr if r["target"] == t]

    def med_range(vals, spec):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "—", None
        m = _med(vals)
        out = format(m, spec)
        if len(vals) > 1:
            out += f" ({format(min(vals), spec)}–{format(max(vals), spec)})"
        return out, m

    nf = tsel("wasp-nf")
    nf_cpu = _med([r["cpu_us_per_req"] for r in nf])
    nf_rps = _med([r["rps"] for r in nf])
    vg_ins = {t: _med([v["ins_per_req"] for v in vgs if v["target"] == t]) for t in FILTER_TARGETS}
    perf_ins = {t: _med([r.get("perf_ins_per_req") for r in tsel(t)]) for t in FILTER_TARGETS}
    perf_notes = sorted({r["perf_note"] for r in fr if r.get("perf_note")})
    nf_ins = vg_ins.get("wasp-nf") if vg_ins.get("wasp-nf") is not None else perf_ins.get("wasp-nf")
    L.append("| route | filters | CPU µs/req | added vs no filter | upstream µs/req | instr/req | added instr/req "
             "| req/s | vs no filter | responses |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    summary = {}
    for t, (route, desc) in FILTER_TARGETS.items():
        tp = tsel(t)
        if not tp:
            continue
        cpu_s, cpu = med_range([r["cpu_us_per_req"] for r in tp], ".2f")
        rps_s, rps = med_range([r["rps"] for r in tp], ",.0f")
        added = cpu - nf_cpu if cpu is not None and nf_cpu is not None and t != "wasp-nf" else None
        ratio = rps / nf_rps if rps and nf_rps else None
        ins, src = (vg_ins[t], "valgrind") if vg_ins[t] is not None else (perf_ins[t], "perf")
        added_n = ins - nf_ins if ins is not None and nf_ins is not None and t != "wasp-nf" else None
        added_ins = _fmt(added_n, "+,.0f")
        if ins is not None:
            ins_s = f"{ins:,.0f}" + (" (perf)" if src == "perf" else "")
        else:
            ins_s = "n/a (" + ("; ".join(perf_notes) if perf_notes else "not measured") + "; see *Instructions* above)"
        errs = sum(r["errors"] for r in tp)
        total = sum(r["requests"] for r in tp)
        non2xx = sum(r.get("non2xx", 0) for r in tp)
        if any(r.get("expect_non2xx") for r in tp):
            resp = f"{non2xx:,} of {total:,} non-2xx (401, expected)"
        else:
            resp = f"{total - non2xx:,} 2xx" + (f", {non2xx:,} non-2xx" if non2xx else "")
        if errs:
            resp += f" ⚠ {errs:,} errors"
        L.append(f"| {route} | {desc} | {cpu_s} | {_fmt(added, '+.2f')}{' µs' if added is not None else ''} "
                 f"| {_fmt(_med([r['upstream_us_per_req'] for r in tp]), '.2f')} | {ins_s} | {added_ins} "
                 f"| {rps_s} | {_fmt(ratio, '.2f')}{'×' if ratio is not None else ''} | {resp} |")
        summary[t] = (added, ratio, added_n)

    # memory
    def memv(t, when, key="rss_kb"):
        v = [m.get(key) for m in fm if m["target"] == t and m["when"] == when]
        return v[-1] if v else None

    if fm:
        L.append("")
        L.append("RSS with filters loaded: a separate wasp process per line (same settings, one route per "
                 f"filter), VmRSS 1 s after start (idle) and after {meta.get('mem_warmup', 'a warm-up')} "
                 "through the first filter's route. *per filter* = (VmRSS − no filter's) ÷ filters loaded, "
                 "in MB (10⁶ bytes; the target is ≤ 2 MB per loaded filter). *anon* is RssAnon, the process's "
                 "private memory; the rest of VmRSS is file pages, mostly wasp's own code (shared by every "
                 "process running the binary, and dropped by the kernel under memory pressure).")
        L.append("")
        L.append("| process | filters loaded | start-up | VmRSS idle | anon idle | per filter (idle) "
                 "| VmRSS after warm-up | anon after warm-up | per filter (warm) | VmHWM |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        base_idle, base_warm = memv("wasp-mem-nf", "idle"), memv("wasp-mem-nf", "warm")
        nfilters = {"wasp-mem-nf": 0, "wasp-mem-f1": 1, "wasp-mem-f10": 10, "wasp-mem-f10same": 10}
        for t in MEM_TARGETS:
            idle, warm = memv(t, "idle"), memv(t, "warm")
            if idle is None and warm is None:
                continue
            n = nfilters[t]
            st = [x["ms"] for x in startups if x["target"] == t]
            per_i = (idle - base_idle) * 1024 / 1e6 / n if n and idle and base_idle else None
            per_w = (warm - base_warm) * 1024 / 1e6 / n if n and warm and base_warm else None
            summary[t] = (per_i, per_w)
            L.append(f"| {t.removeprefix('wasp-mem-')} | {meta.get('mem_desc_' + t, str(n))} "
                     f"| {_fmt(st[-1] if st else None, '.0f')}{' ms' if st else ''} "
                     f"| {_fmt(_mib(idle))} MiB | {_fmt(_mib(memv(t, 'idle', 'anon_kb')))} MiB "
                     f"| {_fmt(per_i, '.2f')}{' MB' if per_i is not None else ''} "
                     f"| {_fmt(_mib(warm))} MiB | {_fmt(_mib(memv(t, 'warm', 'anon_kb')))} MiB "
                     f"| {_fmt(per_w, '.2f')}{' MB' if per_w is not None else ''} "
                     f"| {_fmt(_mib(memv(t, 'warm', 'hwm_kb')))} MiB |")
        f1, f10 = memv("wasp-mem-f1", "idle"), memv("wasp-mem-f10", "idle")
        if f1 and f10:
            L.append("")
            L.append(f"Marginal cost of a filter once the engine exists ((10 distinct − 1) ÷ 9, idle): "
                     f"{(f10 - f1) * 1024 / 1e6 / 9:.2f} MB; the engine with its first filter: "
                     f"{(f1 - base_idle) * 1024 / 1e6:.1f} MB." if base_idle else "")

    # targets
    L.append("")
    L.append("Targets:")
    L.append("")
    hr, chain = summary.get("wasp-hr"), summary.get("wasp-chain")
    if hr:
        L.append(f"- one header-rewrite filter adds ≤ 3 µs CPU per request: {_fmt(hr[0], '+.2f')} µs — "
                 f"{_verdict(None if hr[0] is None else hr[0] <= 3)}")
        L.append(f"- and ≤ 5k instructions per request: {_fmt(hr[2], '+,.0f')} — "
                 f"{_verdict(None if hr[2] is None else hr[2] <= 5000)}")
    hrcall = summary.get("wasp-hrcall")
    if hrcall:
        L.append(f"- (for comparison, not a target) header-rewrite with a call into the filter adds "
                 f"{_fmt(hrcall[0], '+.2f')} µs and {_fmt(hrcall[2], '+,.0f')} instructions per request")
    if chain:
        L.append(f"- auth + rate-limit + header-rewrite adds ≤ 10 µs CPU per request: {_fmt(chain[0], '+.2f')} µs — "
                 f"{_verdict(None if chain[0] is None else chain[0] <= 10)}")
    for t, label in (("wasp-mem-f10", "10 distinct filter entries"), ("wasp-mem-f10same", "10 entries of one module")):
        if t in summary:
            per_i, per_w = summary[t]
            worst = max([v for v in (per_i, per_w) if v is not None], default=None)
            L.append(f"- ≤ 2 MB RSS per loaded filter ({label}): {_fmt(per_i, '.2f')} MB idle, "
                     f"{_fmt(per_w, '.2f')} MB after warm-up — {_verdict(None if worst is None else worst <= 2)}")
    if fr:
        L.append("")
        L.append("<details><summary>Per-run values (filters)</summary>")
        L.append("")
        L.append("| rep | route | requests | req/s | CPU µs/req | upstream µs/req | instr/req | non-2xx | errors "
                 "| other CPU % | steal % |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in fr:
            L.append(f"| {r['rep']} | {r['target']} | {r['requests']} | {r['rps']:,.0f} "
                     f"| {_fmt(r['cpu_us_per_req'], '.2f')} | {_fmt(r['upstream_us_per_req'], '.2f')} "
                     f"| {_fmt(r.get('perf_ins_per_req'), ',.0f')} | {r.get('non2xx', 0)} | {r['errors']} "
                     f"| {_fmt(r.get('other_cpu_pct'))} | {_fmt(r.get('steal_pct'))} |")
        for v in vgs:
            if v["target"] in FILTER_TARGETS:
                L.append(f"| | {v['target']} (valgrind) | N={v['n']}: I(N)={v['ir_small']:,}, "
                         f"I(5N)={v['ir_large']:,} | | | | {v['ins_per_req']:,.0f} | | | | |")
        L.append("")
        L.append("</details>")
    return L


TLS_SCENARIOS = {
    "tls-h1": "HTTP/1.1 keep-alive",
    "tls-h2": "HTTP/2 keep-alive (ALPN h2)",
    "tls-hs": "full handshake per request",
    "tls-res": "resumed handshake per request",
}
TLS_TARGETS = ["wasp", "nginx"]


def tls_report(runs, mems, vgs, meta) -> list[str]:
    """The "TLS" section: wasp vs nginx terminating TLS with the same certificate, same upstream."""
    tr = [r for r in runs if r["scenario"] in TLS_SCENARIOS and r["kind"] == "tput"]
    tv = [v for v in vgs if v["scenario"] in TLS_SCENARIOS]
    if not tr and not tv:
        return []
    L = ["", "## TLS", ""]
    L.append(f"- Both proxies terminate TLS with the same certificate ({meta.get('tls_cert', '?')}) and proxy "
             "in plain HTTP/1.1 to the shared upstream; wasp: one HTTP listener with `tls: {cert, key}` "
             "(ALPN h2 + http/1.1, TLS 1.2 + 1.3, resumption on), otherwise the core config; nginx: "
             f"{meta.get('tls_nginx', 'bench/nginx-tls.conf')}. Pinned like the core rows, targets interleaved with "
             "their order rotated, medians over the repetitions (min–max).")
    for scn in TLS_SCENARIOS:
        if meta.get(f"tls_cmd_{scn}"):
            L.append(f"- *{TLS_SCENARIOS[scn]}*: `{meta[f'tls_cmd_{scn}']}`")
    for t in TLS_TARGETS:
        if meta.get(f"tls_probe_{t}"):
            L.append(f"- Negotiated with {t} (openssl s_client): {meta[f'tls_probe_{t}']}")
    seen = {}
    for r in tr:
        if r.get("tls_protocol"):
            seen.setdefault((r["scenario"], r["target"]),
                            f"{r['tls_protocol']} {r.get('tls_cipher', '?')}, {r.get('tls_group', '?')}, "
                            f"ALPN {r.get('alpn', '?')}")
    if seen:
        L.append("- Negotiated by h2load: " + "; ".join(f"{scn} {t}: {v}" for (scn, t), v in seen.items())
                 + " (wrk: OpenSSL's defaults, not printed).")
    L.append("")
    L.append("| scenario | target | CPU µs/req | wasp ÷ nginx | upstream µs/req | req/s | RSS idle | RSS load "
             "| instr/req | wasp handshakes / connections | errors |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def idle(t):
        v = [m["rss_kb"] for m in mems if m["target"] == f"{t}-tls" and m["when"] == "idle"]
        return v[-1] if v else None


    def med_range(vals, spec):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "—", None
        out = format(_med(vals), spec)
        if len(vals) > 1:
            out += f" ({format(min(vals), spec)}–{format(max(vals), spec)})"
        return out, _med(vals)

    for scn, label in TLS_SCENARIOS.items():
        cpu_by = {t: _med([r["cpu_us_per_req"] for r in tr if r["scenario"] == scn and r["target"] == t])
                  for t in TLS_TARGETS}
        for t in TLS_TARGETS:
            tp = [r for r in tr if r["scenario"] == scn and r["target"] == t]
            vg = [v["ins_per_req"] for v in tv if v["scenario"] == scn and v["target"] == t]
            if not tp and not vg:
                continue
            cpu_s, cpu = med_range([r["cpu_us_per_req"] for r in tp], ".2f")
            rps_s, _ = med_range([r["rps"] for r in tp], ",.0f")
            ratio = (f"{cpu / cpu_by['nginx']:.2f}×" if t == "wasp" and cpu and cpu_by.get("nginx") else "")
            hs = [r for r in tp if "tls_handshakes" in r]
            if hs:
                n_hs = sum(r["tls_handshakes"] for r in hs)
                if scn in ("tls-hs", "tls-res"):
                    hs_s = f"{n_hs:,} / {sum(r['requests'] + r['errors'] for r in hs):,}"
                else:
                    hs_s = f"{n_hs:,} in {len(hs)} runs"
                herr = sum(r.get("tls_handshake_errors", 0) for r in hs)
                if herr:
                    hs_s += f" ⚠ {herr} handshake errors"
            elif any(r.get("metrics_error") for r in tp):
                hs_s = "metrics unreadable"
            else:
                hs_s = "—"
            errs = sum(r["errors"] for r in tp)
            rss = max([r["rss_max_kb"] for r in tp] or [None], key=lambda v: v or 0)
            L.append(f"| {label} | {t} | {cpu_s} | {ratio} | {_fmt(_med([r['upstream_us_per_req'] for r in tp]), '.2f')} "
                     f"| {rps_s} | {_fmt(_mib(idle(t)))} MiB | {_fmt(_mib(rss))} MiB | {_fmt(_med(vg), ',.0f')} | {hs_s} "
                     f"| {('⚠ ' + format(errs, ',')) if errs else 0} |")
    L.append("")
    L.append("*CPU µs/req* = utime+stime of the proxy process(es) over the run ÷ completed requests (2xx); in the "
             "*handshake per request* rows every request is a new TCP + TLS connection, so it is the CPU per "
             "handshake (with its accept, one proxied request and the close), and *req/s* is handshakes/s "
             "(bounded by the single-CPU load generator when both targets show about the same). *wasp handshakes* "
             "= the change of `wasp_tls_handshakes_total` over the runs (connections = requests + errors). "
             "*instr/req* = cachegrind, (I(5N)−I(N))/4N, HTTP/1.1 keep-alive over TLS (h2load --h1 -c 10).")
    L.append("")
    L.append("<details><summary>Per-run values (TLS)</summary>")
    L.append("")
    L.append("| scenario | rep | target | requests | req/s | CPU µs/req | upstream µs/req | wasp handshakes | errors "
             "| other CPU % | steal % |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in tr:
        L.append(f"| {r['scenario']} | {r['rep']} | {r['target']} | {r['requests']} | {r['rps']:,.0f} "
                 f"| {_fmt(r['cpu_us_per_req'], '.2f')} | {_fmt(r['upstream_us_per_req'], '.2f')} "
                 f"| {r.get('tls_handshakes', '—')} | {r['errors']} "
                 f"| {_fmt(r.get('other_cpu_pct'))} | {_fmt(r.get('steal_pct'))} |")
    for v in tv:
        L.append(f"| {v['scenario']} valgrind | | {v['target']} | N={v['n']}: I(N)={v['ir_small']:,}, "
                 f"I(5N)={v['ir_large']:,} | | {v['ins_per_req']:,.0f} instr/req | | | | | |")
    L.append("")
    L.append("</details>")
    return L


def ratio_table(scenarios, labels, peers, cpu_of, ins_of) -> list[str]:
    """wasp ÷ each peer proxy, per scenario: median CPU µs/req and instructions/request (below 1: wasp is
    cheaper). cpu_of / ins_of (scenario, target) give the values whose medians are compared."""
    rows = []
    for scn in scenarios:
        for peer in peers:
            cells = []
            for of, spec in ((cpu_of, ".2f"), (ins_of, ",.0f")):
                w = _med([v for v in of(scn, "wasp") if v is not None])
                p = _med([v for v in of(scn, peer) if v is not None])
                cells += [f"{w / p:.2f}×" if w and p else "—", f"{_fmt(w, spec)} / {_fmt(p, spec)}"]
            rows.append(f"| {labels[scn]} | wasp ÷ {peer} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "wasp against the other proxies (medians; below 1× wasp is cheaper):", "",
            "| scenario | ratio | CPU µs/req | (wasp / peer) | instr/req | (wasp / peer) |",
            "|---|---|---:|---:|---:|---:|", *rows]


def cmd_report(a) -> int:
    recs = [json.loads(line) for line in Path(a.results).read_text().splitlines() if line.strip()]
    meta: dict = {}
    for r in recs:
        if r["type"] == "meta":
            meta.update(r)
    all_runs = [r for r in recs if r["type"] == "run"]
    # The filter section's runs have their own table (below); the core tables stay as they were.
    runs = [r for r in all_runs if r["target"] not in FILTER_TARGETS and r["scenario"] not in TLS_SCENARIOS]
    mems = [r for r in recs if r["type"] == "mem"]
    vgs = [r for r in recs if r["type"] == "vg"]
    targets = [t for t in ("direct", "wasp", "nginx", "pingora")
               if t in ("direct", "wasp", "nginx") or any(r["target"] == t for r in runs + vgs)]
    scenarios = [s for s in ("h1", "h2c") if any(r["scenario"] == s for r in runs + vgs)]
    labels = {"h1": "HTTP/1.1", "h2c": "h2c"}

    def sel(scn, tgt, kind):
        return [r for r in runs if r["scenario"] == scn and r["target"] == tgt and r["kind"] == kind]

    def mem(tgt, when, key):
        v = [m[key] for m in mems if m["target"] == tgt and m["when"] == when]
        return v[-1] if v else None

    L = []
    L.append("# wasp benchmark: " + " vs ".join(targets))
    L.append("")
    L.append(f"- Date: {meta.get('date', '?')}")
    L.append(f"- Machine: {meta.get('nproc', '?')} CPUs (nproc), {meta.get('cpu_model', '?')}, {meta.get('kernel', '?')}")
    for k in ("wasp", "nginx", "pingora", "wrk", "h2load", "valgrind"):
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
    L.extend(ratio_table(scenarios, labels, [t for t in targets if t not in ("direct", "wasp")],
                         lambda scn, tgt: [r["cpu_us_per_req"] for r in sel(scn, tgt, "tput")],
                         lambda scn, tgt: [v["ins_per_req"] for v in vgs if v["scenario"] == scn and v["target"] == tgt]))
    L.append("")
    L.append("Memory (MiB; nginx and the upstream: master + worker summed):")
    L.append("")
    L.append("| process | VmRSS idle | VmRSS max under load | VmRSS after load | VmHWM after load |")
    L.append("|---|---:|---:|---:|---:|")
    for tgt, subj in [("upstream", "direct")] + [(t, t) for t in targets[1:]]:
        peak = max([r["rss_max_kb"] for r in runs if r["target"] == subj] or [None], key=lambda v: v or 0)
        L.append(f"| {tgt} | {_fmt(_mib(mem(tgt, 'idle', 'rss_kb')))} | {_fmt(_mib(peak))} "
                 f"| {_fmt(_mib(mem(tgt, 'end', 'rss_kb')))} | {_fmt(_mib(mem(tgt, 'end', 'hwm_kb')))} |")
    other = _med([r.get("other_cpu_pct") for r in runs])
    if other is not None and other >= 10:
        L.append("")
        L.append(f"**Warning:** other processes used a median {other:.0f}% of a CPU during the runs; "
                 "CPU/request and req/s are disturbed. Rerun on a quiet machine.")
    L.append("")
    L.append("Columns: *CPU µs/req* = utime+stime of the proxy process(es) (nginx: master + worker; wasp and "
             "pingora: all threads of their one process) "
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
        if v["target"] in FILTER_TARGETS or v["scenario"] in TLS_SCENARIOS:
            continue
        L.append(f"| {v['scenario']} | valgrind | | {v['target']} | N={v['n']} | | | | | | "
                 f"I(N)={v['ir_small']:,} I(5N)={v['ir_large']:,} | | |")
    L.append("")
    L.append("*other CPU %* = CPU time used on the machine during the run by anything but the servers and the "
             "load generator (100% = one core); high values mean the numbers of that run are disturbed.")
    L.append("")
    L.append("</details>")
    L.extend(filters_report(all_runs, mems, vgs, [r for r in recs if r["type"] == "startup"], meta))
    L.extend(tls_report(all_runs, mems, vgs, meta))
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
    s.add_argument("--perf-pid", type=int, help="count this process's instructions:u with perf stat")
    s.add_argument("--metrics", help="wasp admin /metrics URL: record the change of its wasp_tls_* counters")
    s.add_argument("--expect-non2xx", action="store_true",
                   help="every response must be non-2xx (a filter answers itself); 2xx count as errors")
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("jwt")
    s.add_argument("--secret", required=True)
    s.add_argument("--bad", action="store_true", help="sign with another key (the signature does not verify)")
    s.set_defaults(fn=cmd_jwt)

    s = sub.add_parser("repeat")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_repeat)

    s = sub.add_parser("perf-check")
    s.set_defaults(fn=cmd_perf_check)

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
    s.add_argument("--record-out", help="append the start-up time (ms from the start of --pid) to this file")
    s.add_argument("--record-target", default="")
    s.set_defaults(fn=cmd_wait_log)

    s = sub.add_parser("check")
    s.add_argument("url")
    s.add_argument("--status", type=int, default=200, help="expected status (200: the body must be \"ok\")")
    s.add_argument("--header", action="append", default=[], help="request header NAME: VALUE")
    s.add_argument("--expect-header", action="append", default=[], help="response header that must be present")
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
