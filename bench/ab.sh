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
# Both builds are started afresh each round, in alternating order (A then B,
# then B then A), and measured in that order: with one binary in both
# slots, the process started first read ~0.07 µs cheaper in 6 of 8 rounds
# on this machine, which a fixed setup would credit to one build.
# Prints each round and the means.
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
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # measure PID PORT: CPU µs a request
    local before after out n
    before=$(cpu "$1")
    out=$(taskset -c 0 wrk -t2 -c50 -d"${SECS}s" "http://127.0.0.1:$2/" 2>&1)
    after=$(cpu "$1")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    python3 -c "print(f'{($after - $before) * 1e6 / $(getconf CLK_TCK) / $n:.3f}')"
}
for p in "$UP" "$NX"; do wait_port "$p" || { echo "port $p did not open" >&2; exit 1; }; done
PN=$(pgrep -P "$(cat "$D/nx/proxy.pid")" | head -1) # nginx's worker
taskset -c 0 wrk -t2 -c50 -d2s "http://127.0.0.1:$NX/" >/dev/null

round() { # round FIRST SECOND: starts both, warms them, sets X and Y (µs) in that order
    local p1 port1 p2 port2
    read -r p1 port1 < <(start_wasp first "$1")
    read -r p2 port2 < <(start_wasp second "$2")
    PIDS+=("$p1" "$p2")
    wait_port "$port1" && wait_port "$port2" || { echo "wasp did not start" >&2; exit 1; }
    taskset -c 0 wrk -t2 -c50 -d2s "http://127.0.0.1:$port1/" >/dev/null
    taskset -c 0 wrk -t2 -c50 -d2s "http://127.0.0.1:$port2/" >/dev/null
    X=$(measure "$p1" "$port1")
    Y=$(measure "$p2" "$port2")
    kill "$p1" "$p2"
    while kill -0 "$p1" 2>/dev/null || kill -0 "$p2" 2>/dev/null; do sleep 0.1; done
}

echo "round  A(old) µs  B(new) µs  nginx µs    A: $A    B: $B"
RA=() RB=() RN=()
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then round "$A" "$B"; a=$X b=$Y
    else round "$B" "$A"; b=$X a=$Y; fi
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
