#!/usr/bin/env python3
"""Soak and overload: the real wasp binary under steady load, a connection storm and HTTP/2 abuse.

    cargo build --release -p wasp
    CARGO_TARGET_DIR=target/wasm cargo build --manifest-path filters/Cargo.toml --target wasm32-wasip2 --release
    pip install h2                  # phase C only (the script says so if it is missing)
    python3 bench/soak.py           # ~3 min; SOAK_SECONDS=10 for a quick look

Upstream: nginx with /work/shared/bench/nginx-upstream.conf (returns 200 "ok"), started and
stopped by PID. wasp (a private copy of the binary and the filter components, so a rebuild
during the run changes nothing) serves two HTTP listeners: `main`, one route through
header-rewrite + rate-limit (a limit that never triggers, but the bucket is read and written on
every request), and `capped`, one plain route with `limits.max_connections`. Everything on
127.0.0.1. /healthz on the admin port is polled every 250 ms from start to end.

- A  steady load through `main`: SOAK_RATE req/s for SOAK_SECONDS, half on SOAK_KA_CONNS
     keep-alive connections, half on a new connection per request (Python asyncio clients in a
     subprocess). Errors, VmRSS at 10 s and at the end (drift), wasp's fds before and after.
- B  BURST_CONNS TCP connections at once against `capped` (max_connections CAP), each one GET,
     waiting up to BURST_TIMEOUT s. Answered, errors, time to answer all, peak
     wasp_active_connections (scraped every 100 ms), RSS peak, fds after.
- C  HTTP/2 abuse on `main` (h2c prior knowledge, raw socket; the h2 package for the handshake),
     ABUSE_SECONDS each, reconnecting whenever wasp closes: rapid reset (HEADERS + RST_STREAM
     CANCEL), SETTINGS flood, PING flood. GOAWAY and its code, time to it, wasp CPU seconds, RSS,
     and a well-behaved HTTP/1.1 client (PROBE_RATE GETs/s on one connection) meanwhile.

Report: bench/results/soak-latest.md (printed too). Exit 1 if a must-hold check fails.
Environment: SOAK_SECONDS=60 SOAK_RATE=500 SOAK_KA_CONNS=8 BURST_CONNS=10000 CAP=1000
BURST_TIMEOUT=60 ABUSE_SECONDS=10 PROBE_RATE=50 WORKERS=0 (wasp's `workers`, 0 = one per CPU)
WASP_BIN, FILTER_DIR (default target/wasm/wasm32-wasip2/release), SHARED (nginx confs),
SKIP_BUILD=1, KEEP_TMP=1, RESULTS_DIR.
"""
import asyncio, datetime, http.client, json, os, re, resource, shutil, socket, struct, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = lambda k, d: type(d)(os.environ.get(k, d))
SOAK_SECONDS, RATE, KA_CONNS = ENV("SOAK_SECONDS", 60), ENV("SOAK_RATE", 500), ENV("SOAK_KA_CONNS", 8)
BURST, CAP, BURST_TIMEOUT = ENV("BURST_CONNS", 10000), ENV("CAP", 1000), ENV("BURST_TIMEOUT", 60)
ABUSE_SECONDS, PROBE_RATE, WORKERS = ENV("ABUSE_SECONDS", 10), ENV("PROBE_RATE", 50), ENV("WORKERS", 0)
WASP_BIN = os.environ.get("WASP_BIN", f"{ROOT}/target/release/wasp")
FILTER_DIR = os.environ.get("FILTER_DIR", f"{ROOT}/target/wasm/wasm32-wasip2/release")
SHARED = os.environ.get("SHARED", f"{ROOT}/../shared/bench")
RESULTS_DIR = os.environ.get("RESULTS_DIR", f"{ROOT}/bench/results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAWAY_CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
                6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


# ------------------------------------------------------------ clients (run as subprocesses: `soak.py _load ...`)

async def get(reader, writer, path, close):
    """One HTTP/1.1 GET on an open connection; returns the status (reads the whole body)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: soak\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head.split(b" ", 2)[1])
    if m := re.search(rb"\r\ncontent-length: *(\d+)", head):
        await reader.readexactly(int(m.group(1)))
    elif b"transfer-encoding: chunked" in head:
        while (n := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) > 0:
            await reader.readexactly(n + 2)
        await reader.readuntil(b"\r\n")
    elif close:
        await reader.read()
    return status


async def load(port, path, rate, seconds, ka_share, ka_conns):
    """Open-loop load: ka_share of `rate` on ka_conns keep-alive connections, the rest one connection each."""
    loop, out = asyncio.get_running_loop(), {"ok": 0, "bad": {}, "lat": []}
    start = loop.time()
    end = start + seconds

    def record(t0, status=None, err=None):
        if status == 200:
            out["ok"] += 1
            out["lat"].append((loop.time() - t0) * 1000)
        else:
            k = f"status {status}" if err is None else type(err).__name__
            out["bad"][k] = out["bad"].get(k, 0) + 1

    async def keepalive(i, r):
        conn, t = None, start + i / (r * ka_conns)
        while (t := t + 1 / r) < end:
            await asyncio.sleep(max(0, t - loop.time()))
            t0 = loop.time()
            try:
                conn = conn or await asyncio.open_connection("127.0.0.1", port)
                record(t0, await asyncio.wait_for(get(*conn, path, False), 10))
            except Exception as e:
                record(t0, err=e)
                conn = conn and conn[1].close()

    async def fresh():
        t0 = loop.time()
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            record(t0, await asyncio.wait_for(get(r, w, path, True), 10))
        except Exception as e:
            record(t0, err=e)
        finally:
            w and w.close()

    async def new_conns(r):
        tasks, t = [], start
        while (t := t + 1 / r) < end:
            await asyncio.sleep(max(0, t - loop.time()))
            tasks.append(asyncio.create_task(fresh()))
        await asyncio.gather(*tasks)

    jobs = [keepalive(i, rate * ka_share / ka_conns) for i in range(ka_conns)] if ka_share > 0 else []
    jobs += [new_conns(rate * (1 - ka_share))] if ka_share < 1 else []
    await asyncio.gather(*jobs)
    lat = out.pop("lat")
    return dict(out, n=out["ok"] + sum(out["bad"].values()), p50=pct(lat, .5), p99=pct(lat, .99), max=max(lat, default=0))


async def burst(port, n, timeout):
    """n connections at once, one GET each; outcome and completion time (s after the start) of each."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one():
        w, stage = None, "connect"
        try:
            async with asyncio.timeout(timeout):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                stage = "answer"
                status = await get(r, w, "/", True)
            return ("ok" if status == 200 else f"status {status}"), loop.time() - start
        except TimeoutError:
            return f"timeout waiting for {stage}", loop.time() - start
        except Exception as e:
            return f"{type(e).__name__} at {stage}", loop.time() - start
        finally:
            w and w.close()

    res = await asyncio.gather(*(one() for _ in range(n)))
    done = [t for k, t in res if k == "ok"]
    kinds = {}
    for k, _ in res:
        kinds[k] = kinds.get(k, 0) + 1
    edges = [1, 3, 7, 15, 31, 63, 1e9]  # SYN retransmits: 1 s, then 2, 4, 8, 16, 32 s later
    hist = {f"< {e} s" if e < 1e9 else "later": sum(1 for t in done if lo <= t < e) for lo, e in zip([0] + edges, edges)}
    return dict(kinds=kinds, answered=len(done), all_s=max(done, default=0), p50_s=pct(done, .5), p99_s=pct(done, .99), hist=hist)


def h2_frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def h2_connect(port):
    """A raw h2c connection after the handshake (the h2 package's preface and SETTINGS; the server's SETTINGS acked)."""
    import h2.config, h2.connection
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(conn.data_to_send())
    buf = b""
    while len(buf) < 9 or buf[3] != 4:  # the server's first frame is its SETTINGS
        buf += s.recv(65536) or b"\0" * 9
    s.sendall(h2_frame(4, 1, 0))  # SETTINGS ACK
    s.settimeout(1)
    return s


def h2_check(port):
    """One GET over h2c with the h2 package: the listener speaks HTTP/2 before we abuse it."""
    import h2.config, h2.connection, h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "soak")], end_stream=True)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(conn.data_to_send())
        while True:
            for ev in conn.receive_data(s.recv(65536)):
                if isinstance(ev, h2.events.ResponseReceived):
                    return dict(ev.headers)[b":status"].decode()
            s.sendall(conn.data_to_send())


def flood(kind, port, seconds):
    """Send `kind` frames as fast as possible for `seconds`; a reader thread looks for GOAWAY. Reconnects when closed."""
    # Header block (HPACK): :method GET, :scheme http, :path / from the static table; :authority literal, not indexed.
    block = b"\x82\x86\x84\x01\x04soak"
    out = dict(kind=kind, connections=0, frames=0, goaways=[], conn_lifetimes=[], received={})
    start = time.monotonic()
    sid = 1
    while time.monotonic() - start < seconds:
        try:
            s = h2_connect(port)
        except OSError as e:
            out.setdefault("connect_errors", []).append(repr(e))
            time.sleep(0.01)
            continue
        out["connections"] += 1
        t_conn, closed, sid = time.monotonic(), threading.Event(), 1

        def reader():
            buf = b""
            while not closed.is_set():
                try:
                    data = s.recv(1 << 20)
                except socket.timeout:
                    continue
                except OSError:
                    data = b""
                if not data:
                    break
                buf += data
                i = 0
                while len(buf) - i >= 9:
                    n, t = int.from_bytes(buf[i:i + 3], "big"), buf[i + 3]
                    if len(buf) - i < 9 + n:
                        break
                    out["received"][t] = out["received"].get(t, 0) + 1
                    if t == 7:
                        last, code = struct.unpack(">II", buf[i + 9:i + 17])
                        now = time.monotonic()
                        out["goaways"].append(dict(code=code, last_stream=last & 0x7FFFFFFF, debug=buf[i + 17:i + 9 + n].decode(errors="replace"),
                                                   after_conn_s=now - t_conn, after_start_s=now - start))
                    i += 9 + n
                buf = buf[i:]
            closed.set()

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        while not closed.is_set() and time.monotonic() - start < seconds:
            if kind == "rapid-reset":
                batch = b"".join(h2_frame(1, 5, i, block) + h2_frame(3, 0, i, b"\0\0\0\x08") for i in range(sid, sid + 200, 2))
                sid, n = sid + 200, 200
            elif kind == "settings":
                batch, n = h2_frame(4, 0, 0, b"\x00\x01\x00\x00\x10\x00") * 100, 100  # HEADER_TABLE_SIZE 4096
            else:
                batch, n = h2_frame(6, 0, 0, b"soakping") * 100, 100
            try:
                s.sendall(batch)
                out["frames"] += n
            except socket.timeout:
                out["frames"] += n  # partly sent; wasp is not reading (backpressure)
            except OSError:
                break
        closed.set()
        s.close()
        th.join()
        out["conn_lifetimes"].append(time.monotonic() - t_conn)
    out["received"] = {str(k): v for k, v in out["received"].items()}
    return out


# ------------------------------------------------------------ the orchestrator

class Proc:
    """A process this script started; stopped by its PID only (SIGTERM, then SIGKILL)."""
    all = []

    def __init__(self, cmd, log=None, env=None):
        out = open(f"{log}.out", "w") if log else subprocess.PIPE
        self.err_path = f"{log}.err" if log else None
        self.p = subprocess.Popen(cmd, stdout=out, stderr=open(self.err_path, "w") if log else None, env=env, text=True)
        self.pid = self.p.pid
        Proc.all.append(self)

    def stop(self, timeout=30):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
        return self.p.wait()

    def result(self):
        """A client subprocess's JSON result."""
        out, _ = self.p.communicate()
        if self.p.returncode:
            raise SystemExit(f"client subprocess failed ({self.p.returncode}): {self.p.args}")
        return json.loads(out)


def tool(mode, *args):
    """One of this file's client modes in a subprocess (JSON on its stdout)."""
    return Proc([sys.executable, os.path.abspath(__file__), mode, *map(str, args)])


def rss(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def fds(pid, ports):
    """wasp's open fds: total, and its TCP sockets by kind (downstream = local port a listener's, upstream = remote the upstream's)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    kinds = {"total": len(os.listdir(f"/proc/{pid}/fd")), "downstream": 0, "upstream": 0, "admin": 0}
    for line in open("/proc/net/tcp").readlines()[1:]:
        f = line.split()
        if f[9] in inodes and f[3] != "0A":  # not LISTEN
            lport, rport = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
            if rport == ports["up"]:
                kinds["upstream"] += 1
            elif lport in (ports["main"], ports["capped"]):
                kinds["downstream"] += 1
            elif lport == ports["admin"]:
                kinds["admin"] += 1  # our /healthz and /metrics polls
    kinds["other"] = kinds["total"] - kinds["upstream"] - kinds["downstream"] - kinds["admin"]  # listeners, epoll, files...
    return kinds


def http_get(port, path, timeout=2):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def metric(text, name, **labels):
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith(name + "{") or l.startswith(name + " ") if all(w in l for w in want))


class Health(threading.Thread):
    """Polls /healthz every 250 ms; results per phase."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.phase, self.stats, self.stop_ = port, "start", {}, threading.Event()

    def run(self):
        while not self.stop_.wait(0.25):
            t0, st = time.monotonic(), self.stats.setdefault(self.phase, dict(polls=0, failed=[], max_ms=0))
            try:
                ok = http_get(self.port, "/healthz")[0] == 200
                why = "status"
            except Exception as e:
                ok, why = False, type(e).__name__
            ms = (time.monotonic() - t0) * 1000
            st["polls"] += 1
            st["max_ms"] = max(st["max_ms"], ms)
            if not ok:
                st["failed"].append(f"{why} after {ms:.0f} ms")


def wait_fds(pid, ports, base, keys, timeout):
    """Seconds until fds[k] <= base[k] for every k in keys (None if not within timeout), and the last reading."""
    t0 = time.monotonic()
    while True:
        now = fds(pid, ports)
        if all(now[k] <= base[k] for k in keys):
            return time.monotonic() - t0, now
        if time.monotonic() - t0 > timeout:
            return None, now
        time.sleep(0.25)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(BURST * 2 + 4096, soft)
    try:  # raised before anything is spawned: wasp and nginx inherit it
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    nginx_bin = lambda: shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if not nginx_bin():
        sudo = [] if os.getuid() == 0 else ["sudo"]
        if subprocess.run(sudo + ["apt-get", "install", "-y", "nginx-light"]).returncode:
            subprocess.run(sudo + ["apt-get", "update"])
            subprocess.run(sudo + ["apt-get", "install", "-y", "nginx-light"], check=True)
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "-p", "wasp"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--manifest-path", "filters/Cargo.toml", "--target", "wasm32-wasip2", "--release"],
                       cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=f"{ROOT}/target/wasm"))
    tmp = __import__("tempfile").mkdtemp(prefix="wasp-soak.")
    shutil.copy(WASP_BIN, f"{tmp}/wasp")  # private copies: a concurrent rebuild cannot change them mid-run
    for m in ("header_rewrite", "rate_limit"):
        shutil.copy(f"{FILTER_DIR}/{m}.wasm", tmp)
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(4)]
    ports = dict(zip(["up", "main", "capped", "admin"], (s.getsockname()[1] for s in socks)))
    [s.close() for s in socks]
    notes, checks, R = [], [], {}
    try:
        conf = open(f"{SHARED}/nginx-upstream.conf").read().replace("@DIR@", tmp).replace("@UP@", str(ports["up"]))
        open(f"{tmp}/nginx.conf", "w").write(conf)
        nginx = Proc([nginx_bin(), "-e", f"{tmp}/nginx-startup.err", "-c", f"{tmp}/nginx.conf", "-p", f"{tmp}/"], f"{tmp}/nginx")
        config = f"""admin: {{ address: 127.0.0.1:{ports['admin']} }}
access_log: "off"
workers: {WORKERS}
listeners:
  - name: main
    address: 127.0.0.1:{ports['main']}
    routes: [ {{ name: chain, cluster: up, filters: [rewrite, limit] }} ]
  - name: capped
    address: 127.0.0.1:{ports['capped']}
    limits: {{ max_connections: {CAP} }}
    routes: [ {{ name: plain, cluster: up }} ]
clusters:
  - {{ name: up, endpoints: ["127.0.0.1:{ports['up']}"], protocol: http1 }}
filters:
  - name: rewrite
    module: header_rewrite.wasm
    config: {{ request: {{ set: {{ x-trace: "{{request_id}}" }} }}, response: {{ add: {{ x-served-by: wasp }} }} }}
  - name: limit
    module: rate_limit.wasm
    config: {{ rate: 1000000000, burst: 1000000000, key: peer }}
    allow: [log, metrics, clock, kv]
"""
        open(f"{tmp}/wasp.yaml", "w").write(config)
        chk = subprocess.run([f"{tmp}/wasp", "check", "--config", f"{tmp}/wasp.yaml"], capture_output=True, text=True)
        if chk.returncode:
            raise SystemExit(f"wasp check failed:\n{chk.stdout}{chk.stderr}")
        wasp = Proc([f"{tmp}/wasp", "run", "--config", f"{tmp}/wasp.yaml"], f"{tmp}/wasp", dict(os.environ, WASP_LOG_FORMAT="json"))
        for _ in range(600):
            if "wasp started" in open(wasp.err_path).read() or wasp.p.poll() is not None:
                break
            time.sleep(0.05)
        logs = [json.loads(l) for l in open(wasp.err_path) if l.startswith("{")]
        listening = {l["fields"].get("listener"): l["fields"].get("address") for l in logs if l.get("fields", {}).get("message") == "listening"}
        if listening.get("capped") != f"127.0.0.1:{ports['capped']}":
            raise SystemExit(f"wasp did not start as expected: {listening}\n{open(wasp.err_path).read()[-2000:]}")
        status, headers, body = http_get(ports["main"], "/")
        headers = {k.lower(): v for k, v in headers.items()}
        if status != 200 or headers.get("x-served-by") != "wasp" or "ratelimit-limit" not in headers:
            raise SystemExit(f"the filter chain does not answer as expected: {status} {headers} {body!r}")
        health = Health(ports["admin"])
        health.start()
        pid = wasp.pid
        wasp_rev = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "proxy", "filters", "sdk"], capture_output=True, text=True).stdout
        R["meta"] = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), wasp=f"{wasp_rev}{' + uncommitted changes' if dirty else ''}",
                         built=datetime.datetime.fromtimestamp(os.path.getmtime(WASP_BIN)).strftime("%Y-%m-%d %H:%M"),
                         cpus=os.cpu_count(), nofile=nofile, somaxconn=open("/proc/sys/net/core/somaxconn").read().strip(),
                         syn_backlog=open("/proc/sys/net/ipv4/tcp_max_syn_backlog").read().strip(),
                         syn_retries=open("/proc/sys/net/ipv4/tcp_syn_retries").read().strip(), rss_idle=rss(pid))

        # ---- A: steady load through the filter chain
        print(f"phase A: {RATE} req/s for {SOAK_SECONDS} s through header-rewrite + rate-limit", file=sys.stderr)
        health.phase = "A"
        tool("_load", ports["main"], "/", RATE, 3, 0.5, KA_CONNS).result()  # warm-up: pools and instances filled
        time.sleep(1)
        base, cpu0, req0 = fds(pid, ports), cpu(pid), metric(http_get(ports["admin"], "/metrics")[2].decode(), "wasp_requests_total", listener="main")
        p, t0, samples = tool("_load", ports["main"], "/", RATE, SOAK_SECONDS, 0.5, KA_CONNS), time.monotonic(), []
        while p.p.poll() is None:
            samples.append((time.monotonic() - t0, rss(pid), fds(pid, ports)["total"]))
            time.sleep(1)
        a = p.result()
        cpu_a = cpu(pid) - cpu0
        req_a = metric(http_get(ports["admin"], "/metrics")[2].decode(), "wasp_requests_total", listener="main") - req0
        rss10 = min(samples, key=lambda s: abs(s[0] - 10))[1]
        rss_end = [s for s in samples if s[0] <= SOAK_SECONDS][-1][1]
        back_s, after = wait_fds(pid, ports, base, ["downstream", "other"], 5)
        R["A"] = dict(a, cpu_us=cpu_a / max(1, a["n"]) * 1e6, served=req_a, rss10=rss10, rss_end=rss_end, drift=(rss_end - rss10) / rss10,
                      fds_base=base, fds_peak=max(s[2] for s in samples), fds_after=after, back_s=back_s)
        checks += [("A: errors for admitted requests = 0", not a["bad"], f"{sum(a['bad'].values())} {a['bad'] or ''}"),
                   ("A: RSS drift 10 s → end < 10%", abs(R["A"]["drift"]) < 0.10, f"{rss10:.1f} → {rss_end:.1f} MiB ({R['A']['drift']:+.1%})"),
                   ("A: fds (all but the idle upstream pool) back to baseline ≤ 5 s after", back_s is not None,
                    f"{base['total']} → {after['total']} (upstream pool {base['upstream']} → {after['upstream']})" + (f" in {back_s:.2f} s" if back_s is not None else ""))]

        # ---- B: a connection storm against the capped listener
        print(f"phase B: {BURST} connections at once against max_connections {CAP}", file=sys.stderr)
        health.phase = "B"
        time.sleep(1)
        base, rss0, peak = fds(pid, ports), rss(pid), dict(active=0, rss=0, fds=0, scrapes=0)
        p = tool("_burst", ports["capped"], BURST, BURST_TIMEOUT)
        while p.p.poll() is None:
            try:
                peak["active"] = max(peak["active"], metric(http_get(ports["admin"], "/metrics", 5)[2].decode(), "wasp_active_connections", listener="capped"))
                peak["scrapes"] += 1
            except Exception as e:
                notes.append(f"B: /metrics scrape failed: {e!r}")
            peak["rss"], peak["fds"] = max(peak["rss"], rss(pid)), max(peak["fds"], len(os.listdir(f"/proc/{pid}/fd")))
            time.sleep(0.1)
        b = p.result()
        t_b_end = time.monotonic()
        back_s, after = wait_fds(pid, ports, base, ["downstream", "other"], 10)
        R["B"] = dict(b, rss0=rss0, peak=peak, fds_base=base, fds_after=after, back_s=back_s)
        errs = {k: v for k, v in b["kinds"].items() if k != "ok" and not k.startswith("timeout")}
        checks += [(f"B: peak wasp_active_connections ≤ {CAP}", peak["active"] <= CAP, f"{peak['active']:.0f} ({peak['scrapes']} scrapes)"),
                   ("B: errors for admitted connections = 0", not errs, f"{sum(errs.values())} {errs or ''}"),
                   ("B: downstream fds back to baseline ≤ 10 s after", back_s is not None,
                    f"downstream {base['downstream']} → {after['downstream']}, other {base['other']} → {after['other']}" + (f" in {back_s:.2f} s" if back_s is not None else ""))]

        # ---- C: HTTP/2 abuse on the main listener, a well-behaved client meanwhile
        health.phase = "C"
        try:
            import h2  # noqa: F401
        except ImportError:
            subprocess.run([sys.executable, "-m", "pip", "install", "h2"], check=True)
        R["h2check"] = h2_check(ports["main"])
        R["C"] = []
        for kind in ["none", "rapid-reset", "settings", "ping"]:
            print(f"phase C: {kind} for {ABUSE_SECONDS} s", file=sys.stderr)
            time.sleep(2)
            r0, c0 = rss(pid), cpu(pid)
            req0 = metric(http_get(ports["admin"], "/metrics")[2].decode(), "wasp_requests_total", listener="main")
            probe = tool("_load", ports["main"], "/", PROBE_RATE, ABUSE_SECONDS, 1, 1)
            attack = tool("_flood", kind, ports["main"], ABUSE_SECONDS) if kind != "none" else None
            pr, fl = probe.result(), attack and attack.result()
            served = metric(http_get(ports["admin"], "/metrics")[2].decode(), "wasp_requests_total", listener="main") - req0
            R["C"].append(dict(kind=kind, probe=pr, flood=fl, cpu=cpu(pid) - c0, rss0=r0, rss1=rss(pid), attack_reqs=served - pr["n"]))
            checks.append((f"C {kind}: well-behaved client all 200", not pr["bad"], f"{pr['ok']}/{pr['n']} {pr['bad'] or ''}"))

        # ---- the end: wasp's pool of idle upstream connections expires (90 s idle): nothing is left behind
        health.phase = "end"
        wait = max(0, 95 - (time.monotonic() - t_b_end))
        print(f"waiting up to {wait:.0f} s for idle upstream connections to expire", file=sys.stderr)
        back_s, R["end"] = wait_fds(pid, ports, R["A"]["fds_base"], ["total"], wait)
        R["end_s"] = time.monotonic() - t_b_end
        checks.append(("end: fds ≤ phase A baseline ≤ 95 s after phase B", back_s is not None, f"{R['A']['fds_base']['total']} → {R['end']['total']} ({R['end']})"))
        time.sleep(0.3)
        health.stop_.set()
        health.join()
        for ph, st in health.stats.items():
            checks.append((f"/healthz every 250 ms, phase {ph}: all 200", not st["failed"], f"{st['polls']} polls, max {st['max_ms']:.0f} ms {st['failed'][:3] or ''}"))
        R["rss_end"] = rss(pid)
        rc = wasp.stop()
        if rc:
            notes.append(f"wasp exited with status {rc} after SIGTERM (expected 0)")
        warn = [l for l in open(wasp.err_path) if '"level":"WARN"' in l or '"level":"ERROR"' in l]
        msgs = {}
        for l in warn:
            m = json.loads(l)["fields"].get("message", "?")
            msgs[m] = msgs.get(m, 0) + 1
        if msgs:
            notes.append(f"wasp logged {len(warn)} WARN/ERROR lines: " + "; ".join(f"{v}× {k!r}" for k, v in msgs.items()))
        nginx.stop()
        if os.path.getsize(f"{tmp}/upstream-error.log") if os.path.exists(f"{tmp}/upstream-error.log") else 0:
            notes.append("upstream nginx error log: " + open(f"{tmp}/upstream-error.log").read()[:500])
    finally:
        for pr in reversed(Proc.all):
            pr.stop()
        if not os.environ.get("KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    md = report(R, checks, notes)
    print(md)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    open(f"{RESULTS_DIR}/soak-latest.md", "w").write(md)
    open(f"{RESULTS_DIR}/soak-latest.json", "w").write(json.dumps(dict(R, checks=checks, notes=notes), indent=1, default=str))
    return 0 if all(ok for _, ok, _ in checks) else 1


def report(R, checks, notes):
    m, a, b = R["meta"], R["A"], R["B"]
    back = lambda d: f" ({d['back_s']:.2f} s)" if d["back_s"] is not None else " (not back)"
    ms = lambda d: f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.1f}"
    L = [f"# wasp soak and overload ({m['date']})", "",
         f"wasp {m['wasp']} (release, built {m['built']}), `workers: {WORKERS}`, access log off; upstream nginx "
         f"(`shared/bench/nginx-upstream.conf`); {m['cpus']} CPUs, 127.0.0.1; RLIMIT_NOFILE {m['nofile']}; "
         f"somaxconn {m['somaxconn']}, tcp_max_syn_backlog {m['syn_backlog']}, tcp_syn_retries {m['syn_retries']}. Idle RSS {m['rss_idle']:.1f} MiB.", "",
         "## Checks", "", "| must hold | | measured |", "|---|---|---|"]
    L += [f"| {n} | {'ok' if ok else '**FAIL**'} | {v} |" for n, ok, v in checks]
    L += ["", f"## A: steady load, {RATE} req/s for {SOAK_SECONDS} s (header-rewrite + rate-limit)", "",
          f"Half on {KA_CONNS} keep-alive connections, half on a new connection per request (Python asyncio, open loop).", "",
          "| requests | 200 | errors | p50 / p99 / max ms | served (wasp_requests_total) | wasp CPU µs/req | RSS at 10 s → end | fds before → peak → after |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|",
          f"| {a['n']} | {a['ok']} | {sum(a['bad'].values())} {a['bad'] or ''} | {ms(a)} | {a['served']:.0f} | {a['cpu_us']:.0f} | "
          f"{a['rss10']:.1f} → {a['rss_end']:.1f} MiB ({a['drift']:+.1%}) | {a['fds_base']['total']} → {a['fds_peak']} → {a['fds_after']['total']}"
          f"{back(a)} |",
          "", f"## B: {BURST} connections at once, `max_connections: {CAP}`, client timeout {BURST_TIMEOUT} s", "",
          "| answered 200 | other outcomes | time to answer all | p50 / p99 answered | peak wasp_active_connections | RSS before → peak | peak fds | downstream fds before → after |",
          "|---:|---|---:|---:|---:|---:|---:|---:|",
          f"| {b['answered']} | {', '.join(f'{k}: {v}' for k, v in b['kinds'].items() if k != 'ok') or 'none'} | {b['all_s']:.2f} s | "
          f"{b['p50_s']:.2f} / {b['p99_s']:.2f} s | {b['peak']['active']:.0f} | {b['rss0']:.1f} → {b['peak']['rss']:.1f} MiB | {b['peak']['fds']} | "
          f"{b['fds_base']['downstream']} → {b['fds_after']['downstream']} (upstream pool {b['fds_base']['upstream']} → {b['fds_after']['upstream']}) |",
          "", "Answers by time after the start (the kernel drops SYNs while the accept queue is full; clients retransmit at 1, 3, 7, 15, 31 s):", "",
          "| " + " | ".join(b["hist"]) + " |", "|" + "---:|" * len(b["hist"]), "| " + " | ".join(str(v) for v in b["hist"].values()) + " |",
          "", f"## C: HTTP/2 abuse on the filter-chain listener, {ABUSE_SECONDS} s each (h2c: {R['h2check']} to a plain GET first)", "",
          f"The attacker reconnects whenever wasp closes. Well-behaved client: HTTP/1.1 keep-alive, {PROBE_RATE} GETs/s, same listener.", "",
          "| attack | frames sent | connections | GOAWAY (code, debug) | first GOAWAY after | attack requests reaching the route | wasp CPU s in the 10 s | RSS before → after | client 200 / sent | client p50 / p99 / max ms |",
          "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c in R["C"]:
        f, pr = c["flood"], c["probe"]
        if f:
            codes = {}
            for g in f["goaways"]:
                k = f"{GOAWAY_CODES.get(g['code'], hex(g['code']))} {g['debug']!r}"
                codes[k] = codes.get(k, 0) + 1
            ga = ", ".join(f"{v}× {k}" for k, v in codes.items()) or "**none**"
            first = f"{f['goaways'][0]['after_conn_s'] * 1000:.1f} ms" if f["goaways"] else "—"
            row = f"| {c['kind']} | {f['frames']:,} | {f['connections']} | {ga} | {first} | {c['attack_reqs']:.0f} |"
        else:
            row = "| none (baseline) | — | — | — | — | — |"
        L.append(row + f" {c['cpu']:.2f} | {c['rss0']:.1f} → {c['rss1']:.1f} MiB | {pr['ok']} / {pr['n']} | {ms(pr)} |")
    L += ["", f"End: {R['end_s']:.0f} s after phase B, wasp fds {R['end']} (phase A baseline {a['fds_base']}), RSS {R['rss_end']:.1f} MiB.", ""]
    L += ["## Notes", ""] + [f"- {n}" for n in notes] if notes else []
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "_load":
        port, path, rate, secs, share, conns = sys.argv[2:8]
        print(json.dumps(asyncio.run(load(int(port), path, float(rate), float(secs), float(share), int(conns)))))
    elif mode == "_burst":
        print(json.dumps(asyncio.run(burst(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))))
    elif mode == "_flood":
        print(json.dumps(flood(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
    else:
        sys.exit(main())
