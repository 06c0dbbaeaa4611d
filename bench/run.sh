#!/usr/bin/env bash
# Side-by-side benchmark: direct (load generator -> upstream), wasp (-> wasp ->
# upstream), nginx (-> nginx reverse proxy -> upstream) and pingora (-> the
# minimal Pingora proxy of bench/pingora/ -> upstream), one run, one shared
# upstream (nginx returning "ok"). See bench/README.md.
#
#   bench/run.sh                                  # full run (~10 min)
#   DURATION=3 REPS=1 VG_N=500 bench/run.sh       # quick check
#   SKIP_VALGRIND=1 SKIP_H2=1 bench/run.sh        # HTTP/1.1 throughput/latency only
#
# Knobs (environment):
#   DURATION=10      seconds per throughput run
#   REPS=3           repetitions (targets interleaved, order rotated each time)
#   WARMUP=2         seconds of warm-up per target and scenario
#   LAT_DURATION     seconds per fixed-rate latency run (default: DURATION)
#   LAT_CONNS=4 LAT_RPS=500   latency load: LAT_CONNS connections x LAT_RPS req/s each
#   VG_N=2000        valgrind: N and 5N requests; VG_WARMUP=200 requests before them
#   SKIP_VALGRIND=1  skip instructions/request
#   SKIP_H2=1        skip the h2c scenario
#   SKIP_FILTERS=1   skip the filter section (no filter vs header-rewrite vs auth+rate-limit+header-rewrite
#                    vs auth rejecting, in one wasp process; RSS with 10 filters loaded)
#   SKIP_TLS=1       skip the TLS section (wasp vs nginx terminating TLS, same ECDSA P-256 certificate:
#                    HTTP/1.1 and HTTP/2 keep-alive, a full / a resumed handshake per request)
#   TLS_H2_CONNS=10 TLS_H2_STREAMS=10   TLS HTTP/2 load: h2load -c TLS_H2_CONNS -m TLS_H2_STREAMS
#   TLS_HS_BATCH=100 full handshakes: fresh h2load processes of TLS_HS_BATCH connections, 1 request each
#   TLS_RES_CONNS=50 resumed handshakes: wrk -t2 -c TLS_RES_CONNS -H 'Connection: close'
#   SKIP_PINGORA=1   no pingora target (otherwise it is built once from bench/pingora/; if that build
#                    fails, e.g. no network for crates, the run goes on without it and says so)
#   SKIP_BUILD=1     don't run cargo build (use WASP_BIN and FILTER_DIR as they are; the pingora
#                    proxy is still built if its binary is missing)
#   VG_FILTER_INSTANCES=6 VG_FILTER_CONNS=5   valgrind runs of the filter rows: wasp's filter_instances, h2load -c
#   FILTER_DIR       built filters (default: filters/target/wasm32-wasip2/release of this repository;
#                    when given, the filters are not built)
#   WASP_BIN         wasp binary (default: target/pgo-use/<host>/dist/wasp of this repository, as examples/deploy/build-dist.sh builds it; when given, wasp
#                    is not built)
#   PINGORA_BIN      pingora proxy binary (default: bench/pingora/target/release/pingora-bench-proxy,
#                    built by this script; when given, not built)
#   RESULTS_DIR      where latest.md / latest.jsonl go (default: bench/results)
#   QUIET_WAIT=30    before each measured run, wait up to this many seconds for the
#                    machine to be idle (other processes < 15% of a CPU); 0 disables
#   KEEP_TMP=1       keep the temporary directory (configs, logs, raw outputs)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SHARED=${SHARED:-$ROOT/../shared/bench}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
WARMUP=${WARMUP:-2}
LAT_DURATION=${LAT_DURATION:-$DURATION}
LAT_CONNS=${LAT_CONNS:-4}
LAT_RPS=${LAT_RPS:-500}
VG_N=${VG_N:-2000}
VG_WARMUP=${VG_WARMUP:-200}
SKIP_VALGRIND=${SKIP_VALGRIND:-0}
SKIP_H2=${SKIP_H2:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_FILTERS=${SKIP_FILTERS:-0}
SKIP_TLS=${SKIP_TLS:-0}
SKIP_PINGORA=${SKIP_PINGORA:-0}
TLS_H2_CONNS=${TLS_H2_CONNS:-10}
TLS_H2_STREAMS=${TLS_H2_STREAMS:-10}
TLS_HS_BATCH=${TLS_HS_BATCH:-100}
TLS_RES_CONNS=${TLS_RES_CONNS:-50}
# valgrind runs of the filter rows: the engine's pool must fit valgrind's address space (each instance
# reserves 2 memory slots of the config's largest limits.memory, 32 MiB here; before the pool was sized
# from the config, 1 GiB each and only 24 instances fit); the filter rows load with fewer connections
# than the core rows.
# wasp under valgrind: the allocator tuned as wasp tunes it by starting
# itself again (proxy/src/malloc.rs), which it skips under valgrind.
VG_WASP_ENV=(GLIBC_TUNABLES=glibc.malloc.tcache_count=64 WASP_LOG_FORMAT=json)
VG_FILTER_INSTANCES=${VG_FILTER_INSTANCES:-6}
VG_FILTER_CONNS=${VG_FILTER_CONNS:-5}
# A binary (or filter folder) given in the environment is used as it is: cargo builds only the defaults.
WASP_GIVEN=${WASP_BIN:+1} FILTERS_GIVEN=${FILTER_DIR:+1} PINGORA_GIVEN=${PINGORA_BIN:+1}
WASP_BIN=${WASP_BIN:-$ROOT/target/pgo-use/$(rustc -vV | sed -n 's/^host: //p')/dist/wasp}
FILTER_DIR=${FILTER_DIR:-$ROOT/filters/target/wasm32-wasip2/release}
PINGORA_DIR=$HERE/pingora
PINGORA_BIN=${PINGORA_BIN:-$PINGORA_DIR/target/release/pingora-bench-proxy}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
KEEP_TMP=${KEEP_TMP:-0}
QUIET_WAIT=${QUIET_WAIT:-30}
GEN_CPU=0   # load generator
SRV_CPU=1   # proxies and upstream

# measure.py samples /proc during the runs: keep it on the load generator's CPU.
MEASURE=(taskset -c $GEN_CPU python3 "$HERE/measure.py")
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac
# The core targets; main appends pingora unless SKIP_PINGORA=1 or it could not be built.
TARGETS=(direct wasp nginx)
# Filter section: routes of one wasp process (by path prefix), all to the shared upstream.
FTARGETS=(wasp-nf wasp-hr wasp-hrcall wasp-chain wasp-deny)
FILTER_MODULES=(header_rewrite rate_limit auth ext_authz)
# HS256 secret of the auth filter (>= 32 bytes); the tokens are made from it by measure.py.
JWT_SECRET=wasp-bench-hs256-secret-0123456789abcdef
PERF_OK=0
PIDS=()
NOTES=()
TMP=""

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
note() { NOTES+=("$*"); printf 'note: %s\n' "$*" >&2; }

# ------------------------------------------------------------------ processes

# A PID is running if /proc has it and it is not a zombie.
is_running() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st:0:1} != Z ]]
}

# spawn NAME CMD...: start CMD in the background, stdout/stderr to $TMP/NAME.{out,err}; PID in LAST_PID.
spawn() {
    local name=$1; shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# stop PID [TIMEOUT]: SIGTERM, wait up to TIMEOUT s (then SIGKILL); exit status in STOP_RC.
stop() {
    local pid=$1 timeout=${2:-20} i
    STOP_RC=0
    is_running "$pid" && kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 20; i++)); do
        is_running "$pid" || break
        sleep 0.05
    done
    if is_running "$pid"; then
        echo "bench: pid $pid did not exit ${timeout}s after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop "${PIDS[i]}" 10 || true
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then
            echo "bench: temporary files kept in $TMP" >&2
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}

# ------------------------------------------------------------------ setup

ensure_tools() {
    local need=() sudo=()
    command -v nginx >/dev/null || need+=(nginx-light)
    command -v wrk >/dev/null || need+=(wrk)
    command -v h2load >/dev/null || need+=(nghttp2-client)
    command -v valgrind >/dev/null || need+=(valgrind)
    command -v taskset >/dev/null || need+=(util-linux)
    command -v python3 >/dev/null || need+=(python3)
    [[ $SKIP_TLS == 1 ]] || command -v openssl >/dev/null || need+=(openssl)
    if [[ $SKIP_FILTERS != 1 ]] && ! command -v perf >/dev/null; then
        # Optional: instructions/request of the filter rows. Its absence is reported, not fatal.
        [[ $(id -u) == 0 ]] || sudo=(sudo)
        log "installing linux-perf"
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y linux-perf \
            || { "${sudo[@]}" apt-get update && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y linux-perf; } \
            || echo "bench: could not install linux-perf; the filter rows get no instruction counts" >&2
    fi
    ((${#need[@]})) || return 0
    log "installing ${need[*]}"
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y "${need[@]}" && return 0
    "${sudo[@]}" apt-get update || true
    "${sudo[@]}" apt-get install -y "${need[@]}" && return 0
    # Newer Debian/Ubuntu releases have no nginx-light: the plain package has what we need.
    [[ " ${need[*]} " == *" nginx-light "* ]] && "${sudo[@]}" apt-get install -y "${need[@]/nginx-light/nginx}" && return 0
    die "could not install ${need[*]}"
}

# nginx_conf SRC DEST DIR UP PX EXTRA_SED...: substitute the placeholders of a shared config.
nginx_conf() {
    local src=$1 dest=$2 dir=$3 up=$4 px=$5; shift 5
    mkdir -p "$dir"
    sed "$@" -e "s#@DIR@#$dir#g" -e "s#@UP@#$up#g" -e "s#@PX@#$px#g" "$src" >"$dest"
    ! grep -q '@[A-Z0-9]*@' "$dest" || die "unsubstituted placeholder in $dest"
}

# wasp_head PORT ADMINPORT: the start of every benchmark wasp config, up to its one listener's `routes:`
# (a fresh, empty compiled-filter cache per process, as a first start with the default `auto`: start-up
# includes compiling, in a child process; bench/startup.py measures a warm cache).
wasp_head() {
    cat <<EOF
admin: { address: 127.0.0.1:$2 }
access_log: "off"
workers: 1
filter_cache: "$TMP/fcache-$1-$RANDOM"
listeners:
  - name: ingress
    address: 127.0.0.1:$1
    routes:
EOF
}

# wasp_up: the clusters of every benchmark wasp config: `up`, the shared upstream.
wasp_up() {
    cat <<EOF
clusters:
  - name: up
    endpoints: ["127.0.0.1:$UP"]
    protocol: http1
EOF
}

wasp_conf() { # wasp_conf FILE PORT ADMINPORT
    {
        wasp_head "$2" "$3"
        echo "      - { name: all, cluster: up }"
        wasp_up
    } >"$1"
}

# check_h2c PORT: 20 h2c (prior knowledge) requests must all get 2xx.
check_h2c() {
    local out
    out=$(h2load -n 20 -c 1 "http://127.0.0.1:$1/" 2>&1) || die "h2load to :$1 failed: $out"
    grep -q 'status codes: 20 2xx' <<<"$out" || die "h2c check on :$1 failed:"$'\n'"$out"
}

# ------------------------------------------------------------------ load

url() { echo "http://127.0.0.1:$1/"; }

# tput_cmd SCENARIO PORT SECONDS: saturating load (keep-alive) into the array CMD.
tput_cmd() {
    if [[ $1 == h1 ]]; then
        CMD=(taskset -c $GEN_CPU wrk -t2 -c50 -d"$3"s "$(url "$2")")
    else
        CMD=(taskset -c $GEN_CPU h2load -c 50 -m 10 -D "$3" "$(url "$2")")
    fi
}

# lat_cmd SCENARIO PORT LOGFILE: fixed-rate load, per-request log, into the array CMD.
lat_cmd() {
    CMD=(taskset -c $GEN_CPU h2load)
    [[ $1 == h1 ]] && CMD+=(--h1)
    CMD+=(-c "$LAT_CONNS" --rps "$LAT_RPS" -D "$LAT_DURATION" --log-file "$3" "$(url "$2")")
}

# wasp and pingora serve HTTP/1.1 and h2c on one listener; nginx (proxy and upstream) on two.
port_of() { # port_of SCENARIO TARGET
    if [[ $1 == h1 ]]; then
        case $2 in direct) echo "$UP" ;; wasp) echo "$WPX" ;; nginx) echo "$PX" ;; pingora) echo "$GPX" ;; esac
    else
        case $2 in direct) echo "$UP2" ;; wasp) echo "$WPX" ;; nginx) echo "$PX2" ;; pingora) echo "$GPX" ;; esac
    fi
}

pid_of() {
    case $1 in direct) echo "$UP_PID" ;; wasp) echo "$WASP_PID" ;; nginx) echo "$NGX_PID" ;; pingora) echo "$PGR_PID" ;; esac
}

measure_run() { # measure_run SCENARIO TARGET KIND REP
    local scn=$1 tgt=$2 kind=$3 rep=$4 port extra=()
    port=$(port_of "$scn" "$tgt")
    if [[ $kind == tput ]]; then
        tput_cmd "$scn" "$port" "$DURATION"
    else
        local lf="$TMP/raw/lat-$scn-$tgt-$rep.log"
        lat_cmd "$scn" "$port" "$lf"
        extra=(--latency-log "$lf")
    fi
    "${MEASURE[@]}" run --scenario "$scn" --target "$tgt" --kind "$kind" --rep "$rep" \
        --subject "$(pid_of "$tgt")" --upstream "$UP_PID" --raw-dir "$TMP/raw" --out "$RESULTS" --quiet-wait "$QUIET_WAIT" \
        "${extra[@]+"${extra[@]}"}" -- "${CMD[@]}"
}

warm_up() { # warm_up SCENARIO TARGET
    tput_cmd "$1" "$(port_of "$1" "$2")" "$WARMUP"
    "${CMD[@]}" >"$TMP/raw/warmup-$1-$2.txt" 2>&1 || die "warm-up of $2 ($1) failed: $(cat "$TMP/raw/warmup-$1-$2.txt")"
}

# ------------------------------------------------------------------ pingora

# build_pingora: build the Pingora proxy of bench/pingora/ (its own workspace and target folder) unless
# SKIP_BUILD=1 finds a binary already; on failure, note it and set SKIP_PINGORA=1. No-op when
# PINGORA_BIN was given.
build_pingora() {
    [[ -z $PINGORA_GIVEN ]] || return 0
    [[ $SKIP_BUILD == 1 && -x $PINGORA_BIN ]] && return 0
    if ! command -v cmake >/dev/null; then
        # pingora-core always builds zlib-ng (flate2's zlib-ng feature) with cmake.
        local sudo=()
        [[ $(id -u) == 0 ]] || sudo=(sudo)
        log "installing cmake (for the pingora proxy's zlib-ng)"
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y cmake \
            || { "${sudo[@]}" apt-get update && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y cmake; } \
            || echo "bench: could not install cmake; the pingora build will fail" >&2
    fi
    log "building the pingora proxy (cargo build --release --manifest-path bench/pingora/Cargo.toml)"
    if ! cargo build --release --manifest-path "$PINGORA_DIR/Cargo.toml" --target-dir "$PINGORA_DIR/target"; then
        note "the pingora proxy did not build (cargo build --release --manifest-path bench/pingora/Cargo.toml failed; no network for crates?): no pingora rows"
        SKIP_PINGORA=1
    fi
}

# pingora_log_notes NAME: note the lines of $TMP/NAME.err other than the start-up line and valgrind's
# (the proxy logs warnings and errors only). One kind is expected and counted apart: when h2load stops,
# it resets the h2c streams still in flight; Pingora's default fail_to_proxy answers each with a 400 on
# the reset stream and logs that it could not.
pingora_log_notes() {
    local n e skip='^(pingora listening on |==[0-9]+==|--[0-9]+--)'
    local reset='failed to send error response to downstream: .*while writing h2 response'
    e=$(grep -cE "$reset" "$TMP/$1.err" || true)
    n=$(grep -vE "$skip" "$TMP/$1.err" | grep -cvE "$reset" || true)
    ((e == 0)) || note "$1: $e h2c streams reset by h2load when it stopped (logged by Pingora as 'failed to send error response to downstream'; expected)"
    ((n == 0)) || note "$1 logged $n lines, first: $(grep -vE "$skip" "$TMP/$1.err" | grep -m1 -vE "$reset")"
}

# ------------------------------------------------------------------ valgrind

# vg_run TARGET SCENARIO N OUTFILE: start TARGET under cachegrind, warm up, send N requests, SIGTERM.
vg_run() {
    local tgt=$1 scn=$2 n=$3 out=$4 port h=() rc
    [[ $scn == h1 ]] && h=(--h1) || h=(-m 10)
    local vg=(taskset -c $SRV_CPU valgrind --tool=cachegrind --cache-sim=no --trace-children=no
        --cachegrind-out-file="$out")
    if [[ $tgt == wasp ]]; then
        port=$VWPX
        spawn "vg-wasp-$scn-$n" env "${VG_WASP_ENV[@]}" "${vg[@]}" "$WASP_BIN" run --config "$TMP/wasp-vg.yaml"
        "${MEASURE[@]}" wait-log "$TMP/vg-wasp-$scn-$n.err" "wasp started" 60 --pid "$LAST_PID" \
            || die "wasp under valgrind did not start: $(tail -20 "$TMP/vg-wasp-$scn-$n.err")"
    elif [[ $tgt == pingora ]]; then
        port=$VGPX
        spawn "vg-pingora-$scn-$n" "${vg[@]}" "$PINGORA_BIN" "127.0.0.1:$VGPX" "127.0.0.1:$UP"
        "${MEASURE[@]}" wait-port "$port" 60 || die "pingora under valgrind did not start: $(tail -20 "$TMP/vg-pingora-$scn-$n.err")"
    else
        port=$([[ $scn == h1 ]] && echo "$VPX" || echo "$VPX2")
        spawn "vg-nginx-$scn-$n" "${vg[@]}" nginx -e "$TMP/vgpx/startup-error.log" -c "$TMP/vgpx/nginx.conf" -p "$TMP/vgpx/"
        "${MEASURE[@]}" wait-port "$port" 60 || die "nginx under valgrind did not start: $(tail -20 "$TMP/vg-nginx-$scn-$n.err")"
    fi
    local pid=$LAST_PID o
    o=$(taskset -c $GEN_CPU h2load "${h[@]}" -n "$VG_WARMUP" -c 10 "$(url "$port")" 2>&1)
    grep -q "status codes: $VG_WARMUP 2xx" <<<"$o" || die "valgrind warm-up against $tgt ($scn) failed:"$'\n'"$o"
    o=$(taskset -c $GEN_CPU h2load "${h[@]}" -n "$n" -c 10 "$(url "$port")" 2>&1)
    echo "$o" >"$TMP/raw/vg-$tgt-$scn-$n.txt"
    grep -q "status codes: $n 2xx" <<<"$o" || die "valgrind run against $tgt ($scn, $n requests) failed:"$'\n'"$o"
    stop "$pid" 120
    rc=$STOP_RC
    [[ $rc == 0 ]] || note "$tgt under valgrind ($scn, N=$n) exited with status $rc after SIGTERM"
    [[ $tgt != pingora ]] || pingora_log_notes "vg-pingora-$scn-$n"
    [[ -s $out ]] || die "no cachegrind output $out"
}

# ------------------------------------------------------------------ filters

# The typical header-rewrite config of the filter rows: one request header set
# from a template, one response header added.
HR_TYPICAL='{ request: { set: { x-trace: "{request_id}" } }, response: { add: { x-served-by: wasp } } }'
# The same rules with a path prefix that changes nothing: wasp still makes the header rules (standing
# edits), and the prefix costs one call into the filter per request (row wasp-hrcall).
HR_CALL='{ request: { set: { x-trace: "{request_id}" } }, response: { add: { x-served-by: wasp } }, path_prefix: { from: /hrcall/, to: /hrcall/ } }'

# filters_conf FILE PORT ADMINPORT [FILTER_INSTANCES]: the four routes of the filter section.
filters_conf() {
    {
        wasp_head "$2" "$3"
        filters_routes
        wasp_up
        echo "filter_instances: ${4:-512}"
    } >"$1"
}

# filters_routes: the routes and filters of filters_conf.
filters_routes() {
    cat <<EOF
      - { name: nf, match: { prefix: /nf/ }, cluster: up }
      - { name: hr, match: { prefix: /hr/ }, cluster: up, filters: [hr] }
      - { name: hrcall, match: { prefix: /hrcall/ }, cluster: up, filters: [hrcall] }
      - { name: chain, match: { prefix: /chain/ }, cluster: up, filters: [auth, rl, hr] }
      - { name: deny, match: { prefix: /deny/ }, cluster: up, filters: [auth] }
filters:
  - name: hr
    module: $TMP/filters/header_rewrite.wasm
    config: $HR_TYPICAL
  - name: hrcall
    module: $TMP/filters/header_rewrite.wasm
    config: $HR_CALL
  - name: auth
    module: $TMP/filters/auth.wasm
    config: { jwt: { keys: [ { alg: HS256, secret: "$JWT_SECRET" } ] } }
  - name: rl
    module: $TMP/filters/rate_limit.wasm
    config: { rate: 1000000000, burst: 1000000000, key: peer }
    allow: [log, metrics, clock, kv]
EOF
}

# The filter sets of the memory processes (one route /mN/ per filter).
MEM_KINDS=(nf f1 f10 f10same)
MEM_DESC_nf="none (the core wasp config, one route)"
MEM_DESC_f1="1: header-rewrite (the typical config)"
MEM_DESC_f10="10 entries of 4 modules: header-rewrite ×4 (typical; remove+rename; path_prefix; 4 templates), rate-limit ×2 (peer; header key), auth ×2 (HS256 JWT; API keys), ext-authz ×2 (plain; with a kv cache)"
MEM_DESC_f10same="10 entries of header-rewrite, each with its own config (the typical one, then set x-hr-N)"

# mem_filter KIND I: the YAML of filter entry I of memory process KIND (entry I is route /mI/'s filter).
mem_filter() {
    local m=$TMP/filters
    if [[ $1 == f10same ]]; then
        if (($2 == 0)); then
            echo "  - { name: f0, module: $m/header_rewrite.wasm, config: $HR_TYPICAL }"
        else
            echo "  - { name: f$2, module: $m/header_rewrite.wasm, config: { request: { set: { x-hr-$2: \"{request_id}\" } } } }"
        fi
        return
    fi
    case $2 in
        0) echo "  - { name: f0, module: $m/header_rewrite.wasm, config: $HR_TYPICAL }" ;;
        1) echo "  - { name: f1, module: $m/header_rewrite.wasm, config: { request: { remove: [x-debug], rename: { x-user: x-auth-user } }, response: { remove: [x-powered-by] } } }" ;;
        2) echo "  - { name: f2, module: $m/header_rewrite.wasm, config: { path_prefix: { from: /m2/, to: /api/ } } }" ;;
        3) echo "  - { name: f3, module: $m/header_rewrite.wasm, config: { request: { add: { x-peer: \"{peer}\", x-route: \"{route}\", x-req: \"{method} {path} {host}\" } } } }" ;;
        4) echo "  - { name: f4, module: $m/rate_limit.wasm, config: { rate: 100, burst: 200, key: peer }, allow: [log, metrics, clock, kv] }" ;;
        5) echo "  - { name: f5, module: $m/rate_limit.wasm, config: { rate: 10, burst: 20, key: \"header:x-api-key\" }, allow: [log, metrics, clock, kv] }" ;;
        6) echo "  - { name: f6, module: $m/auth.wasm, config: { jwt: { keys: [ { alg: HS256, secret: \"$JWT_SECRET\" } ] } } }" ;;
        7) echo "  - { name: f7, module: $m/auth.wasm, config: { api_keys: { keys: [ { key: k-bench-0123456789, subject: bench } ] } } }" ;;
        8) echo "  - { name: f8, module: $m/ext_authz.wasm, config: { cluster: up, path_prefix: /authz }, http_clusters: [up] }" ;;
        9) echo "  - { name: f9, module: $m/ext_authz.wasm, config: { cluster: up, cache_ttl_ms: 1000 }, allow: [log, metrics, clock, kv], http_clusters: [up] }" ;;
    esac
}

# mem_conf FILE PORT ADMINPORT KIND: a wasp config with KIND's filters loaded, each on its own route.
mem_conf() {
    local n i
    case $4 in nf) n=0 ;; f1) n=1 ;; *) n=10 ;; esac
    {
        wasp_head "$2" "$3"
        if ((n == 0)); then
            echo "      - { name: m0, match: { prefix: /m0/ }, cluster: up }"
        fi
        for ((i = 0; i < n; i++)); do
            echo "      - { name: m$i, match: { prefix: /m$i/ }, cluster: up, filters: [f$i] }"
        done
        wasp_up
        if ((n > 0)); then
            echo "filters:"
            for ((i = 0; i < n; i++)); do mem_filter "$4" "$i"; done
        fi
    } >"$1"
}

# Path and request headers of a filter row. Every row sends an Authorization header of the same
# length (wasp-deny: a badly signed token), so the requests differ only in their path.
fpath() { echo "/${1#wasp-}/"; }
fauth() { [[ $1 == wasp-deny ]] && echo "Authorization: Bearer $BAD_TOKEN" || echo "Authorization: Bearer $TOKEN"; }

filter_run() { # filter_run TARGET REP
    local tgt=$1 rep=$2 extra=()
    [[ $PERF_OK == 1 ]] && extra+=(--perf-pid "$FWASP_PID")
    [[ $tgt == wasp-deny ]] && extra+=(--expect-non2xx)
    CMD=(taskset -c $GEN_CPU wrk -t2 -c50 -d"$DURATION"s -H "$(fauth "$tgt")" "http://127.0.0.1:$FWPX$(fpath "$tgt")")
    "${MEASURE[@]}" run --scenario h1 --target "$tgt" --kind tput --rep "$rep" \
        --subject "$FWASP_PID" --upstream "$UP_PID" --raw-dir "$TMP/raw" --out "$RESULTS" --quiet-wait "$QUIET_WAIT" \
        "${extra[@]+"${extra[@]}"}" -- "${CMD[@]}"
}

# wasp_log_notes NAME: note WARN/ERROR lines of $TMP/NAME.err.
wasp_log_notes() {
    local n
    n=$(grep -cE '"level":"(WARN|ERROR)"' "$TMP/$1.err" || true)
    ((n == 0)) || note "$1 logged $n WARN/ERROR lines, first: $(grep -m1 -E '"level":"(WARN|ERROR)"' "$TMP/$1.err")"
}

filters_section() {
    local t rep i u
    log "filters: one wasp process, routes /nf/ /hr/ /hrcall/ /chain/ /deny/ (port $FWPX)"
    spawn wasp-filters env WASP_LOG_FORMAT=json taskset -c $SRV_CPU "$WASP_BIN" run --config "$TMP/wasp-filters.yaml"
    FWASP_PID=$LAST_PID
    "${MEASURE[@]}" wait-log "$TMP/wasp-filters.err" "wasp started" 60 --pid "$FWASP_PID" \
        --record-out "$RESULTS" --record-target wasp-filters || die "wasp with filters did not start: $(cat "$TMP/wasp-filters.err")"
    "${MEASURE[@]}" affinity --expect $SRV_CPU "$FWASP_PID" || note "some threads of wasp (filters) are not pinned to CPU $SRV_CPU"
    sleep 1
    "${MEASURE[@]}" mem --target wasp-filters --when idle --pids "$FWASP_PID" --out "$RESULTS"

    # The routes do what they should: no filter; header-rewrite adds its response header; the chain
    # needs the token and gets RateLimit-* and header-rewrite's headers; a bad token gets 401.
    u=http://127.0.0.1:$FWPX
    "${MEASURE[@]}" check "$u/nf/" --header "$(fauth wasp-nf)" || die "check of /nf/ failed"
    "${MEASURE[@]}" check "$u/hr/" --header "$(fauth wasp-hr)" --expect-header x-served-by || die "check of /hr/ failed"
    "${MEASURE[@]}" check "$u/hrcall/" --header "$(fauth wasp-hrcall)" --expect-header x-served-by \
        || die "check of /hrcall/ failed"
    "${MEASURE[@]}" check "$u/chain/" --header "$(fauth wasp-chain)" --expect-header x-served-by \
        --expect-header ratelimit-limit || die "check of /chain/ with a token failed"
    "${MEASURE[@]}" check "$u/chain/" --status 401 || die "check of /chain/ without a token failed (expected 401)"
    "${MEASURE[@]}" check "$u/deny/" --header "$(fauth wasp-deny)" --status 401 --expect-header www-authenticate \
        || die "check of /deny/ failed (expected 401)"

    log "filters: warm-up (${WARMUP}s each)"
    for t in "${FTARGETS[@]}"; do
        taskset -c $GEN_CPU wrk -t2 -c50 -d"$WARMUP"s -H "$(fauth "$t")" "$u$(fpath "$t")" >"$TMP/raw/warmup-h1-$t.txt" 2>&1 \
            || die "warm-up of $t failed: $(cat "$TMP/raw/warmup-h1-$t.txt")"
    done
    log "filters: throughput, $REPS x ${DURATION}s per route, interleaved"
    for ((rep = 0; rep < REPS; rep++)); do
        for ((i = 0; i < ${#FTARGETS[@]}; i++)); do
            filter_run "${FTARGETS[(i + rep) % ${#FTARGETS[@]}]}" "$rep"
        done
    done
    "${MEASURE[@]}" mem --target wasp-filters --when end --pids "$FWASP_PID" --out "$RESULTS"
    stop "$FWASP_PID" 30
    [[ $STOP_RC == 0 ]] || note "wasp (filters) exited with status $STOP_RC after SIGTERM (expected 0)"
    wasp_log_notes wasp-filters
}

# mem_section: RSS of wasp with 0, 1 and 10 filters loaded, one process at a time.
mem_section() {
    local kind port adm pid i=0
    log "filters: RSS with 0, 1 and 10 filters loaded (separate processes, one after another)"
    for kind in "${MEM_KINDS[@]}"; do
        port=${MEM_PORTS[i]} adm=${MEM_PORTS[i + 1]}
        i=$((i + 2))
        mem_conf "$TMP/wasp-mem-$kind.yaml" "$port" "$adm" "$kind"
        spawn "wasp-mem-$kind" env WASP_LOG_FORMAT=json taskset -c $SRV_CPU "$WASP_BIN" run --config "$TMP/wasp-mem-$kind.yaml"
        pid=$LAST_PID
        "${MEASURE[@]}" wait-log "$TMP/wasp-mem-$kind.err" "wasp started" 60 --pid "$pid" \
            --record-out "$RESULTS" --record-target "wasp-mem-$kind" || die "wasp ($kind) did not start: $(cat "$TMP/wasp-mem-$kind.err")"
        sleep 1
        "${MEASURE[@]}" mem --target "wasp-mem-$kind" --when idle --pids "$pid" --out "$RESULTS"
        "${MEASURE[@]}" check "http://127.0.0.1:$port/m0/" || die "check of wasp ($kind) failed"
        taskset -c $GEN_CPU wrk -t2 -c50 -d"$WARMUP"s "http://127.0.0.1:$port/m0/" >"$TMP/raw/warmup-mem-$kind.txt" 2>&1 \
            || die "warm-up of wasp ($kind) failed: $(cat "$TMP/raw/warmup-mem-$kind.txt")"
        "${MEASURE[@]}" mem --target "wasp-mem-$kind" --when warm --pids "$pid" --out "$RESULTS"
        stop "$pid" 30
        [[ $STOP_RC == 0 ]] || note "wasp ($kind) exited with status $STOP_RC after SIGTERM (expected 0)"
        wasp_log_notes "wasp-mem-$kind"
    done
}

# vg_filter_run TARGET N OUTFILE: like vg_run, for a filter row: the filter process's config with a small
# filter_instances (valgrind cannot map more than about 48 GiB: 6 instances' 4 GiB memory slots fit;
# with more, wasp falls back to bounds-checked slots and would measure slower guest code than it runs),
# warm up, N requests to the row's route (with its Authorization header), SIGTERM.
vg_filter_run() {
    local tgt=$1 n=$2 out=$3 pid o rc want=2xx u
    [[ $tgt == wasp-deny ]] && want=4xx
    u="http://127.0.0.1:$VFWPX$(fpath "$tgt")"
    spawn "vg-$tgt-$n" env "${VG_WASP_ENV[@]}" taskset -c $SRV_CPU valgrind --tool=cachegrind --cache-sim=no \
        --trace-children=no --cachegrind-out-file="$out" "$WASP_BIN" run --config "$TMP/wasp-vgf.yaml"
    pid=$LAST_PID
    "${MEASURE[@]}" wait-log "$TMP/vg-$tgt-$n.err" "wasp started" 300 --pid "$pid" \
        || die "wasp (filters) under valgrind did not start: $(tail -20 "$TMP/vg-$tgt-$n.err")"
    ! grep -q "cannot reserve 4 GiB" "$TMP/vg-$tgt-$n.err" \
        || die "wasp under valgrind fell back to bounds-checked filter memory; lower VG_FILTER_INSTANCES"
    o=$(taskset -c $GEN_CPU h2load --h1 -H "$(fauth "$tgt")" -n "$VG_WARMUP" -c "$VG_FILTER_CONNS" "$u" 2>&1)
    grep -qE "status codes: .*\b$VG_WARMUP $want" <<<"$o" || die "valgrind warm-up against $tgt failed:"$'\n'"$o"
    o=$(taskset -c $GEN_CPU h2load --h1 -H "$(fauth "$tgt")" -n "$n" -c "$VG_FILTER_CONNS" "$u" 2>&1)
    echo "$o" >"$TMP/raw/vg-$tgt-h1-$n.txt"
    grep -qE "status codes: .*\b$n $want" <<<"$o" || die "valgrind run against $tgt ($n requests) failed:"$'\n'"$o"
    stop "$pid" 120
    rc=$STOP_RC
    [[ $rc == 0 ]] || note "$tgt under valgrind (N=$n) exited with status $rc after SIGTERM"
    wasp_log_notes "vg-$tgt-$n"
    [[ -s $out ]] || die "no cachegrind output $out"
}

# ------------------------------------------------------------------ TLS

# TLS section: wasp and nginx terminating TLS with the same certificate, both proxying (plain HTTP/1.1)
# to the shared upstream. Scenarios: keep-alive HTTP/1.1 and HTTP/2, a full and a resumed handshake
# per request.
TLS_SCNS=(tls-h1 tls-h2 tls-hs tls-res)
TLS_TGTS=(wasp nginx)

# tls_certs DIR: an ECDSA P-256 CA and a leaf for localhost / 127.0.0.1 signed by it (key in PKCS#8).
tls_certs() {
    local d=$1
    mkdir -p "$d"
    (
        cd "$d"
        openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
        openssl req -x509 -new -key ca-key.pem -sha256 -days 30 -subj "/CN=wasp-bench CA" -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server-key.pem
        openssl req -new -key server-key.pem -subj "/CN=localhost" -out server.csr
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >leaf.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -sha256 \
            -extfile leaf.ext -out server.pem
        openssl verify -CAfile ca.pem server.pem
    ) >"$d/openssl.log" 2>&1 || die "could not make the TLS certificates: $(cat "$d/openssl.log")"
}

# wasp_tls_conf FILE PORT ADMINPORT: the core wasp config with TLS on its listener.
wasp_tls_conf() {
    {
        cat <<EOF
admin: { address: 127.0.0.1:$3 }
access_log: "off"
workers: 1
filter_cache: "$TMP/fcache-$2-$RANDOM"
listeners:
  - name: tls
    address: 127.0.0.1:$2
    tls: { cert: $TMP/tls/server.pem, key: $TMP/tls/server-key.pem }
    routes:
      - { name: all, cluster: up }
EOF
        wasp_up
    } >"$1"
}

tls_url() { echo "https://127.0.0.1:$1/"; }
tls_port() { case $1 in wasp) echo "$TWPX" ;; nginx) echo "$TPX" ;; esac; }
tls_pid() { case $1 in wasp) echo "$TWASP_PID" ;; nginx) echo "$TNGX_PID" ;; esac; }

# tls_cmd SCENARIO PORT SECONDS: the load of a TLS scenario into the array CMD.
tls_cmd() {
    local u
    u=$(tls_url "$2")
    case $1 in
        tls-h1) CMD=(taskset -c $GEN_CPU wrk -t2 -c50 -d"$3"s "$u") ;;
        tls-h2) CMD=(taskset -c $GEN_CPU h2load -c "$TLS_H2_CONNS" -m "$TLS_H2_STREAMS" -D "$3" "$u") ;;
        # A fresh h2load process per batch: new SSL objects, so no connection can resume a session.
        tls-hs) CMD=(taskset -c $GEN_CPU python3 "$HERE/measure.py" repeat --seconds "$3" --
            h2load --h1 -c "$TLS_HS_BATCH" -n "$TLS_HS_BATCH" "$u") ;;
        # wrk reconnects when the server closes (Connection: close) with SSL_clear, which keeps the
        # session: every connection but each one's first resumes (a TLS 1.3 ticket).
        tls-res) CMD=(taskset -c $GEN_CPU wrk -t2 -c"$TLS_RES_CONNS" -d"$3"s -H "Connection: close" "$u") ;;
    esac
}

tls_run() { # tls_run SCENARIO TARGET REP
    local scn=$1 tgt=$2 rep=$3 extra=()
    tls_cmd "$scn" "$(tls_port "$tgt")" "$DURATION"
    [[ $tgt == wasp ]] && extra=(--metrics "http://127.0.0.1:$TWADM/metrics")
    "${MEASURE[@]}" run --scenario "$scn" --target "$tgt" --kind tput --rep "$rep" \
        --subject "$(tls_pid "$tgt")" --upstream "$UP_PID" --raw-dir "$TMP/raw" --out "$RESULTS" --quiet-wait "$QUIET_WAIT" \
        "${extra[@]+"${extra[@]}"}" -- "${CMD[@]}"
}

# tls_check PORT: HTTP/1.1 and h2 over TLS, 20 requests each, all 2xx; h2 negotiated by ALPN.
tls_check() {
    local out
    out=$(h2load --h1 -n 20 -c 2 "$(tls_url "$1")" 2>&1) || die "h2load --h1 over TLS to :$1 failed: $out"
    grep -q 'status codes: 20 2xx' <<<"$out" || die "HTTP/1.1-over-TLS check on :$1 failed:"$'\n'"$out"
    out=$(h2load -n 20 -c 2 "$(tls_url "$1")" 2>&1) || die "h2load over TLS to :$1 failed: $out"
    grep -q 'status codes: 20 2xx' <<<"$out" && grep -q 'Application protocol: h2' <<<"$out" \
        || die "h2-over-TLS check on :$1 failed:"$'\n'"$out"
}

# tls_probe PORT: what openssl s_client negotiates (verifying against the CA): TLS 1.3 and 1.2 with
# their key-exchange group, and whether a saved session resumes. One line, for the report.
tls_probe() {
    local o r=() f=$TMP/tls/sess-$1.pem
    local s_client=(openssl s_client -connect "127.0.0.1:$1" -servername localhost -CAfile "$TMP/tls/ca.pem")
    o=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 "${s_client[@]}" -alpn h2,http/1.1 -ign_eof -sess_out "$f" 2>&1) || true
    r+=("TLS 1.3: $(grep -m1 -oE '(New|Reused), TLSv[0-9.]+, Cipher is [A-Z0-9_-]+' <<<"$o" | sed 's/, Cipher is / /'),"
        "$(grep -m1 -oE 'Server Temp Key: [^,]+' <<<"$o" | sed 's/Server Temp Key: /group /'),"
        "$(grep -m1 -oE 'Peer signature type: \S+' <<<"$o" | sed 's/Peer signature type: /signature /'),"
        "ALPN $(grep -m1 -oE 'ALPN protocol: \S+' <<<"$o" | sed 's/ALPN protocol: //'),"
        "verify $(grep -m1 -oE 'Verify return code: [0-9]+ \([^)]*\)' <<<"$o" | sed 's/Verify return code: //')")
    o=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 "${s_client[@]}" -ign_eof -sess_in "$f" 2>&1) || true
    r+=("; with that session again: $(grep -m1 -oE '(New|Reused), TLSv[0-9.]+' <<<"$o" | sed 's/,//')")
    o=$(timeout 10 "${s_client[@]}" -tls1_2 </dev/null 2>&1) || true
    r+=("; TLS 1.2: $(grep -m1 -oE 'Cipher is [A-Z0-9_-]+' <<<"$o" | sed 's/Cipher is //'),"
        "$(grep -m1 -oE 'Server Temp Key: [^,]+' <<<"$o" | sed 's/Server Temp Key: /group /')")
    echo "${r[*]}"
}

tls_section() {
    local t scn rep i errs
    log "TLS: wasp (port $TWPX) and nginx (port $TPX) terminating TLS, same ECDSA P-256 certificate"
    spawn wasp-tls env WASP_LOG_FORMAT=json taskset -c $SRV_CPU "$WASP_BIN" run --config "$TMP/wasp-tls.yaml"
    TWASP_PID=$LAST_PID
    "${MEASURE[@]}" wait-log "$TMP/wasp-tls.err" "wasp started" 30 --pid "$TWASP_PID" || die "wasp (TLS) did not start: $(cat "$TMP/wasp-tls.err")"
    spawn nginx-tls taskset -c $SRV_CPU nginx -e "$TMP/tpx/startup-error.log" -c "$TMP/tpx/nginx.conf" -p "$TMP/tpx/"
    TNGX_PID=$LAST_PID
    "${MEASURE[@]}" wait-port "$TPX" || die "nginx (TLS) did not start: $(cat "$TMP/nginx-tls.err")"
    "${MEASURE[@]}" affinity --expect $SRV_CPU "$TWASP_PID" "$TNGX_PID" || note "some TLS server threads are not pinned to CPU $SRV_CPU"
    sleep 1
    "${MEASURE[@]}" mem --target wasp-tls --when idle --pids "$TWASP_PID" --out "$RESULTS"
    "${MEASURE[@]}" mem --target nginx-tls --when idle --pids "$TNGX_PID" --out "$RESULTS"
    for t in "${TLS_TGTS[@]}"; do
        tls_check "$(tls_port "$t")"
        "${MEASURE[@]}" meta --out "$RESULTS" "tls_probe_$t=$(tls_probe "$(tls_port "$t")")"
    done
    for scn in "${TLS_SCNS[@]}"; do
        tls_cmd "$scn" PORT "$DURATION"
        "${MEASURE[@]}" meta --out "$RESULTS" "tls_cmd_$scn=${CMD[*]:3}"
    done
    for scn in "${TLS_SCNS[@]}"; do
        log "$scn: warm-up (${WARMUP}s each)"
        for t in "${TLS_TGTS[@]}"; do
            tls_cmd "$scn" "$(tls_port "$t")" "$WARMUP"
            "${CMD[@]}" >"$TMP/raw/warmup-$scn-$t.txt" 2>&1 || die "warm-up of $t ($scn) failed: $(cat "$TMP/raw/warmup-$scn-$t.txt")"
        done
        log "$scn: $REPS x ${DURATION}s per target, interleaved"
        for ((rep = 0; rep < REPS; rep++)); do
            for ((i = 0; i < 2; i++)); do
                tls_run "$scn" "${TLS_TGTS[(i + rep) % 2]}" "$rep"
            done
        done
    done
    "${MEASURE[@]}" mem --target wasp-tls --when end --pids "$TWASP_PID" --out "$RESULTS"
    "${MEASURE[@]}" mem --target nginx-tls --when end --pids "$TNGX_PID" --out "$RESULTS"
    # wasp's handshake counters over the whole section (checks and warm-ups included).
    errs=$(python3 -c 'import sys, urllib.request
t = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
print("; ".join(l for l in t.splitlines() if l.startswith("wasp_tls_handshake")))' "http://127.0.0.1:$TWADM/metrics" 2>&1) || true
    "${MEASURE[@]}" meta --out "$RESULTS" "tls_wasp_counters=$errs"
    if grep -q 'wasp_tls_handshake_errors_total' <<<"$errs"; then
        note "wasp (TLS) counted failed handshakes: $(grep -oE 'wasp_tls_handshake_errors_total[^;]*' <<<"$errs" | tr '\n' ' ')"
    fi
    stop "$TWASP_PID" 30
    [[ $STOP_RC == 0 ]] || note "wasp (TLS) exited with status $STOP_RC after SIGTERM (expected 0)"
    stop "$TNGX_PID" 30
    wasp_log_notes wasp-tls
}

# vg_tls_run TARGET N OUTFILE: like vg_run, HTTP/1.1 keep-alive over TLS (10 connections: the
# handshakes of the warm-up and of the measured requests are the same in both runs and cancel out).
vg_tls_run() {
    local tgt=$1 n=$2 out=$3 port pid o rc
    local vg=(taskset -c $SRV_CPU valgrind --tool=cachegrind --cache-sim=no --trace-children=no
        --cachegrind-out-file="$out")
    if [[ $tgt == wasp ]]; then
        port=$VTWPX
        spawn "vg-wasp-tls-$n" env "${VG_WASP_ENV[@]}" "${vg[@]}" "$WASP_BIN" run --config "$TMP/wasp-vgtls.yaml"
        "${MEASURE[@]}" wait-log "$TMP/vg-wasp-tls-$n.err" "wasp started" 60 --pid "$LAST_PID" \
            || die "wasp (TLS) under valgrind did not start: $(tail -20 "$TMP/vg-wasp-tls-$n.err")"
    else
        port=$VTPX
        spawn "vg-nginx-tls-$n" "${vg[@]}" nginx -e "$TMP/vgtpx/startup-error.log" -c "$TMP/vgtpx/nginx.conf" -p "$TMP/vgtpx/"
        "${MEASURE[@]}" wait-port "$port" 60 || die "nginx (TLS) under valgrind did not start: $(tail -20 "$TMP/vg-nginx-tls-$n.err")"
    fi
    pid=$LAST_PID
    o=$(taskset -c $GEN_CPU h2load --h1 -n "$VG_WARMUP" -c 10 "$(tls_url "$port")" 2>&1)
    grep -q "status codes: $VG_WARMUP 2xx" <<<"$o" || die "valgrind warm-up against $tgt (TLS) failed:"$'\n'"$o"
    o=$(taskset -c $GEN_CPU h2load --h1 -n "$n" -c 10 "$(tls_url "$port")" 2>&1)
    echo "$o" >"$TMP/raw/vg-$tgt-tls-h1-$n.txt"
    grep -q "status codes: $n 2xx" <<<"$o" || die "valgrind run against $tgt (TLS, $n requests) failed:"$'\n'"$o"
    stop "$pid" 120
    rc=$STOP_RC
    [[ $rc == 0 ]] || note "$tgt (TLS) under valgrind (N=$n) exited with status $rc after SIGTERM"
    [[ $tgt != wasp ]] || wasp_log_notes "vg-wasp-tls-$n"
    [[ -s $out ]] || die "no cachegrind output $out"
}

# ------------------------------------------------------------------ main

main() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    ensure_tools
    if [[ $SKIP_BUILD != 1 ]]; then
        if [[ -z $WASP_GIVEN ]]; then
            log "building wasp as it ships (examples/deploy/build-dist.sh: dist profile, profile-guided)"
            WASP_BIN=$("$ROOT/examples/deploy/build-dist.sh" | tail -1) || die "examples/deploy/build-dist.sh failed"
        fi
        if [[ $SKIP_FILTERS != 1 && -z $FILTERS_GIVEN ]]; then
            log "building the filters (cargo build --manifest-path filters/Cargo.toml --target wasm32-wasip2 --release)"
            (cd "$ROOT" && cargo build --manifest-path filters/Cargo.toml --target wasm32-wasip2 --release) \
                || die "cargo build of the filters failed"
        fi
    fi
    [[ $SKIP_PINGORA == 1 ]] || build_pingora
    [[ -x $WASP_BIN ]] || die "no wasp binary at $WASP_BIN"
    if [[ $SKIP_PINGORA != 1 && ! -x $PINGORA_BIN ]]; then
        note "no pingora proxy binary at $PINGORA_BIN: no pingora rows"
        SKIP_PINGORA=1
    fi
    [[ $SKIP_PINGORA == 1 ]] || TARGETS+=(pingora)
    # Instructions/request: every target but direct.
    local vg_targets=("${TARGETS[@]:1}")
    [[ $(nproc) -ge 2 ]] || note "only $(nproc) CPU: load generator and servers share it; numbers are not comparable"

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/wasp-bench.XXXXXX")
    mkdir -p "$TMP/raw"
    # A private copy, so that a rebuild during the run cannot mix two builds in one report.
    local wasp_built
    wasp_built=$(date -r "$WASP_BIN" '+%Y-%m-%d %H:%M:%S')
    WASP_SRC=$WASP_BIN
    cp "$WASP_BIN" "$TMP/wasp"
    WASP_BIN=$TMP/wasp
    local pingora_built="" pingora_ver=""
    if [[ $SKIP_PINGORA != 1 ]]; then
        pingora_built=$(date -r "$PINGORA_BIN" '+%Y-%m-%d %H:%M:%S')
        pingora_ver=$(grep -A1 '^name = "pingora-proxy"' "$PINGORA_DIR/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')
        PINGORA_SRC=$PINGORA_BIN
        cp "$PINGORA_BIN" "$TMP/pingora"
        PINGORA_BIN=$TMP/pingora
    fi
    RESULTS=$TMP/results.jsonl
    local filter_modules="" m
    if [[ $SKIP_FILTERS != 1 ]]; then
        # Private copies too (someone may rebuild a filter during the run).
        mkdir -p "$TMP/filters"
        for m in "${FILTER_MODULES[@]}"; do
            [[ -f $FILTER_DIR/$m.wasm ]] || die "no $FILTER_DIR/$m.wasm (build the filters, or unset SKIP_BUILD)"
            cp "$FILTER_DIR/$m.wasm" "$TMP/filters/"
            filter_modules+="$m.wasm $(($(stat -c %s "$FILTER_DIR/$m.wasm") / 1024)) KiB built $(date -r "$FILTER_DIR/$m.wasm" '+%H:%M:%S'); "
        done
        filter_modules="${filter_modules%; } (from $FILTER_DIR)"
        TOKEN=$("${MEASURE[@]}" jwt --secret "$JWT_SECRET")
        BAD_TOKEN=$("${MEASURE[@]}" jwt --secret "$JWT_SECRET" --bad)
        local perf_msg
        if perf_msg=$("${MEASURE[@]}" perf-check 2>&1); then
            PERF_OK=1
            perf_msg="perf stat -e instructions:u -p <wasp pid> over each throughput run (all threads of the process, the load generator excluded), ÷ requests"
        else
            perf_msg="perf cannot count here ($perf_msg)"
            if [[ $SKIP_VALGRIND == 1 ]]; then note "filter rows: no instructions/request ($perf_msg, SKIP_VALGRIND=1)"; fi
        fi
        [[ $SKIP_VALGRIND == 1 ]] \
            || perf_msg="cachegrind like the core rows ((I(5N) − I(N)) / 4N), but with filter_instances: $VG_FILTER_INSTANCES (the default pool's reservation does not fit valgrind; 6 keeps the 4 GiB slots wasp runs with) and h2load -c $VG_FILTER_CONNS instead of -c 10; perf: $perf_msg"
    fi
    local scenarios=(h1)
    [[ $SKIP_H2 == 1 ]] || scenarios+=(h2c)

    local ports
    read -r -a ports < <("${MEASURE[@]}" ports 30)
    UP=${ports[0]} UP2=${ports[1]} PX=${ports[2]} PX2=${ports[3]} WPX=${ports[4]} WADM=${ports[5]}
    VPX=${ports[6]} VPX2=${ports[7]} VWPX=${ports[8]} VWADM=${ports[9]}
    FWPX=${ports[10]} FWADM=${ports[11]}
    MEM_PORTS=("${ports[@]:12:8}")
    VFWPX=${ports[20]} VFWADM=${ports[21]}
    TWPX=${ports[22]} TWADM=${ports[23]} TPX=${ports[24]} VTWPX=${ports[25]} VTWADM=${ports[26]} VTPX=${ports[27]}
    GPX=${ports[28]} VGPX=${ports[29]}

    # --- configs
    nginx_conf "$SHARED/nginx-upstream.conf" "$TMP/up/nginx.conf" "$TMP/up" "$UP" "" \
        -e "s#listen 127.0.0.1:@UP@;#listen 127.0.0.1:@UP@; listen 127.0.0.1:$UP2 http2;#"
    grep -q "$UP2 http2" "$TMP/up/nginx.conf" || die "could not add the h2c listen line to the upstream config"
    nginx_conf "$SHARED/nginx-proxy.conf" "$TMP/px/nginx.conf" "$TMP/px" "$UP" "$PX" \
        -e "s#listen 127.0.0.1:@PX@;#listen 127.0.0.1:@PX@; listen 127.0.0.1:$PX2 http2;#"
    grep -q "$PX2 http2" "$TMP/px/nginx.conf" || die "could not add the h2c listen line to the proxy config"
    # Valgrind variant: a single process (master_process off) so the measured process is the one serving.
    nginx_conf "$SHARED/nginx-proxy.conf" "$TMP/vgpx/nginx.conf" "$TMP/vgpx" "$UP" "$VPX" \
        -e "1i master_process off;" \
        -e "s#listen 127.0.0.1:@PX@;#listen 127.0.0.1:@PX@; listen 127.0.0.1:$VPX2 http2;#"
    wasp_conf "$TMP/wasp.yaml" "$WPX" "$WADM"
    wasp_conf "$TMP/wasp-vg.yaml" "$VWPX" "$VWADM"
    if [[ $SKIP_FILTERS != 1 ]]; then
        filters_conf "$TMP/wasp-filters.yaml" "$FWPX" "$FWADM"
        filters_conf "$TMP/wasp-vgf.yaml" "$VFWPX" "$VFWADM" "$VG_FILTER_INSTANCES"
        # Under valgrind every process of a row pair must do the same start-up work, for (I(5N) − I(N))
        # to cancel it: no cache (one process would compile and the next read back), so each compiles
        # in process (a compile child would run outside valgrind, for a CPU valgrind does not emulate).
        sed -i 's#^filter_cache: .*#filter_cache: "off"#' "$TMP/wasp-vgf.yaml"
    fi
    if [[ $SKIP_TLS != 1 ]]; then
        tls_certs "$TMP/tls"
        local tls_sed=(-e "s#@CERT@#$TMP/tls/server.pem#g" -e "s#@KEY@#$TMP/tls/server-key.pem#g")
        nginx_conf "$HERE/nginx-tls.conf" "$TMP/tpx/nginx.conf" "$TMP/tpx" "$UP" "$TPX" "${tls_sed[@]}"
        # Valgrind variant: a single process, like the core one.
        nginx_conf "$HERE/nginx-tls.conf" "$TMP/vgtpx/nginx.conf" "$TMP/vgtpx" "$UP" "$VTPX" "${tls_sed[@]}" \
            -e "1i master_process off;"
        wasp_tls_conf "$TMP/wasp-tls.yaml" "$TWPX" "$TWADM"
        wasp_tls_conf "$TMP/wasp-vgtls.yaml" "$VTWPX" "$VTWADM"
    fi

    local wasp_ver nginx_ver rev
    wasp_ver=$("$WASP_BIN" --version 2>&1 | head -1)
    nginx_ver=$(nginx -v 2>&1 | head -1)
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    local tracked=(proxy Cargo.toml Cargo.lock)
    [[ $SKIP_FILTERS == 1 ]] || tracked+=(filters sdk)
    if [[ -n $(git -C "$ROOT" status --porcelain -- "${tracked[@]}" 2>/dev/null) ]]; then rev+=" + uncommitted changes"; fi
    "${MEASURE[@]}" meta --out "$RESULTS" \
        "wasp=$wasp_ver ($rev), $WASP_SRC built $wasp_built" \
        "nginx=$nginx_ver" \
        "wrk=$(wrk -v 2>&1 | head -1 || true)" \
        "h2load=$(h2load --version 2>&1 | head -1)" \
        "valgrind=$( [[ $SKIP_VALGRIND == 1 ]] && echo skipped || valgrind --version)" \
        "pingora=$( [[ $SKIP_PINGORA == 1 ]] && echo skipped || echo "pingora-proxy $pingora_ver (bench/pingora: threads 1, upstream keep-alive pool 1024, h2c on, no TLS, no access log), $PINGORA_SRC built $pingora_built")" \
        "params=DURATION=${DURATION}s REPS=$REPS WARMUP=${WARMUP}s QUIET_WAIT=${QUIET_WAIT}s LAT=${LAT_CONNS}x${LAT_RPS} req/s for ${LAT_DURATION}s VG_N=$VG_N scenarios=${scenarios[*]}$( [[ $SKIP_FILTERS == 1 ]] && echo ' SKIP_FILTERS=1')$( [[ $SKIP_TLS == 1 ]] && echo ' SKIP_TLS=1')"
    if [[ $SKIP_TLS != 1 ]]; then
        "${MEASURE[@]}" meta --out "$RESULTS" \
            "openssl=$(openssl version)" \
            "tls_cert=ECDSA P-256 leaf for localhost and 127.0.0.1, signed by an ECDSA P-256 CA, both made with openssl for the run; the leaf alone is served" \
            "tls_nginx=bench/nginx-tls.conf (the shared nginx-proxy.conf plus listen ... ssl http2, ssl_protocols TLSv1.2 TLSv1.3, ssl_session_cache shared:SSL:10m, ssl_session_tickets on; ciphers and groups OpenSSL's defaults)"
    fi
    if [[ $SKIP_FILTERS != 1 ]]; then
        "${MEASURE[@]}" meta --out "$RESULTS" \
            "filter_modules=$filter_modules" \
            "perf=$perf_msg" \
            "filters_process=workers: 1, access log off, filter_instances 512; every request carries an Authorization: Bearer header of the same length (a valid HS256 token; /deny/: a badly signed one)" \
            "mem_warmup=wrk -t2 -c50 for ${WARMUP}s" \
            "mem_desc_wasp-mem-nf=$MEM_DESC_nf" "mem_desc_wasp-mem-f1=$MEM_DESC_f1" \
            "mem_desc_wasp-mem-f10=$MEM_DESC_f10" "mem_desc_wasp-mem-f10same=$MEM_DESC_f10same"
    fi

    # --- servers
    log "starting upstream and ${TARGETS[*]:1} (ports: upstream $UP/h2c $UP2, wasp $WPX, nginx $PX/h2c $PX2$( [[ $SKIP_PINGORA == 1 ]] || echo ", pingora $GPX"))"
    spawn upstream taskset -c $SRV_CPU nginx -e "$TMP/up/startup-error.log" -c "$TMP/up/nginx.conf" -p "$TMP/up/"
    UP_PID=$LAST_PID
    "${MEASURE[@]}" wait-port "$UP" && "${MEASURE[@]}" wait-port "$UP2" || die "upstream did not start: $(cat "$TMP/upstream.err")"

    spawn wasp env WASP_LOG_FORMAT=json taskset -c $SRV_CPU "$WASP_BIN" run --config "$TMP/wasp.yaml"
    WASP_PID=$LAST_PID
    "${MEASURE[@]}" wait-log "$TMP/wasp.err" "wasp started" 30 --pid "$WASP_PID" || die "wasp did not start: $(cat "$TMP/wasp.err")"

    spawn nginx taskset -c $SRV_CPU nginx -e "$TMP/px/startup-error.log" -c "$TMP/px/nginx.conf" -p "$TMP/px/"
    NGX_PID=$LAST_PID
    "${MEASURE[@]}" wait-port "$PX" && "${MEASURE[@]}" wait-port "$PX2" || die "nginx proxy did not start: $(cat "$TMP/nginx.err")"

    local t
    PGR_PID=""
    if [[ $SKIP_PINGORA != 1 ]]; then
        spawn pingora taskset -c $SRV_CPU "$PINGORA_BIN" "127.0.0.1:$GPX" "127.0.0.1:$UP"
        PGR_PID=$LAST_PID
        "${MEASURE[@]}" wait-port "$GPX" || die "pingora proxy did not start: $(cat "$TMP/pingora.err")"
    fi

    "${MEASURE[@]}" affinity --expect $SRV_CPU "$UP_PID" "$WASP_PID" "$NGX_PID" ${PGR_PID:+"$PGR_PID"} \
        || note "some server threads are not pinned to CPU $SRV_CPU"

    sleep 1
    "${MEASURE[@]}" mem --target upstream --when idle --pids "$UP_PID" --out "$RESULTS"
    for t in "${TARGETS[@]:1}"; do
        "${MEASURE[@]}" mem --target "$t" --when idle --pids "$(pid_of "$t")" --out "$RESULTS"
    done

    local scn rep i nt=${#TARGETS[@]}
    for t in "${TARGETS[@]}"; do
        "${MEASURE[@]}" check "$(url "$(port_of h1 "$t")")" || die "HTTP/1.1 check of $t failed"
        [[ $SKIP_H2 == 1 ]] || check_h2c "$(port_of h2c "$t")"
    done

    # --- throughput (CPU/request) and fixed-rate latency
    for scn in "${scenarios[@]}"; do
        log "$scn: warm-up (${WARMUP}s each)"
        for t in "${TARGETS[@]}"; do warm_up "$scn" "$t"; done
        log "$scn: throughput, $REPS x ${DURATION}s per target, interleaved"
        for ((rep = 0; rep < REPS; rep++)); do
            for ((i = 0; i < nt; i++)); do
                measure_run "$scn" "${TARGETS[(i + rep) % nt]}" tput "$rep"
            done
        done
        log "$scn: latency at $((LAT_CONNS * LAT_RPS)) req/s, $REPS x ${LAT_DURATION}s per target, interleaved"
        for ((rep = 0; rep < REPS; rep++)); do
            for ((i = 0; i < nt; i++)); do
                measure_run "$scn" "${TARGETS[(i + rep) % nt]}" lat "$rep"
            done
        done
    done

    "${MEASURE[@]}" mem --target upstream --when end --pids "$UP_PID" --out "$RESULTS"
    for t in "${TARGETS[@]:1}"; do
        "${MEASURE[@]}" mem --target "$t" --when end --pids "$(pid_of "$t")" --out "$RESULTS"
    done

    # --- stop the proxies; wasp must drain and exit 0 on SIGTERM
    stop "$WASP_PID" 30
    [[ $STOP_RC == 0 ]] || note "wasp exited with status $STOP_RC after SIGTERM (expected 0)"
    stop "$NGX_PID" 30
    if [[ -n $PGR_PID ]]; then
        stop "$PGR_PID" 30
        [[ $STOP_RC == 0 ]] || note "pingora exited with status $STOP_RC after SIGTERM (expected 0)"
        pingora_log_notes pingora
    fi
    local n
    n=$(grep -cE '"level":"(WARN|ERROR)"' "$TMP/wasp.err" || true)
    ((n == 0)) || note "wasp logged $n WARN/ERROR lines, first: $(grep -m1 -E '"level":"(WARN|ERROR)"' "$TMP/wasp.err")"

    # --- filters: no filter vs header-rewrite vs a chain vs auth rejecting; RSS with filters loaded
    if [[ $SKIP_FILTERS != 1 ]]; then
        filters_section
        mem_section
    fi

    # --- TLS: wasp vs nginx terminating TLS (the upstream still running)
    [[ $SKIP_TLS == 1 ]] || tls_section

    for f in "$TMP/px/proxy-error.log" "$TMP/tpx/proxy-error.log" "$TMP/up/upstream-error.log"; do
        [[ -s $f ]] && note "$(basename "$f"): $(wc -l <"$f") lines, first: $(head -1 "$f")"
    done

    # --- instructions per request
    if [[ $SKIP_VALGRIND != 1 ]]; then
        log "valgrind (cachegrind): instructions/request from N=$VG_N and 5N=$((5 * VG_N)) requests"
        for scn in "${scenarios[@]}"; do
            for t in "${vg_targets[@]}"; do
                vg_run "$t" "$scn" "$VG_N" "$TMP/cg-$t-$scn-small.out"
                vg_run "$t" "$scn" "$((5 * VG_N))" "$TMP/cg-$t-$scn-large.out"
                "${MEASURE[@]}" vg --target "$t" --scenario "$scn" --n "$VG_N" \
                    --small "$TMP/cg-$t-$scn-small.out" --large "$TMP/cg-$t-$scn-large.out" --out "$RESULTS"
            done
        done
        if [[ $SKIP_FILTERS != 1 ]]; then
            log "valgrind (cachegrind): filter rows (filter_instances: $VG_FILTER_INSTANCES, $VG_FILTER_CONNS connections), N=$VG_N and 5N"
            for t in "${FTARGETS[@]}"; do
                vg_filter_run "$t" "$VG_N" "$TMP/cg-$t-small.out"
                vg_filter_run "$t" "$((5 * VG_N))" "$TMP/cg-$t-large.out"
                "${MEASURE[@]}" vg --target "$t" --scenario h1 --n "$VG_N" \
                    --small "$TMP/cg-$t-small.out" --large "$TMP/cg-$t-large.out" --out "$RESULTS"
            done
        fi
        if [[ $SKIP_TLS != 1 ]]; then
            log "valgrind (cachegrind): HTTP/1.1 keep-alive over TLS, N=$VG_N and 5N=$((5 * VG_N))"
            for t in "${TLS_TGTS[@]}"; do
                vg_tls_run "$t" "$VG_N" "$TMP/cg-$t-tls-small.out"
                vg_tls_run "$t" "$((5 * VG_N))" "$TMP/cg-$t-tls-large.out"
                "${MEASURE[@]}" vg --target "$t" --scenario tls-h1 --n "$VG_N" \
                    --small "$TMP/cg-$t-tls-small.out" --large "$TMP/cg-$t-tls-large.out" --out "$RESULTS"
            done
        fi
    fi

    stop "$UP_PID" 30

    local joined=""
    for n in "${NOTES[@]+"${NOTES[@]}"}"; do joined+="$n || "; done
    [[ -z $joined ]] || "${MEASURE[@]}" meta --out "$RESULTS" "notes=$joined"

    mkdir -p "$RESULTS_DIR"
    cp "$RESULTS" "$RESULTS_DIR/latest.jsonl"
    rm -rf "$RESULTS_DIR/latest-raw" && cp -r "$TMP/raw" "$RESULTS_DIR/latest-raw"
    log "results"
    "${MEASURE[@]}" report --results "$RESULTS" --out "$RESULTS_DIR/latest.md"
    echo "saved to $RESULTS_DIR/latest.md" >&2
}

main "$@"
