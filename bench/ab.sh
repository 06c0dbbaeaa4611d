#!/usr/bin/env bash
# CPU per request of two wasp builds side by side, with nginx as the yardstick:
# the way to tell whether a change to the HTTP path is worth keeping when the
# difference is a few percent (instructions: bench/instr.sh).
#
#   bench/ab.sh OLD_WASP NEW_WASP [SECS] [ROUNDS]      # defaults: 8 s, 6 rounds
#
# Same setup as bench/run.sh's HTTP/1.1 row (nginx upstream and nginx proxy
# from /work/shared/bench, wasp `workers: 1`, access log off; proxies and
# upstream on CPU 1, `wrk -t2 -c50` on CPU 0). Both builds run at once on
# their own ports; each round measures them one after the other and then
# nginx, CPU µs per request from /proc (utime + stime over requests).
# The order alternates (A B, then B A): whichever target runs first in a
# round measures ~0.05 µs cheaper on this machine, which a fixed order
# would credit to one build. Prints each round and the means.
set -euo pipefail

A=$(realpath "$1") B=$(realpath "$2") SECS=${3:-8} ROUNDS=${4:-6}
SHARED=${SHARED:-/work/shared/bench}
D=$(mktemp -d /tmp/wasp-ab.XXXXXX)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

UP=$(free_port) NX=$(free_port)
mkdir -p "$D/up" "$D/nx"
sed -e "s#@DIR@#$D/up#g" -e "s#@UP@#$UP#g" "$SHARED/nginx-upstream.conf" >"$D/up/nginx.conf"
sed -e "s#@DIR@#$D/nx#g" -e "s#@UP@#$UP#g" -e "s#@PX@#$NX#g" "$SHARED/nginx-proxy.conf" >"$D/nx/nginx.conf"
taskset -c 1 nginx -e "$D/up/error.log" -c "$D/up/nginx.conf" -p "$D/up/" &
PIDS+=($!)
taskset -c 1 nginx -e "$D/nx/error.log" -c "$D/nx/nginx.conf" -p "$D/nx/" &
PIDS+=($!)

start_wasp() { # start_wasp NAME BIN: prints "PID PORT"
    local port admin
    port=$(free_port) admin=$(free_port)
    cat >"$D/$1.yaml" <<EOF
admin: { address: 127.0.0.1:$admin }
access_log: "off"
workers: 1
listeners:
  - name: ingress
    address: 127.0.0.1:$port
    routes:
      - name: all
        cluster: up
clusters:
  - name: up
    endpoints: ["127.0.0.1:$UP"]
    protocol: http1
EOF
    taskset -c 1 "$2" run --config "$D/$1.yaml" 2>"$D/$1.err" &
    echo "$! $port"
}
read -r PA PORT_A < <(start_wasp a "$A")
read -r PB PORT_B < <(start_wasp b "$B")
PIDS+=("$PA" "$PB")
for p in "$UP" "$NX" "$PORT_A" "$PORT_B"; do wait_port "$p" || { echo "port $p did not open" >&2; exit 1; }; done
sleep 1
PN=$(pgrep -P "$(cat "$D/nx/proxy.pid")" | head -1) # nginx's worker

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # measure PID PORT: CPU µs a request
    local before after out n
    before=$(cpu "$1")
    out=$(taskset -c 0 wrk -t2 -c50 -d"${SECS}s" "http://127.0.0.1:$2/" 2>&1)
    after=$(cpu "$1")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    python3 -c "print(f'{($after - $before) * 1e6 / $(getconf CLK_TCK) / $n:.3f}')"
}
for port in "$PORT_A" "$PORT_B" "$NX"; do taskset -c 0 wrk -t2 -c50 -d2s "http://127.0.0.1:$port/" >/dev/null; done

echo "round  A(old) µs  B(new) µs  nginx µs    A: $A    B: $B"
RA=() RB=() RN=()
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then a=$(measure "$PA" "$PORT_A"); b=$(measure "$PB" "$PORT_B")
    else b=$(measure "$PB" "$PORT_B"); a=$(measure "$PA" "$PORT_A"); fi
    n=$(measure "$PN" "$NX")
    RA+=("$a") RB+=("$b") RN+=("$n")
    printf '%5d  %9s  %9s  %8s\n' "$r" "$a" "$b" "$n"
done
python3 - "${RA[*]}" "${RB[*]}" "${RN[*]}" <<'EOF'
import sys
a, b, n = ([float(x) for x in s.split()] for s in sys.argv[1:4])
m = lambda xs: sum(xs) / len(xs)
lower = sum(y < x for x, y in zip(a, b))
print(f"means  A {m(a):.3f}  B {m(b):.3f}  nginx {m(n):.3f}   B - A {m(b) - m(a):+.3f} µs "
      f"(B lower in {lower} of {len(a)} rounds)   A/nginx {m(a) / m(n):.3f}  B/nginx {m(b) / m(n):.3f}")
EOF
