#!/usr/bin/env python3
"""Soak and overload: the real wasp binary under steady load, a connection storm and HTTP/2 abuse.

    cargo build --release -p wasp
    CARGO_TARGET_DIR=target/wasm cargo build --manifest-path filters/Cargo.toml --target wasm32-wasip2 --release
    python3 bench/soak.py       # ~5 min (builds first unless SKIP_BUILD=1); SOAK_SECONDS=10 for a quick look

Upstream: nginx from /work/shared/bench/nginx-upstream.conf (200 "ok"; a second listen port is
added for the connection storm's cluster), started and stopped by PID. wasp is a private copy of
the binary and filter components (a concurrent rebuild changes nothing) with two HTTP listeners:
`main`, one route through header-rewrite + rate-limit (a limit that never triggers, but its bucket
is read and written on every request), and `capped`, a plain route with `limits.max_connections`
CAP to its own cluster. All on 127.0.0.1; /healthz on the admin port is polled every 250 ms
throughout. Clients are Python asyncio subprocesses of this script (`soak.py _load|_burst|_flood`).

- A  SOAK_RATE req/s for SOAK_SECONDS through `main`, half on SOAK_KA_CONNS keep-alive connections,
     half on a new connection per request (open loop). Errors, VmRSS at 10 s and at the end
     (drift), wasp's fds before and after (its sockets sorted by /proc/net/tcp).
- B  BURST_CONNS TCP connections at once against `capped`, one GET each, client timeout
     BURST_TIMEOUT s. Answered, errors, time to answer all, peak wasp_active_connections and accept
     queue (every 100 ms), kernel ListenOverflows, RSS peak, fds after; then, 91 s later, whether
     the 90 s idle upstream pool was closed.
- C  HTTP/2 abuse on `main` (h2c prior knowledge over a raw socket; handshake with the h2 package),
     ABUSE_SECONDS each, reconnecting whenever wasp closes: rapid reset (HEADERS + RST_STREAM
     CANCEL), SETTINGS flood, PING flood (reading the answers), PING flood never reading. GOAWAY
     and code, time to it, wasp CPU, RSS, and a well-behaved HTTP/1.1 client meanwhile.

Prints a markdown report and writes bench/results/soak-latest.md (+ .json); exits 1 if a
must-hold check fails. Environment (defaults): SOAK_SECONDS=60 SOAK_RATE=500 SOAK_KA_CONNS=8
BURST_CONNS=10000 CAP=1000 BURST_TIMEOUT=60 ABUSE_SECONDS=10 PROBE_RATE=50 WORKERS=0 (wasp's
`workers`: one per CPU) QUIET_WAIT=120 (wait up to this long for the machine to be < 15% busy)
WASP_BIN FILTER_DIR SHARED RESULTS_DIR SKIP_BUILD=1 KEEP_TMP=1.
"""
import asyncio, datetime, http.client, json, os, re, resource, select, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = lambda k, d: type(d)(os.environ.get(k, d))
SOAK_SECONDS, RATE, KA_CONNS = ENV("SOAK_SECONDS", 60), ENV("SOAK_RATE", 500), ENV("SOAK_KA_CONNS", 8)
BURST, CAP, BURST_TIMEOUT = ENV("BURST_CONNS", 10000), ENV("CAP", 1000), ENV("BURST_TIMEOUT", 60)
ABUSE_SECONDS, PROBE_RATE, WORKERS = ENV("ABUSE_SECONDS", 10), ENV("PROBE_RATE", 50), ENV("WORKERS", 0)
QUIET_WAIT = ENV("QUIET_WAIT", 120)
WASP_BIN = os.environ.get("WASP_BIN", f"{ROOT}/target/release/wasp")
FILTER_DIR = os.environ.get("FILTER_DIR", f"{ROOT}/target/wasm/wasm32-wasip2/release")
SHARED = os.environ.get("SHARED", f"{ROOT}/../shared/bench")
RESULTS_DIR = os.environ.get("RESULTS_DIR", f"{ROOT}/bench/results")
TMP = ""  # the run's temporary folder: configs, logs, client results
FRAMES = {0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE"}
CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 6: "FRAME_SIZE_ERROR", 11: "ENHANCE_YOUR_CALM"}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def bump(d, k, n=1):
    d[k] = d.get(k, 0) + n


# ------------------------------------------------------------ clients (subprocesses)

async def get(reader, writer, path, close):
    """One HTTP/1.1 GET on an open connection; the status (the body is read)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: soak\r\n".encode() + (b"Connection: close\r\n\r\n" if close else b"\r\n"))
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if m := re.search(rb"\r\ncontent-length: *(\d+)", head):
        await reader.readexactly(int(m.group(1)))
    elif b"transfer-encoding: chunked" in head:
        while (n := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) > 0:
            await reader.readexactly(n + 2)
        await reader.readuntil(b"\r\n")
    elif close:
        await reader.read()
    return int(head.split(b" ", 2)[1])


async def load(port, rate, seconds, ka_share, ka_conns):
    """Open loop: ka_share of `rate` on ka_conns keep-alive connections, the rest on a new connection each."""
    loop, out, lat = asyncio.get_running_loop(), {"ok": 0, "bad": {}}, []
    start = loop.time()
    end = start + seconds

    def record(t0, status=None, err=None):
        if status == 200:
            out["ok"] += 1
            lat.append((loop.time() - t0) * 1000)
        else:
            bump(out["bad"], f"status {status}" if err is None else type(err).__name__)

    async def keepalive(i, r):
        conn, t = None, start + i / (r * ka_conns)
        while (t := t + 1 / r) < end:
            await asyncio.sleep(max(0, t - loop.time()))
            t0 = loop.time()
            try:
                conn = conn or await asyncio.open_connection("127.0.0.1", port)
                record(t0, await asyncio.wait_for(get(*conn, "/", False), 10))
            except Exception as e:
                record(t0, err=e)
                conn = conn and conn[1].close()

    async def fresh():
        t0, w = loop.time(), None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            record(t0, await asyncio.wait_for(get(r, w, "/", True), 10))
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
    await asyncio.gather(*jobs, *([new_conns(rate * (1 - ka_share))] if ka_share < 1 else []))
    return dict(out, n=out["ok"] + sum(out["bad"].values()), p50=pct(lat, .5), p99=pct(lat, .99), max=max(lat, default=0))


async def burst(port, n, timeout):
    """n connections at once, one GET each: outcomes, and when (s after the start) each was answered."""
    loop, connected, started = asyncio.get_running_loop(), [], []
    start = loop.time()

    async def one():
        w, stage = None, "connect"
        started.append(loop.time() - start)
        try:
            async with asyncio.timeout(timeout):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                stage = "answer"
                connected.append(loop.time() - start)
                status = await get(r, w, "/", True)
            return "ok" if status == 200 else f"status {status}", loop.time() - start
        except TimeoutError:
            return f"timeout waiting for {stage}", loop.time() - start
        except Exception as e:
            return f"{type(e).__name__} at {stage}", loop.time() - start
        finally:
            w and w.close()

    res = await asyncio.gather(*(one() for _ in range(n)))
    done, kinds = [t for k, t in res if k == "ok"], {}
    for k, _ in res:
        bump(kinds, k)
    edges = [1, 3, 7, 15, 31, 63, 1e9]  # a dropped SYN is sent again 1 s later, then 2, 4, 8, 16, 32 s
    hist = {f"< {e} s" if e < 1e9 else "later": sum(lo <= t < e for t in done) for lo, e in zip([0] + edges, edges)}
    return dict(kinds=kinds, answered=len(done), all_s=max(done, default=0), p50_s=pct(done, .5), p99_s=pct(done, .99), hist=hist,
                connect_s=[pct(connected, .5), pct(connected, .99), max(connected, default=0)], last_connect_call_s=max(started))


def h2_frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def h2_connect(port):
    """A raw h2c connection after the handshake: the h2 package's preface + SETTINGS, the server's SETTINGS acked."""
    import h2.config, h2.connection
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(conn.data_to_send())
    buf = b""
    while len(buf) < 9 or buf[3] != 4:  # wasp's first frame is its SETTINGS
        if not (data := s.recv(65536)):
            s.close()
            raise ConnectionError("closed in the handshake")
        buf += data
    s.sendall(h2_frame(4, 1, 0))
    s.settimeout(None)
    return s


def h2_check(port):
    """One GET over h2c with the h2 package: the listener speaks HTTP/2."""
    import h2.config, h2.connection, h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "soak")], end_stream=True)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(conn.data_to_send())
        while data := s.recv(65536):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    return dict(ev.headers)[b":status"].decode()
            s.sendall(conn.data_to_send())
        return "closed without an answer"


def h2_read(s, out, t_conn, end, read):
    """Reads (if `read`) and counts wasp's frames until the connection ends or `end`; how it ended.
    Then shuts the socket down, which unblocks a sender that wasp no longer reads from."""
    buf, goaway, how = b"", False, None
    if not read:  # let wasp's answers pile up; look at them only at the end
        time.sleep(max(0, end - 0.5 - time.monotonic()))
    while how is None and time.monotonic() < end:
        if not select.select([s], [], [], 0.1)[0]:
            continue
        try:
            data = s.recv(1 << 20)
        except OSError:
            data = None
        if not data:
            how = ("GOAWAY, then " if goaway else "no GOAWAY, ") + ("reset" if data is None else "closed")
            break
        buf, i = buf + data, 0
        while len(buf) - i >= 9 and len(buf) - i >= 9 + (n := int.from_bytes(buf[i:i + 3], "big")):
            bump(out["received"], FRAMES.get(buf[i + 3], str(buf[i + 3])))
            if buf[i + 3] == 7:  # GOAWAY: last stream id, error code, debug data
                goaway, code = True, int.from_bytes(buf[i + 13:i + 17], "big")
                bump(out["goaways"], f"{CODES.get(code, hex(code))} `{buf[i + 17:i + 9 + n].decode(errors='replace')}`")
                out["goaway_ms"].append((time.monotonic() - t_conn) * 1000)
            i += 9 + n
        buf = buf[i:]
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    return how or "open at the end" + (" (after GOAWAY)" if goaway else "")


def flood(kind, port, seconds):
    """`kind` frames as fast as possible for `seconds`, reconnecting whenever wasp ends the connection."""
    block = b"\x82\x86\x84\x01\x04soak"  # HPACK: GET, http, / (static table); :authority soak, not indexed
    out = dict(kind=kind, connections=0, frames=0, goaways={}, goaway_ms=[], ends={}, received={})
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s = h2_connect(port)
        except OSError as e:
            bump(out["ends"], f"connect failed: {type(e).__name__}")
            time.sleep(0.01)
            continue
        out["connections"] += 1
        how, sid = [], 1
        th = threading.Thread(target=lambda: how.append(h2_read(s, out, time.monotonic(), end, kind != "ping-noread")))
        th.start()
        while th.is_alive():
            if kind == "rapid-reset":  # 100 streams: HEADERS (END_STREAM) then RST_STREAM(CANCEL)
                batch = b"".join(h2_frame(1, 5, i, block) + h2_frame(3, 0, i, b"\0\0\0\x08") for i in range(sid, sid + 200, 2))
                sid += 200
            elif kind == "settings":  # HEADER_TABLE_SIZE 4096, each to be acked
                batch = h2_frame(4, 0, 0, b"\x00\x01\x00\x00\x10\x00") * 200
            else:
                batch = h2_frame(6, 0, 0, b"soakping") * 200
            try:
                s.sendall(batch)
                out["frames"] += 200
            except OSError:
                break
        th.join()
        s.close()
        bump(out["ends"], how[0])
    ms, ru = out.pop("goaway_ms"), resource.getrusage(resource.RUSAGE_SELF)
    return dict(out, cpu=ru.ru_utime + ru.ru_stime, goaway_first_ms=ms[0] if ms else None, goaway_p50_ms=pct(ms, .5))


# ------------------------------------------------------------ measuring wasp

class Proc:
    """A process this script started; stopped by its PID only (SIGTERM, then SIGKILL)."""
    all = []

    def __init__(self, cmd, log, env=None, stderr=True):
        self.out, self.err = f"{log}.out", f"{log}.err" if stderr else None
        self.p = subprocess.Popen(cmd, stdout=open(self.out, "w"), stderr=open(self.err, "w") if stderr else None, env=env)
        self.pid = self.p.pid
        Proc.all.append(self)

    def running(self):
        return self.p.poll() is None

    def stop(self, timeout=30):
        if self.running():
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
        return self.p.wait()

    def result(self):
        if self.p.wait():
            raise SystemExit(f"client failed ({self.p.returncode}): {self.p.args}")
        return json.load(open(self.out))


def tool(mode, *args):
    """One of this file's clients in a subprocess; its JSON result goes to a file (a pipe could fill up)."""
    return Proc([sys.executable, os.path.abspath(__file__), mode, *map(str, args)], f"{TMP}/{mode}-{len(Proc.all)}", stderr=False)


def rss(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


def fds(pid, ports):
    """wasp's open fds, and its TCP connections by the port at either end."""
    inodes, listed = set(), os.listdir(f"/proc/{pid}/fd")
    for fd in listed:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    kinds = dict(total=len(listed), downstream=0, admin=0, upstream=0, upstream_b=0)
    by_port = {ports["main"]: "downstream", ports["capped"]: "downstream", ports["admin"]: "admin", ports["up"]: "upstream", ports["up_b"]: "upstream_b"}
    for line in open("/proc/net/tcp").readlines()[1:]:
        f = line.split()
        if f[9] in inodes and f[3] != "0A":  # 0A: LISTEN
            local, remote = (int(a.split(":")[1], 16) for a in f[1:3])
            kinds[by_port.get(local) or by_port.get(remote) or "downstream"] += 1  # (unknown: counted as downstream)
    kinds["other"] = kinds["total"] - sum(v for k, v in kinds.items() if k != "total")  # listeners, epoll, files
    return kinds


def wait_fds(pid, ports, base, keys, timeout):
    """Seconds until fds[k] <= base[k] for all keys (None: not within timeout), and the last reading."""
    t0 = time.monotonic()
    while True:
        now = fds(pid, ports)
        if all(now[k] <= base[k] for k in keys):
            return time.monotonic() - t0, now
        if time.monotonic() - t0 > timeout:
            return None, now
        time.sleep(0.25)


def http_get(port, path, timeout=2):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def metric(port, name, **labels):
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(float(l.rsplit(" ", 1)[1]) for l in http_get(port, "/metrics", 5)[2].splitlines()
               if re.match(rf"{name}[{{ ]", l) and all(w in l for w in want))


def jiffies():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f), f[3] + f[4]  # all, idle + iowait


def busy(since=None):
    """Fraction of the machine's CPU time (all CPUs) not idle since `since` (jiffies()), or over the next second."""
    if since is None:
        since = jiffies()
        time.sleep(1)
    t, i = jiffies()
    return 1 - (i - since[1]) / max(1, t - since[0])


def netstat(*names):
    rows = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
    return {n: int(rows[1][rows[0].index(n)]) for n in names}


class Health(threading.Thread):
    """/healthz every 250 ms, results per phase."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.phase, self.stats, self.done = port, "A", {}, threading.Event()

    def run(self):
        while not self.done.wait(0.25):
            st, t0 = self.stats.setdefault(self.phase, dict(polls=0, failed=[], max_ms=0)), time.monotonic()
            try:
                why = None if http_get(self.port, "/healthz")[0] == 200 else "status"
            except Exception as e:
                why = type(e).__name__
            ms = (time.monotonic() - t0) * 1000
            st["polls"], st["max_ms"] = st["polls"] + 1, max(st["max_ms"], ms)
            why and st["failed"].append(f"{why} after {ms:.0f} ms")


# ------------------------------------------------------------ the run

def start(tmp, ports):
    if not shutil.which("nginx", path=os.environ["PATH"] + ":/usr/sbin"):
        sudo = [] if os.getuid() == 0 else ["sudo"]
        if subprocess.run(sudo + ["apt-get", "install", "-y", "nginx-light"]).returncode:
            subprocess.run(sudo + ["apt-get", "update"])
            subprocess.run(sudo + ["apt-get", "install", "-y", "nginx-light"], check=True)
    conf = open(f"{SHARED}/nginx-upstream.conf").read().replace("@DIR@", tmp).replace("@UP@", str(ports["up"]))
    conf = conf.replace(f"listen 127.0.0.1:{ports['up']};", f"listen 127.0.0.1:{ports['up']}; listen 127.0.0.1:{ports['up_b']};")
    open(f"{tmp}/nginx.conf", "w").write(conf)
    Proc([shutil.which("nginx", path=os.environ["PATH"] + ":/usr/sbin"), "-e", f"{tmp}/nginx.err", "-c", f"{tmp}/nginx.conf", "-p", f"{tmp}/"], f"{tmp}/nginx")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", ports["up_b"]), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    open(f"{tmp}/wasp.yaml", "w").write(f"""admin: {{ address: 127.0.0.1:{ports['admin']} }}
access_log: "off"
workers: {WORKERS}
listeners:
  - {{ name: main, address: 127.0.0.1:{ports['main']}, routes: [ {{ name: chain, cluster: up, filters: [rewrite, limit] }} ] }}
  - name: capped
    address: 127.0.0.1:{ports['capped']}
    limits: {{ max_connections: {CAP} }}
    routes: [ {{ name: plain, cluster: up-b }} ]
clusters:
  - {{ name: up, endpoints: ["127.0.0.1:{ports['up']}"] }}
  - {{ name: up-b, endpoints: ["127.0.0.1:{ports['up_b']}"] }}
filters:
  - name: rewrite
    module: header_rewrite.wasm
    config: {{ request: {{ set: {{ x-trace: "{{request_id}}" }} }}, response: {{ add: {{ x-served-by: wasp }} }} }}
  - name: limit
    module: rate_limit.wasm
    config: {{ rate: 1000000000, burst: 1000000000, key: peer }}
    allow: [log, metrics, clock, kv]
""")
    chk = subprocess.run([f"{tmp}/wasp", "check", "--config", f"{tmp}/wasp.yaml"], capture_output=True, text=True)
    if chk.returncode:
        raise SystemExit(f"wasp check failed:\n{chk.stdout}{chk.stderr}")
    wasp = Proc([f"{tmp}/wasp", "run", "--config", f"{tmp}/wasp.yaml"], f"{tmp}/wasp", dict(os.environ, WASP_LOG_FORMAT="json"))
    for _ in range(600):
        if "wasp started" in open(wasp.err).read() or not wasp.running():
            break
        time.sleep(0.05)
    logs = [json.loads(l) for l in open(wasp.err) if l.startswith("{")]
    listening = {l.get("listener"): l.get("address") for l in logs if l.get("message") == "listening"}
    if listening.get("capped") != f"127.0.0.1:{ports['capped']}" or listening.get("main") != f"127.0.0.1:{ports['main']}":
        raise SystemExit(f"wasp did not start as expected: {listening}\n{open(wasp.err).read()[-2000:]}")
    status, headers, body = http_get(ports["main"], "/")
    if status != 200 or headers.get("x-served-by") != "wasp" or "ratelimit-limit" not in headers or http_get(ports["capped"], "/")[0] != 200:
        raise SystemExit(f"wasp does not answer as expected: {status} {headers} {body!r}")
    return wasp


def run(tmp, ports, R, checks, notes):
    wasp = start(tmp, ports)
    pid, health = wasp.pid, Health(ports["admin"])
    c0 = cpu(pid)
    time.sleep(3)
    rev = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "proxy", "filters", "sdk", "Cargo.lock"], capture_output=True, text=True).stdout
    sysctl = lambda k: open(f"/proc/sys/net/{k}").read().strip()
    backlog = subprocess.run(["ss", "-Hltn", f"sport = :{ports['capped']}"], capture_output=True, text=True).stdout.split()
    R["meta"] = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), wasp=rev + (" + uncommitted changes" if dirty else ""),
                     built=datetime.datetime.fromtimestamp(os.path.getmtime(WASP_BIN)).strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(),
                     nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0], somaxconn=sysctl("core/somaxconn"),
                     syn_retries=sysctl("ipv4/tcp_syn_retries"), backlog=backlog[2] if len(backlog) > 2 else "?",
                     rss_idle=rss(pid), idle_cpu=(cpu(pid) - c0) / 3)
    health.start()

    # ---- A: steady load through the filter chain
    print(f"A: {RATE} req/s for {SOAK_SECONDS} s", file=sys.stderr)
    tool("_load", ports["main"], RATE, 3, 0.5, KA_CONNS).result()  # warm-up: pools and filter instances
    time.sleep(1)
    base, c0, n0 = fds(pid, ports), cpu(pid), metric(ports["admin"], "wasp_requests_total", listener="main")
    p, t0, samples, j0 = tool("_load", ports["main"], RATE, SOAK_SECONDS, 0.5, KA_CONNS), time.monotonic(), [], jiffies()
    while p.running():
        samples.append((time.monotonic() - t0, rss(pid), fds(pid, ports)["total"]))
        time.sleep(1)
    a = p.result()
    a.update(busy=busy(j0), cpu_us=(cpu(pid) - c0) / max(1, a["n"]) * 1e6, served=metric(ports["admin"], "wasp_requests_total", listener="main") - n0,
             rss10=min(samples, key=lambda s: abs(s[0] - 10))[1], rss_end=[s for s in samples if s[0] <= SOAK_SECONDS][-1][1],
             fds_base=base, fds_peak=max(s[2] for s in samples))
    a["drift"] = a["rss_end"] / a["rss10"] - 1
    a["rss_series"] = [min(samples, key=lambda s: abs(s[0] - t))[1] for t in range(0, int(SOAK_SECONDS) + 1, 10)]
    a["back_s"], a["fds_after"] = wait_fds(pid, ports, base, ["downstream", "other"], 5)
    R["A"] = a
    checks += [("A: errors for admitted requests = 0", not a["bad"], f"{sum(a['bad'].values())} of {a['n']} {a['bad'] or ''}"),
               ("A: RSS drift 10 s → end < 10%", abs(a["drift"]) < 0.10, f"{a['rss10']:.1f} → {a['rss_end']:.1f} MiB ({a['drift']:+.1%})"),
               ("A: fds back to baseline ≤ 5 s after (idle upstream pool apart)", a["back_s"] is not None,
                f"{base['total']} → {a['fds_after']['total']}, downstream {base['downstream']} → {a['fds_after']['downstream']}, "
                f"upstream pool {base['upstream']} → {a['fds_after']['upstream']}" + (f", in {a['back_s']:.2f} s" if a["back_s"] is not None else ""))]

    # ---- B: a connection storm against the capped listener
    print(f"B: {BURST} connections at once, max_connections {CAP}", file=sys.stderr)
    health.phase = "B"
    time.sleep(1)
    base, rss0, drops0, peak = fds(pid, ports), rss(pid), netstat("ListenOverflows", "ListenDrops"), dict(active=0, rss=0, fds=0, queue=0, scrapes=0)
    p = tool("_burst", ports["capped"], BURST, BURST_TIMEOUT)
    while p.running():
        try:
            peak["active"] = max(peak["active"], metric(ports["admin"], "wasp_active_connections", listener="capped"))
            peak["scrapes"] += 1
        except Exception as e:
            notes.append(f"B: a /metrics scrape failed: {e!r}")
        q = subprocess.run(["ss", "-Hltn", f"sport = :{ports['capped']}"], capture_output=True, text=True).stdout.split()
        peak.update(rss=max(peak["rss"], rss(pid)), fds=max(peak["fds"], len(os.listdir(f"/proc/{pid}/fd"))), queue=max(peak["queue"], int(q[1]) if q else 0))
        time.sleep(0.1)
    b, t_b = p.result(), time.monotonic()
    b.update(rss0=rss0, peak=peak, fds_base=base, drops={k: v - drops0[k] for k, v in netstat(*drops0).items()})
    b["back_s"], b["fds_after"] = wait_fds(pid, ports, base, ["downstream", "other"], 10)
    R["B"] = b
    errs = {k: v for k, v in b["kinds"].items() if k != "ok" and not k.startswith("timeout")}
    checks += [(f"B: peak wasp_active_connections ≤ {CAP}", peak["active"] <= CAP, f"{peak['active']:.0f} ({peak['scrapes']} scrapes, every 100 ms)"),
               ("B: errors for admitted connections = 0 (timeouts in the backlog apart)", not errs, f"{sum(errs.values())} {errs or ''}"),
               ("B: downstream fds back to baseline ≤ 10 s after", b["back_s"] is not None,
                f"{base['downstream']} → {b['fds_after']['downstream']}, other {base['other']} → {b['fds_after']['other']}"
                + (f", in {b['back_s']:.2f} s" if b["back_s"] is not None else ""))]

    # ---- C: HTTP/2 abuse on the main listener, a well-behaved client meanwhile
    health.phase = "C"
    try:
        import h2  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "h2"], check=True)
    R["h2check"], R["C"] = h2_check(ports["main"]), []
    for kind in ["none", "rapid-reset", "settings", "ping", "ping-noread"]:
        print(f"C: {kind} for {ABUSE_SECONDS} s", file=sys.stderr)
        time.sleep(2)
        r0, c0, n0, peak_rss, t0, j0 = rss(pid), cpu(pid), metric(ports["admin"], "wasp_requests_total", listener="main"), 0, time.monotonic(), jiffies()
        probe = tool("_load", ports["main"], PROBE_RATE, ABUSE_SECONDS, 1, 1)
        attack = tool("_flood", kind, ports["main"], ABUSE_SECONDS) if kind != "none" else None
        while probe.running() or attack and attack.running():
            peak_rss = max(peak_rss, rss(pid))
            time.sleep(0.25)
            if time.monotonic() - t0 > ABUSE_SECONDS + 30:
                raise SystemExit(f"C {kind}: the clients did not finish within {ABUSE_SECONDS + 30} s")
        pr, fl, c1, machine = probe.result(), attack and attack.result(), cpu(pid), busy(j0)
        time.sleep(1)
        R["C"].append(dict(kind=kind, probe=pr, flood=fl, cpu=c1 - c0, busy=machine, rss0=r0, rss_peak=peak_rss, rss1=rss(pid),
                           attack_reqs=metric(ports["admin"], "wasp_requests_total", listener="main") - n0 - pr["n"]))
        checks.append((f"C {kind}: the well-behaved client got only 200s", not pr["bad"], f"{pr['ok']} of {pr['n']} {pr['bad'] or ''}"))

    # ---- the end: phase B's idle upstream connections, 91 s later (expired on the next return to the pool)
    health.phase = "end"
    time.sleep(max(0, 91 - (time.monotonic() - t_b)))
    R["end_idle"] = fds(pid, ports)
    http_get(ports["capped"], "/")
    back, R["end"] = wait_fds(pid, ports, dict(base, upstream_b=1), ["downstream", "other", "upstream_b"], 5)
    checks.append(("end: phase B's idle upstream pool closed 90 s later", back is not None,
                   f"{R['end_idle']['upstream_b']} idle at 91 s with no traffic → {R['end']['upstream_b']} after one request; "
                   f"fds {R['end']['total']} (before phase A {R['A']['fds_base']['total']})"))
    time.sleep(0.3)
    health.done.set()
    health.join()
    for ph, st in health.stats.items():
        checks.append((f"/healthz every 250 ms, phase {ph}: all 200", not st["failed"], f"{st['polls']} polls, max {st['max_ms']:.0f} ms {st['failed'][:3] or ''}"))
    R["rss_end"] = rss(pid)
    if rc := wasp.stop():
        notes.append(f"wasp exited with status {rc} after SIGTERM (expected 0)")
    msgs = {}
    for l in open(wasp.err):
        if '"level":"WARN"' in l or '"level":"ERROR"' in l:
            bump(msgs, json.loads(l).get("message", "?"))
    if msgs:
        notes.append(f"wasp logged {sum(msgs.values())} WARN/ERROR lines: " + "; ".join(f"{v}× {k!r}" for k, v in msgs.items()))


def report(R, checks, notes):
    m, a, b = R["meta"], R["A"], R["B"]
    ms = lambda d: f"{d['p50']:.2f} / {d['p99']:.2f} / {d['max']:.1f}"
    L = [f"# wasp soak and overload ({m['date']})", "",
         f"wasp {m['wasp']} (release build of {m['built']}), `workers: {WORKERS}`, access log off, idle RSS {m['rss_idle']:.1f} MiB, "
         f"idle CPU {m['idle_cpu']:.1%}; upstream nginx (`shared/bench/nginx-upstream.conf`); {m['cpus']} CPUs, 127.0.0.1, "
         f"RLIMIT_NOFILE {m['nofile']}, somaxconn {m['somaxconn']}, `capped`'s listen backlog {m['backlog']}, tcp_syn_retries {m['syn_retries']}.", "",
         "## Checks", "", "| must hold | | measured |", "|---|---|---|"]
    L += [f"| {n} | {'ok' if ok else '**FAIL**'} | {v} |" for n, ok, v in checks]
    L += ["", f"## A: {RATE} req/s for {SOAK_SECONDS} s through header-rewrite + rate-limit", "",
          f"Half on {KA_CONNS} keep-alive connections, half on a new connection per request (open loop).", "",
          "| requests | 200 | errors | p50 / p99 / max ms | wasp_requests_total | wasp CPU µs/req | machine busy | RSS at 10 s → end | fds before → peak → after |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
          f"| {a['n']} | {a['ok']} | {sum(a['bad'].values())} | {ms(a)} | {a['served']:.0f} | {a['cpu_us']:.0f} | {a['busy']:.0%} | "
          f"{a['rss10']:.1f} → {a['rss_end']:.1f} MiB ({a['drift']:+.1%}) | {a['fds_base']['total']} → {a['fds_peak']} → {a['fds_after']['total']} |",
          "", f"VmRSS at 0, 10, 20 ... s: {', '.join(f'{x:.1f}' for x in a['rss_series'])} MiB.",
          "", f"## B: {BURST} connections at once, `max_connections: {CAP}`, client timeout {BURST_TIMEOUT} s", "",
          "| answered 200 | other outcomes | connected p50 / p99 / last | answered p50 / p99 / last | peak active connections | peak accept queue | kernel ListenOverflows (system-wide) | RSS before → peak | fds peak | downstream fds after |",
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
          f"| {b['answered']} | {', '.join(f'{k}: {v}' for k, v in b['kinds'].items() if k != 'ok') or 'none'} | "
          f"{' / '.join(f'{x:.2f}' for x in b['connect_s'])} s | {b['p50_s']:.2f} / {b['p99_s']:.2f} / **{b['all_s']:.2f}** s | {b['peak']['active']:.0f} | {b['peak']['queue']} | {b['drops']['ListenOverflows']} | "
          f"{b['rss0']:.1f} → {b['peak']['rss']:.1f} MiB | {b['peak']['fds']} | {b['fds_after']['downstream']} |",
          "", f"Times are since the client started opening them (one Python asyncio process; its last connect() was issued at "
          f"{b['last_connect_call_s']:.2f} s). Answered, by time (a SYN dropped while the "
          "accept queue is full is sent again after 1 s, then 3, 7, 15, 31 s after the first):", "",
          "| " + " | ".join(b["hist"]) + " |", "|" + "---:|" * len(b["hist"]), "| " + " | ".join(map(str, b["hist"].values())) + " |",
          "", f"## C: HTTP/2 abuse on `main`, {ABUSE_SECONDS} s each (h2c GET first: {R['h2check']})", "",
          f"One attacker process, reconnecting whenever wasp ends the connection; meanwhile a well-behaved client: HTTP/1.1 keep-alive, "
          f"{PROBE_RATE} GETs/s on `main`. *frames from wasp*: what the attacker read (ping-noread reads only in its last 0.5 s).", "",
          "| attack | frames sent | connections, how they ended | GOAWAY from wasp | first GOAWAY after | frames from wasp | attack requests in wasp_requests_total "
          f"| wasp CPU s in {ABUSE_SECONDS} s | attacker CPU s, machine busy | RSS before → peak → after | client 200 / sent | client p50 / p99 / max ms |",
          "|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c in R["C"]:
        f, pr = c["flood"], c["probe"]
        if f:
            row = (f"| {c['kind']} | {f['frames']:,} | {f['connections']}: " + ", ".join(f"{v}× {k}" for k, v in f["ends"].items())
                   + f" | {', '.join(f'{v}× {k}' for k, v in f['goaways'].items()) or '**none**'} | "
                   + (f"{f['goaway_first_ms']:.1f} ms (median {f['goaway_p50_ms']:.1f})" if f["goaways"] else "—")
                   + f" | {', '.join(f'{k} {v:,}' for k, v in f['received'].items())} | {c['attack_reqs']:.0f}")
        else:
            row = "| none (baseline) | — | — | — | — | — | —"
        L.append(row + f" | {c['cpu']:.2f} | {f['cpu'] if f else 0:.2f}, {c['busy']:.0%} | {c['rss0']:.1f} → {c['rss_peak']:.1f} → {c['rss1']:.1f} MiB | {pr['ok']} / {pr['n']} | {ms(pr)} |")
    L += ["", f"End: {R['end_idle']['upstream_b']} of phase B's upstream connections still open 91 s later with no traffic; after one request "
          f"through `capped`: wasp fds {R['end']}, RSS {R['rss_end']:.1f} MiB.", ""]
    return "\n".join(L + (["## Notes", ""] + [f"- {n}" for n in notes] + [""] if notes else []))


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 2 * BURST + 4096)
    try:  # before anything is spawned: wasp, nginx and the clients inherit it
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "-p", "wasp"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--manifest-path", "filters/Cargo.toml", "--target", "wasm32-wasip2", "--release"],
                       cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=f"{ROOT}/target/wasm"))
    global TMP
    tmp = TMP = tempfile.mkdtemp(prefix="wasp-soak.")
    shutil.copy(WASP_BIN, f"{tmp}/wasp")
    for m in ("header_rewrite", "rate_limit"):
        shutil.copy(f"{FILTER_DIR}/{m}.wasm", tmp)
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(5)]
    ports = dict(zip(["up", "up_b", "main", "capped", "admin"], (s.getsockname()[1] for s in socks)))
    [s.close() for s in socks]
    R, checks, notes = {}, [], []
    t0 = time.monotonic()
    while (load := busy()) > 0.15 and time.monotonic() - t0 < QUIET_WAIT:
        print(f"waiting for a quiet machine: {load:.0%} busy", file=sys.stderr)
    if load > 0.15:
        notes.append(f"the machine was {load:.0%} busy (all CPUs) before the run, after waiting {QUIET_WAIT} s: other work skews CPU and latency figures")
    try:
        run(tmp, ports, R, checks, notes)
    finally:
        for p in reversed(Proc.all):
            p.stop()
        if os.path.getsize(f"{tmp}/upstream-error.log") if os.path.exists(f"{tmp}/upstream-error.log") else 0:
            notes.append("upstream nginx error log: " + open(f"{tmp}/upstream-error.log").read()[:300])
        if os.environ.get("KEEP_TMP") or "C" not in R:
            print(f"temporary files kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    md = report(R, checks, notes)
    print(md)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    open(f"{RESULTS_DIR}/soak-latest.md", "w").write(md)
    open(f"{RESULTS_DIR}/soak-latest.json", "w").write(json.dumps(dict(R, checks=checks, notes=notes), indent=1))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    mode, args = (sys.argv + [""])[1], sys.argv[2:]
    if mode == "_load":
        print(json.dumps(asyncio.run(load(int(args[0]), float(args[1]), float(args[2]), float(args[3]), int(args[4])))))
    elif mode == "_burst":
        print(json.dumps(asyncio.run(burst(int(args[0]), int(args[1]), float(args[2])))))
    elif mode == "_flood":
        print(json.dumps(flood(args[0], int(args[1]), float(args[2]))))
    else:
        sys.exit(main())
