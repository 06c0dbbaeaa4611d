#!/usr/bin/env bash
# Builds wasp and the filters in filters/ and lays out the image's runtime
# filesystem in OUT_DIR; the Dockerfile's runtime stage copies OUT_DIR to /.
#
#   OUT_DIR/usr/local/bin/wasp                     the proxy (examples/deploy/build-dist.sh: `dist` profile,
#                                                  fat LTO, profile-guided; debug info stripped)
#   OUT_DIR/usr/lib/wasp/filters/<crate>.wasm      every filter in filters/ (wasm32-wasip2)
#   OUT_DIR/etc/wasp/wasp.yaml                     the default config (examples/deploy/wasp.yaml)
#   OUT_DIR/var/cache/wasp/                        compiled-filter cache (XDG_CACHE_HOME=/var/cache)
#
# Then it runs the laid-out binary (`--version`, `check` of the default
# config in the tree) and prints the tree's size.
#
# Usage: examples/deploy/build-image-root.sh OUT_DIR
# Environment:
#   WASP_BIN=FILE      use this wasp binary instead of building it with build-dist.sh
#                      (the tests pass their debug build: a release build of
#                      wasmtime takes most of an hour on a small machine)
#   WASP_FILTERS=DIR   use the filter components built in DIR (<crate_name>.wasm,
#                      as cargo names them) instead of building them
set -euo pipefail

out=${1:?usage: build-image-root.sh OUT_DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo=${CARGO:-cargo}

if [ -z "${WASP_FILTERS:-}" ]; then
    # The same command and target folder as the tests' filter builds.
    CARGO_TARGET_DIR="$root/target/wasm" "$cargo" build --release --locked --target wasm32-wasip2 \
        --manifest-path "$root/filters/Cargo.toml"
    WASP_FILTERS=$root/target/wasm/wasm32-wasip2/release
fi
if [ -z "${WASP_BIN:-}" ]; then
    # Trained on the filters just built (build-dist.sh: why, and PGO=0).
    WASP_BIN=$(WASP_FILTERS=$WASP_FILTERS "$root/examples/deploy/build-dist.sh" | tail -1)
fi

mkdir -p "$out/usr/local/bin" "$out/usr/lib/wasp/filters" "$out/etc/wasp" "$out/var/cache/wasp"
install -m 0755 "$WASP_BIN" "$out/usr/local/bin/wasp"
if command -v strip >/dev/null; then
    strip --strip-debug "$out/usr/local/bin/wasp"
fi
for manifest in "$root"/filters/*/Cargo.toml; do
    crate=$(basename "$(dirname "$manifest")")
    install -m 0644 "$WASP_FILTERS/${crate//-/_}.wasm" "$out/usr/lib/wasp/filters/$crate.wasm"
done
install -m 0644 "$root/examples/deploy/wasp.yaml" "$out/etc/wasp/wasp.yaml"

"$out/usr/local/bin/wasp" --version
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
XDG_CACHE_HOME=$cache "$out/usr/local/bin/wasp" check --config "$out/etc/wasp/wasp.yaml"

bytes=$(find "$out" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
echo "image root: $bytes bytes ($((bytes / 1048576)) MiB) over the base image" \
    "(debian:bookworm-slim, about 75 MB, plus iptables, about 4 MB: see examples/deploy/README.md)"
