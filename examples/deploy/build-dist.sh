#!/usr/bin/env bash
# Builds the wasp binary that ships (the image) and that bench/run.sh
# measures: the `dist` profile (fat LTO, one codegen unit), profile-guided.
#
#   1. an instrumented build (-Cprofile-generate) into TARGET/pgo-gen;
#   2. examples/deploy/pgo-train.py drives it through the hot paths
#      (HTTP/1.1, HTTP/2, TLS/mTLS, TCP, filters) for PGO_SECONDS;
#   3. llvm-profdata merges what it recorded;
#   4. the real build (-Cprofile-use) into TARGET/pgo-use.
#
# Why (README "Benchmarks", "Profile-guided"): callgrind, 2026-12-05, the
# same source built both ways: the no-filter HTTP/1.1 route 28.8k -> 24.6k
# instructions a request, the auth + rate-limit + header-rewrite chain
# 84.4k -> 72.2k; user + system CPU a request under load 12.0 -> 11.1 us.
# Code the training never reaches is laid out as cold, so the training
# covers the paths a sidecar is busy on, with one thread and with several;
# the test suite runs pgo-train.py against its debug build to keep it working.
# Takes two `dist` builds (each crate is built again for a new profile).

#
# Prints the binary's path as its last line.
#
# Usage: examples/deploy/build-dist.sh
# Environment:
#   PGO=0              a plain `dist` build (TARGET/dist/wasp), no training
#   PGO_SECONDS=N      training time (default 20)
#   CARGO_TARGET_DIR   as for cargo (default: the repository's target/)
#   WASP_FILTERS=DIR   the filter components to train with (default: built
#                      into target/wasm, as build-image-root.sh does)
# Needs: python3 and openssl (the training's client and certificates), and
# rustup's llvm-tools component (installed here if missing).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-$root/target}

if [ "${PGO:-1}" = 0 ]; then
    "$cargo" build --profile dist --locked -p wasp --manifest-path "$root/Cargo.toml" >&2
    echo "$target/dist/wasp"
    exit 0
fi

for tool in python3 openssl; do
    command -v "$tool" >/dev/null || { echo "build-dist.sh: $tool is needed for the PGO training (or PGO=0)" >&2; exit 1; }
done
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
    rustup component add llvm-tools >&2
fi
if [ -z "${WASP_FILTERS:-}" ]; then
    CARGO_TARGET_DIR="$root/target/wasm" "$cargo" build --release --locked --target wasm32-wasip2 \
        --manifest-path "$root/filters/Cargo.toml" >&2
    WASP_FILTERS=$root/target/wasm/wasm32-wasip2/release
fi

# --target: the flags reach wasp and its dependencies, not build scripts and proc macros.
unset CARGO_ENCODED_RUSTFLAGS # it would take precedence over RUSTFLAGS
build() { # build TARGET_DIR FLAG
    RUSTFLAGS="${RUSTFLAGS:-} $2" CARGO_TARGET_DIR="$1" "$cargo" build --profile dist --locked -p wasp \
        --target "$host" --manifest-path "$root/Cargo.toml" >&2
}
data=$target/pgo-data
rm -rf "$data"
mkdir -p "$data"
build "$target/pgo-gen" "-Cprofile-generate=$data"
python3 "$root/examples/deploy/pgo-train.py" --wasp "$target/pgo-gen/$host/dist/wasp" \
    --filters "$WASP_FILTERS" --seconds "${PGO_SECONDS:-20}" >&2
compgen -G "$data/*.profraw" >/dev/null || { echo "build-dist.sh: the training wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$target/pgo.profdata" "$data"
# Named by its content: cargo rebuilds when the flags change, not when the
# file a flag names does, and every crate must be laid out by this profile.
profile=$target/pgo-$(sha256sum "$target/pgo.profdata" | cut -c1-16).profdata
rm -f "$target"/pgo-*.profdata
mv "$target/pgo.profdata" "$profile"
build "$target/pgo-use" "-Cprofile-use=$profile"
echo "$target/pgo-use/$host/dist/wasp"
