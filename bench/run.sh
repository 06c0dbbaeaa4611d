#!/usr/bin/env bash
# Side-by-side benchmark: direct (load generator -> upstream), wasp (-> wasp ->
# upstream) and nginx (-> nginx reverse proxy -> upstream), one run, one
# shared upstream (nginx returning "ok"). See bench/README.md.
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
#   SKIP_BUILD=1     don't run cargo build (use WASP_BIN as is)
#   WASP_BIN         wasp binary (default: target/release/wasp of this repository)
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
WASP_BIN=${WASP_BIN:-$ROOT/target/release/wasp}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
KEEP_TMP=${KEEP_TMP:-0}
QUIET_WAIT=${QUIET_WAIT:-30}
GEN_CPU=0   # load generator
SRV_CPU=1   # proxies and upstream

# measure.py samples /proc during the runs: keep it on the load generator's CPU.
MEASURE=(taskset -c $GEN_CPU python3 "$HERE/measure.py")
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac
TARGETS=(direct wasp nginx)
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

wasp_conf() { # wasp_conf FILE PORT ADMINPORT
    cat >"$1" <<EOF
admin: { address: 127.0.0.1:$3 }
access_log: "off"
workers: 1
listeners:
  - name: ingress
    address: 127.0.0.1:$2
    routes:
      - name: all
        cluster: up
clusters:
  - name: up
    endpoints: ["127.0.0.1:$UP"]
    protocol: http1
EOF
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

port_of() { # port_of SCENARIO TARGET
    if [[ $1 == h1 ]]; then
        case $2 in direct) echo "$UP" ;; wasp) echo "$WPX" ;; nginx) echo "$PX" ;; esac
    else
        case $2 in direct) echo "$UP2" ;; wasp) echo "$WPX" ;; nginx) echo "$PX2" ;; esac
    fi
}

pid_of() { case $1 in direct) echo "$UP_PID" ;; wasp) echo "$WASP_PID" ;; nginx) echo "$NGX_PID" ;; esac; }

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

# ------------------------------------------------------------------ valgrind

# vg_run TARGET SCENARIO N OUTFILE: start TARGET under cachegrind, warm up, send N requests, SIGTERM.
vg_run() {
    local tgt=$1 scn=$2 n=$3 out=$4 port h=() rc
    [[ $scn == h1 ]] && h=(--h1) || h=(-m 10)
    local vg=(taskset -c $SRV_CPU valgrind --tool=cachegrind --cache-sim=no --trace-children=no
        --cachegrind-out-file="$out")
    if [[ $tgt == wasp ]]; then
        port=$VWPX
        spawn "vg-wasp-$scn-$n" env WASP_LOG_FORMAT=json "${vg[@]}" "$WASP_BIN" run --config "$TMP/wasp-vg.yaml"
        "${MEASURE[@]}" wait-log "$TMP/vg-wasp-$scn-$n.err" "wasp started" 60 --pid "$LAST_PID" \
            || die "wasp under valgrind did not start: $(tail -20 "$TMP/vg-wasp-$scn-$n.err")"
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
    [[ -s $out ]] || die "no cachegrind output $out"
}

# ------------------------------------------------------------------ main

main() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    ensure_tools
    if [[ $SKIP_BUILD != 1 ]]; then
        log "building wasp (cargo build --release -p wasp)"
        (cd "$ROOT" && cargo build --release -p wasp) || die "cargo build failed"
    fi
    [[ -x $WASP_BIN ]] || die "no wasp binary at $WASP_BIN"
    [[ $(nproc) -ge 2 ]] || note "only $(nproc) CPU: load generator and servers share it; numbers are not comparable"

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/wasp-bench.XXXXXX")
    mkdir -p "$TMP/raw"
    # A private copy, so that a rebuild during the run cannot mix two builds in one report.
    local wasp_built
    wasp_built=$(date -r "$WASP_BIN" '+%Y-%m-%d %H:%M:%S')
    WASP_SRC=$WASP_BIN
    cp "$WASP_BIN" "$TMP/wasp"
    WASP_BIN=$TMP/wasp
    RESULTS=$TMP/results.jsonl
    local scenarios=(h1)
    [[ $SKIP_H2 == 1 ]] || scenarios+=(h2c)

    read -r UP UP2 PX PX2 WPX WADM VPX VPX2 VWPX VWADM < <("${MEASURE[@]}" ports 10)

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

    local wasp_ver nginx_ver rev
    wasp_ver=$("$WASP_BIN" --version 2>&1 | head -1)
    nginx_ver=$(nginx -v 2>&1 | head -1)
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    if [[ -n $(git -C "$ROOT" status --porcelain -- proxy Cargo.toml Cargo.lock 2>/dev/null) ]]; then rev+=" + uncommitted changes"; fi
    "${MEASURE[@]}" meta --out "$RESULTS" \
        "wasp=$wasp_ver ($rev), $WASP_SRC built $wasp_built" \
        "nginx=$nginx_ver" \
        "wrk=$(wrk -v 2>&1 | head -1 || true)" \
        "h2load=$(h2load --version 2>&1 | head -1)" \
        "valgrind=$( [[ $SKIP_VALGRIND == 1 ]] && echo skipped || valgrind --version)" \
        "params=DURATION=${DURATION}s REPS=$REPS WARMUP=${WARMUP}s QUIET_WAIT=${QUIET_WAIT}s LAT=${LAT_CONNS}x${LAT_RPS} req/s for ${LAT_DURATION}s VG_N=$VG_N scenarios=${scenarios[*]}"

    # --- servers
    log "starting upstream, wasp and nginx (ports: upstream $UP/h2c $UP2, wasp $WPX, nginx $PX/h2c $PX2)"
    spawn upstream taskset -c $SRV_CPU nginx -e "$TMP/up/startup-error.log" -c "$TMP/up/nginx.conf" -p "$TMP/up/"
    UP_PID=$LAST_PID
    "${MEASURE[@]}" wait-port "$UP" && "${MEASURE[@]}" wait-port "$UP2" || die "upstream did not start: $(cat "$TMP/upstream.err")"

    spawn wasp env WASP_LOG_FORMAT=json taskset -c $SRV_CPU "$WASP_BIN" run --config "$TMP/wasp.yaml"
    WASP_PID=$LAST_PID
    "${MEASURE[@]}" wait-log "$TMP/wasp.err" "wasp started" 30 --pid "$WASP_PID" || die "wasp did not start: $(cat "$TMP/wasp.err")"

    spawn nginx taskset -c $SRV_CPU nginx -e "$TMP/px/startup-error.log" -c "$TMP/px/nginx.conf" -p "$TMP/px/"
    NGX_PID=$LAST_PID
    "${MEASURE[@]}" wait-port "$PX" && "${MEASURE[@]}" wait-port "$PX2" || die "nginx proxy did not start: $(cat "$TMP/nginx.err")"

    "${MEASURE[@]}" affinity --expect $SRV_CPU "$UP_PID" "$WASP_PID" "$NGX_PID" || note "some server threads are not pinned to CPU $SRV_CPU"

    sleep 1
    "${MEASURE[@]}" mem --target upstream --when idle --pids "$UP_PID" --out "$RESULTS"
    "${MEASURE[@]}" mem --target wasp --when idle --pids "$WASP_PID" --out "$RESULTS"
    "${MEASURE[@]}" mem --target nginx --when idle --pids "$NGX_PID" --out "$RESULTS"

    local t scn rep i
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
            for ((i = 0; i < 3; i++)); do
                measure_run "$scn" "${TARGETS[(i + rep) % 3]}" tput "$rep"
            done
        done
        log "$scn: latency at $((LAT_CONNS * LAT_RPS)) req/s, $REPS x ${LAT_DURATION}s per target, interleaved"
        for ((rep = 0; rep < REPS; rep++)); do
            for ((i = 0; i < 3; i++)); do
                measure_run "$scn" "${TARGETS[(i + rep) % 3]}" lat "$rep"
            done
        done
    done

    "${MEASURE[@]}" mem --target upstream --when end --pids "$UP_PID" --out "$RESULTS"
    "${MEASURE[@]}" mem --target wasp --when end --pids "$WASP_PID" --out "$RESULTS"
    "${MEASURE[@]}" mem --target nginx --when end --pids "$NGX_PID" --out "$RESULTS"

    # --- stop the proxies; wasp must drain and exit 0 on SIGTERM
    stop "$WASP_PID" 30
    [[ $STOP_RC == 0 ]] || note "wasp exited with status $STOP_RC after SIGTERM (expected 0)"
    stop "$NGX_PID" 30
    local n
    n=$(grep -cE '"level":"(WARN|ERROR)"' "$TMP/wasp.err" || true)
    ((n == 0)) || note "wasp logged $n WARN/ERROR lines, first: $(grep -m1 -E '"level":"(WARN|ERROR)"' "$TMP/wasp.err")"
    for f in "$TMP/px/proxy-error.log" "$TMP/up/upstream-error.log"; do
        [[ -s $f ]] && note "$(basename "$f"): $(wc -l <"$f") lines, first: $(head -1 "$f")"
    done

    # --- instructions per request
    if [[ $SKIP_VALGRIND != 1 ]]; then
        log "valgrind (cachegrind): instructions/request from N=$VG_N and 5N=$((5 * VG_N)) requests"
        for scn in "${scenarios[@]}"; do
            for t in wasp nginx; do
                vg_run "$t" "$scn" "$VG_N" "$TMP/cg-$t-$scn-small.out"
                vg_run "$t" "$scn" "$((5 * VG_N))" "$TMP/cg-$t-$scn-large.out"
                "${MEASURE[@]}" vg --target "$t" --scenario "$scn" --n "$VG_N" \
                    --small "$TMP/cg-$t-$scn-small.out" --large "$TMP/cg-$t-$scn-large.out" --out "$RESULTS"
            done
        done
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
