#!/usr/bin/env bash
# Idle cost of wasp with one filter loaded and no traffic: CPU ticks and
# context switches of its threads over 30 idle seconds (issue 13, "idle is idle").
# Usage: bench/idle.sh [path/to/wasp]   (default: target/release/wasp)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/wasp}
WASM=target/wasm/wasm32-wasip2/release/header_rewrite.wasm
[ -f "$WASM" ] || cargo build --release --target wasm32-wasip2 --manifest-path filters/Cargo.toml \
    --target-dir target/wasm -p header-rewrite >/dev/null
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
cp "$WASM" "$DIR/header_rewrite.wasm"
cat > "$DIR/wasp.yaml" <<YAML
admin: { address: "127.0.0.1:0" }
access_log: "off"
filter_cache: "off"
listeners:
  - name: in
    address: "127.0.0.1:0"
    routes: [{ name: r, cluster: c, filters: [hr] }]
clusters: [{ name: c, endpoints: ["127.0.0.1:9"] }]
filters:
  - { name: hr, module: header_rewrite.wasm, config: { response: { set: { x-a: b } } } }
YAML
"$BIN" run --config "$DIR/wasp.yaml" 2>/dev/null &
PID=$!
sleep 15   # start-up and the blocking pool's idle threads settle
TASKS=$(ls /proc/$PID/task)
ticks() { awk '{print $14+$15}' /proc/$PID/stat; }
switches() { for t in $TASKS; do awk '/ctxt_switches/ {s+=$2} END {print s}' /proc/$PID/task/$t/status; done | awk '{s+=$1} END {print s}'; }
t0=$(ticks); c0=$(switches)
sleep 30
t1=$(ticks); c1=$(switches)
echo "idle 30 s, one filter loaded: cpu_ticks=$((t1-t0)) (10 ms each) context_switches=$((c1-c0))"
