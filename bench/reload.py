#!/usr/bin/env python3
"""Hot-reload latency and throughput, for a filter module and for the config.

    cargo build --release -p wasp
    cargo build --manifest-path filters/Cargo.toml --target wasm32-wasip2 --release
    python3 bench/reload.py

Two rounds of 50 reloads each, every one a rename-over alternating two
versions whose responses differ in `x-version`:

- filter: the module file alternates two marker filters (compile, link,
  init, swap);
- config: the config file alternates the header-rewrite filter's config
  (`x-version: a|b`): parse and validate the whole config, keep the
  clusters, initialise the filter's new version (its module is not
  compiled again), swap.

Each round reports write -> swapped in ("filter reloaded" / "config
reloaded" in wasp's log) and write -> first response from the new version as
seen by a polling client (adds its own polling delay); then, with wrk
installed, requests/s for 10 s with no reload and for 10 s with a reload
every second. The upstream is nginx if installed (bench/run.sh installs it),
else a slow Python server; the ratio is what counts. Ports 28911-28913,
127.0.0.1.
"""
import datetime, http.client, os, re, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASP = os.path.join(ROOT, "target/release/wasp")
WASM = os.path.join(ROOT, "filters/target/wasm32-wasip2/release")
UPSTREAM = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        self.send_response(200); self.send_header('content-length', '2'); self.end_headers(); self.wfile.write(b'ok')
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', 28911), H).serve_forever()
"""
HEAD = """admin: { address: 127.0.0.1:28913 }
access_log: "off"
filter_cache: "off"
listeners:
  - { name: i, address: 127.0.0.1:28912, routes: [ { name: r, cluster: c, filters: [m] } ] }
clusters:
  - { name: c, endpoints: ["127.0.0.1:28911"] }
"""


def version():
    c = http.client.HTTPConnection("127.0.0.1", 28912, timeout=5)
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    c.close()
    return r.getheader("x-version")


def rename_over(path, content):
    with open(path + ".tmp", "wb") as f:
        f.write(content)
    os.rename(path + ".tmp", path)


class Filter:
    """Reloads the module file: two marker filters."""
    logged = "filter reloaded"

    def __init__(self, tmp):
        self.versions = {v: open(os.path.join(WASM, f"test_marker_{v}.wasm"), "rb").read() for v in "ab"}
        self.path = os.path.join(tmp, "m.wasm")
        rename_over(self.path, self.versions["a"])
        self.config = HEAD + f"filters:\n  - {{ name: m, module: {self.path} }}\n"

    def write(self, v):
        rename_over(self.path, self.versions[v])


class Config:
    """Reloads the config file: the header-rewrite filter's config."""
    logged = "config reloaded"

    def __init__(self, tmp):
        self.path = os.path.join(tmp, "wasp.yaml")
        self.config = self.text("a")

    def text(self, v):
        module = os.path.join(WASM, "header_rewrite.wasm")
        return HEAD + f"""filters:
  - name: m
    module: {module}
    config: {{ response: {{ set: {{ x-version: "{v}" }} }} }}
"""

    def write(self, v):
        rename_over(self.path, self.text(v).encode())


def wrk(target=None, seconds=10):
    """req/s from wrk -t1 -c8 through the filter, optionally reloading `target` every second meanwhile."""
    proc = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds}s", "http://127.0.0.1:28912/"],
                            stdout=subprocess.PIPE, text=True)
    if target:
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end - 1:
            time.sleep(1)
            target.write("ab"[i % 2])
            i += 1
    out = proc.communicate()[0]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print("wrk reported:", errors.group(0))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def round(kind, tmp):
    target = kind(tmp)
    config = os.path.join(tmp, "wasp.yaml")
    with open(config, "w") as f:
        f.write(target.config)
    err = open(os.path.join(tmp, f"wasp-{kind.__name__}.err"), "w")
    wasp = subprocess.Popen([WASP, "run", "--config", config], stderr=err)
    writes, seen = [], []
    try:
        time.sleep(1.5)
        for i in range(50):
            v = "b" if i % 2 == 0 else "a"
            target.write(v)
            writes.append(time.time())
            t0 = time.monotonic()
            while version() != v:
                time.sleep(0.002)
            seen.append((time.monotonic() - t0) * 1000)
            time.sleep(0.05)
        if shutil.which("wrk"):
            steady, reloading = wrk(), wrk(target)
            print(f"{kind.__name__.lower()} throughput: {steady:.0f} req/s steady, {reloading:.0f} req/s "
                  f"reloading every 1 s ({reloading / steady:.2f}x)")
    finally:
        wasp.terminate()
        wasp.wait()
    logs = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in open(err.name) if target.logged in l]
    swaps = [datetime.datetime.fromisoformat(l.split()[0].replace("Z", "+00:00")).timestamp() for l in logs]
    swap = sorted((s - w) * 1000 for w, s in zip(writes, swaps))
    seen.sort()
    pct = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))]
    name = kind.__name__.lower()
    print(f"{name} reloads: {len(swap)} of {len(writes)}")
    print(f"{name} write -> swapped in:  p50 {pct(swap, .5):.0f} ms  p99 {pct(swap, .99):.0f} ms  max {swap[-1]:.0f} ms")
    print(f"{name} write -> client sees: p50 {pct(seen, .5):.0f} ms  p99 {pct(seen, .99):.0f} ms  max {seen[-1]:.0f} ms")


def main():
    tmp = tempfile.mkdtemp(prefix="wasp-reload.")
    if shutil.which("nginx"):
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; master_process off; worker_processes 1; pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log; events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:28911; location / {{ return 200 "ok"; }} }} }}
""")
        up = subprocess.Popen(["nginx", "-c", conf, "-p", tmp, "-e", f"{tmp}/nginx-error.log"])
    else:
        up = subprocess.Popen([sys.executable, "-c", UPSTREAM])
    try:
        round(Filter, tmp)
        round(Config, tmp)
    finally:
        up.terminate()
        up.wait()
    shutil.rmtree(tmp)


main()
