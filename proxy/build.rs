//! Builds the demo filter (filters/header-rewrite) for wasm32-wasip2 so
//! that plain `wasp` can show a filter at work; the binary embeds it.
//! Without the wasm32-wasip2 target the demo runs without a filter and says
//! how to get one. Shares `target/wasm` with the tests' filter builds.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("..");
    for path in ["filters/header-rewrite/src", "filters/Cargo.toml", "sdk/src", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("demo-filter.wasm");
    let target_dir = root.join("target").join("wasm");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // A clean environment: the outer build's CARGO_* and RUSTFLAGS are for the host.
    cargo.env_clear();
    for keep in ["PATH", "HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "CARGO_HOME"] {
        if let Some(v) = std::env::var_os(keep) {
            cargo.env(keep, v);
        }
    }
    let status = cargo
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "header-rewrite", "--manifest-path"])
        .arg(root.join("filters").join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .status();
    let built = target_dir.join("wasm32-wasip2").join("release").join("header_rewrite.wasm");
    match status {
        Ok(s) if s.success() && built.exists() => {
            std::fs::copy(&built, &out).expect("copy the demo filter");
        }
        _ => {
            println!(
                "cargo:warning=the demo filter was not built; the demo runs without it. Is the target installed \
                 (`rustup target add wasm32-wasip2`)? To see the build's own error: cargo build --release \
                 --target wasm32-wasip2 --manifest-path filters/Cargo.toml -p header-rewrite"
            );
            std::fs::write(&out, b"").expect("write placeholder");
        }
    }
}
