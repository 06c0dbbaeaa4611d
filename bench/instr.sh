#!/usr/bin/env bash
# Instructions per request of wasp alone, for profile-driven work on the HTTP path.
#
#   bench/instr.sh [WASP_BIN]                  # h1 and h2c: (I(5N) - I(N)) / 4N
#   TOP=25 bench/instr.sh target/release/wasp  # also the top functions (inclusive) of the 5N run
#
# Same method as bench/run.sh's valgrind rows (wasp `workers: 1`, access log
# off, one route to an nginx upstream returning "ok"; VG_WARMUP requests, then
# N, again with 5N; h2load -c 10, h2c with -m 10), without the rest of the
# run. TOOL=callgrind (default) keeps a profile for callgrind_annotate;
# TOOL=cachegrind is bench/run.sh's tool (the counts agree). Knobs: VG_N
# (default 2000), VG_WARMUP (200), SCENARIOS ("h1 h2c"), TOP (0: no profile
# printout), OUT (where outputs are kept; default a new temporary directory),
# ATOMICS=1 (callgrind only: also the atomic read-modify-write instructions
# per request, by function with TOP, from bench/atomics.py).
set -euo pipefail

WASP_BIN=${1:-target/release/wasp}
VG_N=${VG_N:-2000}
VG_WARMUP=${VG_WARMUP:-200}
SCENARIOS=${SCENARIOS:-"h1 h2c"}
TOOL=${TOOL:-callgrind}
TOP=${TOP:-0}
ATOMICS=${ATOMICS:-0}
OUT=${OUT:-$(mktemp -d /tmp/wasp-instr.XXXXXX)}
SHARED=${SHARED:-/work/shared/bench}
GEN_CPU=0 SRV_CPU=1
mkdir -p "$OUT/up"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_log() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

UP=$(free_port) PX=$(free_port) ADM=$(free_port)
sed -e "s#@DIR@#$OUT/up#g" -e "s#@UP@#$UP#g" "$SHARED/nginx-upstream.conf" >"$OUT/up/nginx.conf"
taskset -c $SRV_CPU nginx -e "$OUT/up/startup-error.log" -c "$OUT/up/nginx.conf" -p "$OUT/up/" &
PIDS+=($!)
wait_port "$UP" || { echo "upstream nginx did not start" >&2; exit 1; }

cat >"$OUT/wasp.yaml" <<EOF
admin: { address: 127.0.0.1:$ADM }
access_log: "off"
workers: 1
listeners:
  - name: ingress
    address: 127.0.0.1:$PX
    routes:
      - name: all
        cluster: up
clusters:
  - name: up
    endpoints: ["127.0.0.1:$UP"]
    protocol: http1
EOF

# run SCENARIO N: total instructions of wasp serving VG_WARMUP + N requests.
run() {
    local scn=$1 n=$2 h=() out="$OUT/$TOOL-$1-$2.out" pid o
    [[ $scn == h1 ]] && h=(--h1) || h=(-m 10)
    # The allocator tuned as wasp tunes it by starting itself again
    # (proxy/src/malloc.rs), which it skips under valgrind.
    GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.tcache_count=64} WASP_LOG_FORMAT=json taskset -c $SRV_CPU valgrind --tool="$TOOL" --trace-children=no \
        $([[ $TOOL == cachegrind ]] && echo --cache-sim=no) --"$TOOL"-out-file="$out" \
        $([[ $TOOL == callgrind && $ATOMICS == 1 ]] && echo --dump-instr=yes --compress-pos=no --compress-strings=no) \
        "$WASP_BIN" run --config "$OUT/wasp.yaml" 2>"$OUT/wasp-$scn-$n.err" &
    pid=$!
    PIDS+=($pid)
    wait_log "$OUT/wasp-$scn-$n.err" "wasp started" || { echo "wasp did not start" >&2; exit 1; }
    for k in "$VG_WARMUP" "$n"; do
        o=$(taskset -c $GEN_CPU h2load "${h[@]}" -n "$k" -c 10 "http://127.0.0.1:$PX/" 2>&1)
        grep -q "status codes: $k 2xx" <<<"$o" || { echo "h2load ($scn, $k) failed: $o" >&2; exit 1; }
    done
    kill -TERM "$pid"
    wait "$pid" || echo "wasp exited with $? ($scn, N=$n)" >&2
    if [[ $TOOL == callgrind ]]; then
        grep -m1 '^totals:' "$out" | awk '{print $2}'
    else
        grep -m1 '^summary:' "$out" | awk '{print $2}'
    fi
}

for scn in $SCENARIOS; do
    small=$(run "$scn" "$VG_N")
    large=$(run "$scn" "$((5 * VG_N))")
    echo "$scn: $(( (large - small) / (4 * VG_N) )) instructions/request (I(N)=$small, I(5N)=$large, N=$VG_N)"
    if [[ $TOOL == callgrind && $ATOMICS == 1 ]]; then
        python3 "$(dirname "$0")/atomics.py" "$OUT/callgrind-$scn-$VG_N.out" "$OUT/callgrind-$scn-$((5 * VG_N)).out" "$VG_N" "$TOP"
    fi
    if [[ $TOOL == callgrind && $TOP != 0 ]]; then
        callgrind_annotate --inclusive=yes "$OUT/callgrind-$scn-$((5 * VG_N)).out" >"$OUT/inclusive-$scn.txt" 2>/dev/null || true
        callgrind_annotate "$OUT/callgrind-$scn-$((5 * VG_N)).out" >"$OUT/self-$scn.txt" 2>/dev/null || true
        echo "top $TOP by inclusive cost ($OUT/inclusive-$scn.txt; self cost in self-$scn.txt):"
        grep -E '^ *[0-9,]+ \(' "$OUT/inclusive-$scn.txt" | sed -n "2,$((TOP + 1))p" | cut -c1-220
    fi
done
echo "outputs: $OUT"
