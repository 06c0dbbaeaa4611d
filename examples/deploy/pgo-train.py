#!/usr/bin/env python3
"""Drives a wasp binary through the paths a sidecar spends its time on, for
profile-guided optimisation (examples/deploy/build-dist.sh): an instrumented
build records which branches and calls these requests take, and the shipped
build is laid out for them. Code no request here reaches is treated as cold,
so every hot path is covered: HTTP/1.1 keep-alive (GET, POST with a length
and chunked bodies, larger responses), HTTP/2 (h2c and over TLS), TLS and
mTLS both ways, TCP proxying, and filters (standing edits, a call, the
auth + rate-limit + header-rewrite chain, a refusal).

Twice: as a one-CPU sidecar runs (one thread, no access log), then as the
image's default config runs (a thread per CPU, an access log). Each time one
wasp process, chained through its own listeners, so the client only speaks
HTTP/1.1 (standard library only; openssl makes the certificates):

  client -> front (HTTP/1.1) -> up                          plain, filters
                             -> h2c cluster -> back -> up   HTTP/2 both sides
                             -> TLS h2 + mTLS -> back-tls -> up
                             -> TLS h1 + mTLS -> back-tls -> up
  client -> back-tls (TLS h1, client cert) -> up
  client -> tcp listener -> echo

Usage: pgo-train.py --wasp BIN --filters DIR [--seconds S]
Exits non-zero, with the end of wasp's log, if wasp fails to start, does
not exit cleanly on SIGTERM, a request fails or gets no answer, a group of
paths saw no traffic, or header-rewrite's edit did not reach the upstream
(the test suite runs it against a debug build to keep it working).
"""

import argparse
import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

SECRET = "wasp-pgo-hs256-secret-0123456789abcdef"
BIG = b"x" * 65536


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jwt(secret):
    import base64, hashlib, hmac, json
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "pgo", "exp": int(time.time()) + 3600}).encode())
    sig = b64(hmac.new(secret.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def certs(d):
    """A CA, a server certificate for `back.local` and a client certificate."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.pem")
    run("req", "-x509", "-new", "-key", "ca-key.pem", "-subj", "/CN=pgo-ca", "-days", "2", "-out", "ca.pem")
    for name, san in (("server", "DNS:back.local"), ("client", "URI:spiffe://pgo.local/ns/x/sa/front")):
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}-key.pem")
        run("req", "-new", "-key", f"{name}-key.pem", "-subj", f"/CN={name}", "-out", f"{name}.csr")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def config(d, ports, filters, workers, access_log):
    p = ports
    tls_client = f"{{ ca: {d}/ca.pem, cert: {d}/client.pem, key: {d}/client-key.pem, sni: back.local }}"
    return f"""
admin: {{ address: 127.0.0.1:{p['admin']} }}
access_log: "{access_log}"
workers: {workers}
filter_cache: {d}/cache
listeners:
  - name: front
    address: 127.0.0.1:{p['front']}
    routes:
      - {{ name: nf, match: {{ prefix: /nf/ }}, cluster: up }}
      - {{ name: hr, match: {{ prefix: /hr/ }}, cluster: up, filters: [hr] }}
      - {{ name: hrcall, match: {{ prefix: /hrcall/ }}, cluster: up, filters: [hrcall] }}
      - {{ name: chain, match: {{ prefix: /chain/ }}, cluster: up, filters: [auth, rl, hr] }}
      - {{ name: deny, match: {{ prefix: /deny/ }}, cluster: up, filters: [auth] }}
      - {{ name: h2c, match: {{ prefix: /h2c/ }}, cluster: back-h2c }}
      - {{ name: tls2, match: {{ prefix: /tls2/ }}, cluster: back-tls2 }}
      - {{ name: tls1, match: {{ prefix: /tls1/ }}, cluster: back-tls1 }}
  - name: back
    address: 127.0.0.1:{p['back']}
    routes: [ {{ name: back, cluster: up }} ]
  - name: back-tls
    address: 127.0.0.1:{p['back_tls']}
    tls: {{ cert: {d}/server.pem, key: {d}/server-key.pem, client_ca: {d}/ca.pem }}
    routes: [ {{ name: back-tls, cluster: up }} ]
  - name: tcp
    address: 127.0.0.1:{p['tcp']}
    protocol: tcp
    cluster: echo
clusters:
  - {{ name: up, endpoints: ["127.0.0.1:{p['up']}"] }}
  - {{ name: echo, endpoints: ["127.0.0.1:{p['echo']}"] }}
  - {{ name: back-h2c, endpoints: ["127.0.0.1:{p['back']}"], protocol: http2 }}
  - {{ name: back-tls2, endpoints: ["127.0.0.1:{p['back_tls']}"], protocol: http2, tls: {tls_client} }}
  - {{ name: back-tls1, endpoints: ["127.0.0.1:{p['back_tls']}"], tls: {tls_client} }}
filters:
  - name: hr
    module: {filters}/header_rewrite.wasm
    config: {{ request: {{ set: {{ x-trace: "{{request_id}}" }} }}, response: {{ add: {{ x-served-by: wasp }} }} }}
  - name: hrcall
    module: {filters}/header_rewrite.wasm
    config: {{ request: {{ set: {{ x-trace: "{{request_id}}" }} }}, path_prefix: {{ from: /hrcall/, to: /hrcall/ }} }}
  - name: auth
    module: {filters}/auth.wasm
    config: {{ jwt: {{ keys: [ {{ alg: HS256, secret: "{SECRET}" }} ] }} }}
  - name: rl
    module: {filters}/rate_limit.wasm
    config: {{ rate: 1000000000, burst: 1000000000, key: peer }}
    allow: [log, metrics, clock, kv]
"""


# ------------------------------------------------------------------ peers

async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = {}
    for line in lines[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            fields[k.strip().lower()] = v.strip()
    return lines[0], fields


async def read_body(reader, fields):
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return body
            body += (await reader.readexactly(size + 2))[:-2]
    return await reader.readexactly(int(fields.get(b"content-length", b"0")))


EDITED = {"want": 0, "got": 0}


async def upstream(reader, writer):
    try:
        while True:
            line, fields = await read_head(reader)
            await read_body(reader, fields)
            if b" /hr/" in line or b" /chain/" in line:
                # header-rewrite's standing edit must have reached the upstream
                EDITED["want"] += 1
                EDITED["got"] += fields.get(b"x-trace", b"") == fields.get(b"x-request-id", b"-")
            body = BIG if b" /nf/big" in line else b"ok\n"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


# ------------------------------------------------------------------ load

class Failed(Exception):
    pass


async def client(port, paths, until, token, tls=None, counts=None, group=""):
    """One keep-alive connection sending requests for `paths` in turn until `until`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname="back.local" if tls else None)
    n = 0
    try:
        while time.monotonic() < until:
            path, method, body, want = paths[n % len(paths)]
            auth = b"Bearer " + (b"x" + token[1:] if want == 401 else token)
            head = (b"%s %s HTTP/1.1\r\nhost: app.local\r\nuser-agent: pgo-train\r\naccept: */*\r\n"
                    b"authorization: %s\r\n" % (method, path, auth))
            if body is None:
                writer.write(head + b"\r\n")
            elif body == b"chunked":
                writer.write(head + b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            else:
                writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body)
            line, fields = await read_head(reader)
            await read_body(reader, fields)
            status = int(line.split(b" ")[1])
            if status != want:
                raise Failed(f"{method.decode()} {path.decode()} on :{port}: {line.decode()} (wanted {want})")
            n += 1
    finally:
        writer.close()
    counts[group] = counts.get(group, 0) + n


async def tcp_client(port, until, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while time.monotonic() < until:
        writer.write(b"p" * 512)
        got = await reader.readexactly(512)
        if got != b"p" * 512:
            raise Failed("tcp echo came back changed")
        n += 1
    writer.close()
    counts["tcp"] = counts.get("tcp", 0) + n


async def drive(ports, d, seconds):
    token = jwt(SECRET).encode()
    tls = ssl.create_default_context(cafile=f"{d}/ca.pem")
    tls.load_cert_chain(f"{d}/client.pem", f"{d}/client-key.pem")
    get = lambda p, want=200: (p, b"GET", None, want)
    plain = [get(b"/nf/a?q=1"), get(b"/nf/b"), (b"/nf/post", b"POST", b"y" * 1024, 200),
             (b"/nf/chunked", b"POST", b"chunked", 200), get(b"/nf/big")]
    filtered = [get(b"/hr/x"), get(b"/hrcall/x"), get(b"/chain/x"), get(b"/deny/x", 401)]
    loops = [get(b"/h2c/x"), get(b"/tls2/x"), get(b"/tls1/x"), (b"/h2c/post", b"POST", b"z" * 512, 200)]
    counts = {}
    until = time.monotonic() + seconds
    jobs = [client(ports["front"], plain, until, token, counts=counts, group="http1") for _ in range(8)]
    jobs += [client(ports["front"], filtered, until, token, counts=counts, group="filters") for _ in range(6)]
    jobs += [client(ports["front"], loops, until, token, counts=counts, group="h2+tls") for _ in range(6)]
    jobs += [client(ports["back_tls"], plain[:2], until, token, tls=tls, counts=counts, group="tls-in")
             for _ in range(2)]
    jobs += [tcp_client(ports["tcp"], until, counts) for _ in range(2)]
    await asyncio.gather(*jobs)
    # Handshakes are a path too: a few fresh TLS connections.
    for _ in range(20):
        await client(ports["back_tls"], plain[:1], time.monotonic() + 0.01, token, tls=tls, counts=counts,
                     group="handshakes")
    return counts


async def phase(a, d, workers, access_log):
    """One wasp process, driven for a.seconds / 2."""
    ports = {k: free_port() for k in ("admin", "front", "back", "back_tls", "tcp", "up", "echo")}
    servers = [await asyncio.start_server(upstream, "127.0.0.1", ports["up"]),
               await asyncio.start_server(echo, "127.0.0.1", ports["echo"])]
    with open(f"{d}/wasp.yaml", "w") as f:
        f.write(config(d, ports, os.path.abspath(a.filters), workers, access_log))
    log = open(f"{d}/wasp.log", "w")
    wasp = subprocess.Popen([a.wasp, "run", "--config", f"{d}/wasp.yaml"], stderr=log, stdout=log)
    try:
        deadline = time.monotonic() + 300  # first start compiles the filters
        for port in ("front", "back", "back_tls", "tcp"):
            while True:
                if wasp.poll() is not None:
                    raise Failed(f"wasp exited ({wasp.returncode}) before listening")
                try:
                    socket.create_connection(("127.0.0.1", ports[port]), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise Failed(f"wasp not listening on {port} after 300 s")
                    await asyncio.sleep(0.1)
        try:
            counts = await asyncio.wait_for(drive(ports, d, a.seconds / 2), a.seconds / 2 + 60)
        except asyncio.TimeoutError:
            raise Failed("requests still unanswered 60 s after the training ended")
    finally:
        if wasp.poll() is None:
            wasp.send_signal(signal.SIGTERM)  # a clean exit writes the profile
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, lambda: wasp.wait(timeout=60))
        except subprocess.TimeoutExpired:
            wasp.kill()
            wasp.wait()
            raise Failed("wasp did not exit within 60 s of SIGTERM")
        for s in servers:
            s.close()
        log.close()
    if code != 0:
        raise Failed(f"wasp exited with {code}")
    idle = [g for g in ("http1", "filters", "h2+tls", "tls-in", "tcp", "handshakes") if not counts.get(g)]
    if idle:
        raise Failed(f"no request went through: {', '.join(idle)}")
    return counts


async def main_async(a, d):
    # As a single-CPU sidecar runs (one thread, no access log), then as the
    # image's default config runs (a thread per CPU: tokio's multi-thread
    # scheduler; an access log line per request).
    first = await phase(a, d, 1, "off")
    second = await phase(a, d, 2, f"{d}/access.log")
    if EDITED["want"] == 0 or EDITED["got"] != EDITED["want"]:
        raise Failed(f"header-rewrite's x-trace reached the upstream on {EDITED['got']} of {EDITED['want']} requests")
    return {g: first.get(g, 0) + second.get(g, 0) for g in first}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasp", required=True)
    ap.add_argument("--filters", required=True, help="folder with header_rewrite.wasm, auth.wasm, rate_limit.wasm")
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wasp-pgo-") as d:
        try:
            certs(d)
            counts = asyncio.run(main_async(a, d))
        except Exception as e:  # reported with wasp's log, whatever it was
            sys.stderr.write(f"pgo-train: {type(e).__name__}: {e}\n")
            try:
                sys.stderr.write(open(f"{d}/wasp.log").read()[-4000:])
            except OSError:
                pass
            sys.exit(1)
    total = sum(counts.values())
    each = ", ".join(f"{g} {n}" for g, n in counts.items())
    print(f"pgo-train: {total} requests and echoes through wasp in {a.seconds:g} s ({each}), all answered as expected")


if __name__ == "__main__":
    main()
