#!/usr/bin/env python3
"""Start-up time with and without the compiled-filter cache.

    cargo build --release -p wasp
    cargo build --manifest-path filters/Cargo.toml --target wasm32-wasip2 --release
    python3 bench/startup.py

One config with the four real filters (header-rewrite, rate-limit, auth,
ext-authz), started REPS times each way: `filter_cache: off` (every module
compiled), a fresh cache folder (compiled, then written), and that folder
again (read back, nothing compiled). The figure is wasp's own `startup_ms`
("wasp started" log line: config read to every listener serving) and the
process's time from exec to that line. Ports 28921-28922, 127.0.0.1.
"""
import json, os, shutil, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASP = os.path.join(ROOT, "target/release/wasp")
WASM = os.path.join(ROOT, "filters/target/wasm32-wasip2/release")
REPS = int(os.environ.get("REPS", "5"))


def config(cache):
    return f"""admin: {{ address: 127.0.0.1:28922 }}
access_log: "off"
filter_cache: "{cache}"
listeners:
  - name: i
    address: 127.0.0.1:28921
    routes: [ {{ name: r, cluster: c, filters: [hr, rl, auth, ea] }} ]
clusters:
  - {{ name: c, endpoints: ["127.0.0.1:28923"] }}
filters:
  - {{ name: hr, module: {WASM}/header_rewrite.wasm, config: {{ response: {{ set: {{ x-a: b }} }} }} }}
  - {{ name: rl, module: {WASM}/rate_limit.wasm, config: {{ rate: 10, burst: 10 }}, allow: [clock, kv] }}
  - {{ name: auth, module: {WASM}/auth.wasm, config: {{ api_keys: {{ keys: [ {{ key: k-0123456789, subject: s }} ] }} }} }}
  - {{ name: ea, module: {WASM}/ext_authz.wasm, config: {{ cluster: c }}, http_clusters: [c] }}
"""


def start(path):
    """(startup_ms as wasp logs it, ms from exec to that line)"""
    t0 = time.monotonic()
    env = dict(os.environ, WASP_LOG_FORMAT="json")
    p = subprocess.Popen([WASP, "run", "--config", path], stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in p.stderr:
            if '"wasp started"' in line:
                return json.loads(line)["startup_ms"], (time.monotonic() - t0) * 1000
        raise SystemExit(f"wasp did not start: {p.wait()}")
    finally:
        p.terminate()
        p.wait()


def main():
    tmp = tempfile.mkdtemp(prefix="wasp-startup.")
    path = os.path.join(tmp, "wasp.yaml")
    rows = {"cache off (compile every module)": [], "cold cache (compile, then write)": [],
            "warm cache (read back)": []}
    for _ in range(REPS):
        cache = tempfile.mkdtemp(dir=tmp)
        for name, setting in zip(rows, ["off", cache, cache]):
            with open(path, "w") as f:
                f.write(config(setting))
            rows[name].append(start(path))
    print(f"4 filter modules, median of {REPS}:")
    for name, xs in rows.items():
        print(f"  {name:34} startup_ms {statistics.median(x[0] for x in xs):6.0f}   "
              f"exec -> serving {statistics.median(x[1] for x in xs):6.0f} ms")
    shutil.rmtree(tmp)


main()
