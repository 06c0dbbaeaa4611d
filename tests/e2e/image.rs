//! The image recipe (examples/deploy/). There is no container daemon on CI,
//! so the recipe is tested in its parts: the one script the Dockerfile's
//! build stage runs is run here (on the debug binary and the filters the
//! tests already built, not a second release build), its tree is checked
//! as the image would run it, and the Dockerfile is checked to call that
//! script and to run wasp as uid 1337.

use super::support::filters;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasp(bin: &Path, args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(bin).args(args).env("XDG_CACHE_HOME", cache).output().expect("run the laid-out wasp")
}

#[test]
fn the_build_script_lays_out_a_tree_whose_wasp_runs_and_whose_config_checks() {
    let out = tempfile::tempdir().expect("tmp");
    let tree = out.path().join("root");
    let filters_dir = filters::wasm("header-rewrite").parent().expect("filter dir").to_path_buf();
    let run = Command::new(root().join("examples/deploy/build-image-root.sh"))
        .arg(&tree)
        .env("WASP_BIN", env!("CARGO_BIN_EXE_wasp"))
        .env("WASP_FILTERS", &filters_dir)
        .output()
        .expect("run build-image-root.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));

    let bin = tree.join("usr/local/bin/wasp");
    let cache = out.path().join("cache");
    let version = wasp(&bin, &["--version"], &cache);
    assert_eq!(String::from_utf8_lossy(&version.stdout), format!("wasp {}\n", env!("CARGO_PKG_VERSION")));
    let config = tree.join("etc/wasp/wasp.yaml");
    let check = wasp(&bin, &["check", "--config", &config.to_string_lossy()], &cache);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // Every filter crate is in the image's filter folder, and every module
    // the default config names is there, resolved as in the image.
    for crate_dir in std::fs::read_dir(root().join("filters")).expect("filters/").map(|e| e.expect("entry").path()) {
        if crate_dir.join("Cargo.toml").exists() {
            let name = crate_dir.file_name().expect("name").to_string_lossy().to_string();
            assert!(tree.join(format!("usr/lib/wasp/filters/{name}.wasm")).is_file(), "{name} not in the image");
        }
    }
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&config).expect("config")).expect("yaml");
    let modules: Vec<&str> =
        yaml["filters"].as_sequence().expect("filters").iter().filter_map(|f| f["module"].as_str()).collect();
    assert!(!modules.is_empty());
    for module in modules {
        let in_tree = tree.join("etc/wasp").join(module);
        assert!(in_tree.is_file(), "{module} missing");
        let in_image = Path::new("/etc/wasp").join(module);
        let normal: PathBuf = in_image.components().fold(PathBuf::new(), |mut p, c| {
            match c {
                std::path::Component::ParentDir => _ = p.pop(),
                c => p.push(c),
            }
            p
        });
        assert!(normal.starts_with("/usr/lib/wasp/filters"), "{module} is outside the filter folder");
    }
    assert!(tree.join("var/cache/wasp").is_dir());

    // The size it reports is the size of what it copied.
    let total: u64 = walk(&tree).iter().map(|f| f.metadata().expect("meta").len()).sum();
    assert!(stdout.contains(&format!("image root: {total} bytes")), "{stdout}");
    println!("image root (debug binary, debug info stripped): {total} bytes");
}

/// The PGO training the shipped build is laid out by (build-dist.sh) runs
/// against the real binary here, so it cannot rot: wasp starts on its config
/// (TLS, mTLS, HTTP/2 and TCP listeners and clusters, the filters), every
/// request and echo gets the answer it expects, and wasp exits cleanly on
/// SIGTERM (which is when an instrumented build writes its profile).
#[test]
fn the_pgo_training_runs_every_path_it_trains_and_each_answers_as_expected() {
    for (tool, package) in [("python3", "python3"), ("openssl", "openssl")] {
        if Command::new(tool).arg("--version").output().is_err() {
            // Fresh CI machines (Debian, as root) may lack them.
            let install = || Command::new("apt-get").args(["install", "-y", "-qq", package]).output();
            if !install().is_ok_and(|o| o.status.success()) {
                let _ = Command::new("apt-get").args(["update", "-qq"]).output();
                let _ = install();
            }
        }
    }
    let filters_dir = filters::wasm("header-rewrite").parent().expect("filter dir").to_path_buf();
    for needed in ["auth", "rate-limit"] {
        filters::wasm(needed);
    }
    let run = Command::new("python3")
        .arg(root().join("examples/deploy/pgo-train.py"))
        .args(["--wasp", env!("CARGO_BIN_EXE_wasp"), "--seconds", "2", "--filters"])
        .arg(&filters_dir)
        .output()
        .expect("run pgo-train.py (python3 and openssl must be installed)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    let total: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {stdout:?}"));
    // 24 connections for 2 s and 20 handshakes: far more than this even on a debug build.
    assert!(total > 100, "{stdout}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()) {
        if entry.is_dir() { files.extend(walk(&entry)) } else { files.push(entry) }
    }
    files
}

#[test]
fn the_dockerfile_builds_with_the_script_and_runs_wasp_as_uid_1337() {
    let text = std::fs::read_to_string(root().join("examples/deploy/Dockerfile")).expect("Dockerfile");
    // Instructions, with continuation lines joined and comments dropped.
    let joined =
        text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n").replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (op, rest) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            (op.to_uppercase(), rest.trim().to_string())
        })
        .collect();
    let all = |op: &str| instructions.iter().filter(|(o, _)| o == op).map(|(_, r)| r.as_str()).collect::<Vec<_>>();
    let one = |op: &str| {
        let found = all(op);
        assert_eq!(found.len(), 1, "{op}: {found:?}");
        found[0]
    };

    let froms = all("FROM");
    assert_eq!(froms.len(), 2, "a builder and a runtime stage: {froms:?}");
    assert!(froms[0].starts_with("rust:1.95") && froms[0].ends_with(" AS builder"), "{}", froms[0]);
    // Both stages on the same Debian release: the binary needs the runtime's glibc.
    let release = |from: &str| ["bookworm", "trixie"].into_iter().find(|r| from.contains(r));
    assert!(release(froms[0]).is_some() && release(froms[0]) == release(froms[1]), "{froms:?}");

    let builds: Vec<&str> = all("RUN").into_iter().filter(|r| r.contains("build-image-root.sh")).collect();
    assert_eq!(builds, ["examples/deploy/build-image-root.sh /out"]);
    assert!(all("RUN").iter().all(|r| !r.contains("cargo ")), "the script is the build: {:?}", all("RUN"));
    assert!(all("COPY").contains(&"--from=builder /out /"), "{:?}", all("COPY"));
    assert_eq!(one("USER"), "1337:1337");
    assert_eq!(one("ENTRYPOINT"), r#"["/usr/local/bin/wasp"]"#);
    assert_eq!(one("CMD"), r#"["run", "--config", "/etc/wasp/wasp.yaml"]"#);
    assert!(one("HEALTHCHECK").contains(r#"CMD ["/usr/local/bin/wasp", "probe", "http://127.0.0.1:9901/"#));

    // EXPOSE names exactly the default config's listener and admin ports.
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root().join("examples/deploy/wasp.yaml")).expect("config"))
            .expect("yaml");
    let port = |a: &serde_yaml_ng::Value| a.as_str().and_then(|a| a.rsplit_once(':')).map(|(_, p)| p.to_string());
    let mut ports: Vec<String> =
        config["listeners"].as_sequence().expect("listeners").iter().filter_map(|l| port(&l["address"])).collect();
    ports.extend(port(&config["admin"]["address"]));
    let mut exposed: Vec<String> = one("EXPOSE").split_whitespace().map(String::from).collect();
    ports.sort();
    exposed.sort();
    assert_eq!(exposed, ports);
}
