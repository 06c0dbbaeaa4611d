#!/usr/bin/env python3
"""Filter reload latency: time from a module file's rename-over to wasp
serving the new version, over 50 reloads alternating two marker filters.

    cargo build --release -p wasp
    cargo build --manifest-path filters/Cargo.toml --target wasm32-wasip2 --release
    python3 bench/reload.py

Reports two figures: write -> "filter reloaded" in wasp's log (the swap),
and write -> first response from the new version as seen by a polling
client (adds the client's own polling delay). Then, with wrk installed,
requests/s through the filter for 10 s with no reload and for 10 s with a
reload every second. The upstream is nginx if installed (bench/run.sh
installs it), else a slow Python server; the ratio is what counts.
Ports 28911-28913, 127.0.0.1.
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


def version():
    c = http.client.HTTPConnection("127.0.0.1", 28912, timeout=5)
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    c.close()
    return r.getheader("x-version")


def wrk(reload_every=None, module=None, tmp=None, seconds=10):
    """req/s from wrk -t1 -c8 through the filter, optionally reloading it meanwhile."""
    proc = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds}s", "http://127.0.0.1:28912/"],
                            stdout=subprocess.PIPE, text=True)
    if reload_every:
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end - reload_every:
            time.sleep(reload_every)
            v = "ab"[i % 2]
            shutil.copy(os.path.join(tmp, f"{v}.wasm"), module + ".tmp")
            os.rename(module + ".tmp", module)
            i += 1
    out = proc.communicate()[0]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print("wrk reported:", errors.group(0))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    tmp = tempfile.mkdtemp(prefix="wasp-reload.")
    for v in "ab":
        shutil.copy(os.path.join(WASM, f"test_marker_{v}.wasm"), os.path.join(tmp, f"{v}.wasm"))
    module = os.path.join(tmp, "m.wasm")
    shutil.copy(os.path.join(tmp, "a.wasm"), module)
    config = os.path.join(tmp, "wasp.yaml")
    with open(config, "w") as f:
        f.write(f"""admin: {{ address: 127.0.0.1:28913 }}
access_log: "off"
listeners:
  - {{ name: i, address: 127.0.0.1:28912, routes: [ {{ name: r, cluster: c, filters: [m] }} ] }}
clusters:
  - {{ name: c, endpoints: ["127.0.0.1:28911"] }}
filters:
  - {{ name: m, module: {module} }}
""")
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
    err = open(os.path.join(tmp, "wasp.err"), "w")
    wasp = subprocess.Popen([WASP, "run", "--config", config], stderr=err)
    writes, seen = [], []
    try:
        time.sleep(1.5)
        for i in range(50):
            v = "b" if i % 2 == 0 else "a"
            shutil.copy(os.path.join(tmp, f"{v}.wasm"), module + ".tmp")
            os.rename(module + ".tmp", module)
            writes.append(time.time())
            t0 = time.monotonic()
            while version() != v:
                time.sleep(0.002)
            seen.append((time.monotonic() - t0) * 1000)
            time.sleep(0.05)
        if shutil.which("wrk"):
            steady = wrk()
            reloading = wrk(reload_every=1.0, module=module, tmp=tmp)
            print(f"throughput: {steady:.0f} req/s steady, {reloading:.0f} req/s reloading every 1 s "
                  f"({reloading / steady:.2f}x)")
    finally:
        wasp.terminate()
        up.terminate()
        wasp.wait()
        up.wait()
    logs = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in open(err.name) if "filter reloaded" in l]
    swaps = [datetime.datetime.fromisoformat(l.split()[0].replace("Z", "+00:00")).timestamp() for l in logs]
    swap = sorted((s - w) * 1000 for w, s in zip(writes, swaps))
    seen.sort()
    pct = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))]
    print(f"reloads: {len(swap)} of {len(writes)}")
    print(f"write -> swapped in:  p50 {pct(swap, .5):.0f} ms  p99 {pct(swap, .99):.0f} ms  max {swap[-1]:.0f} ms")
    print(f"write -> client sees: p50 {pct(seen, .5):.0f} ms  p99 {pct(seen, .99):.0f} ms  max {seen[-1]:.0f} ms")
    shutil.rmtree(tmp)


main()
