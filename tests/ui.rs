//! Golden tests of `wasp check`: every `tests/ui/invalid/*.yaml` must fail
//! with exactly the text in its `.stderr` twin, and every config in
//! `tests/ui/valid/` and `examples/` must pass. `BLESS=1` rewrites the
//! expected files from the current output.

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &str, exts: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)))
        .collect();
    out.sort();
    out
}

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .env("XDG_CACHE_HOME", concat!(env!("CARGO_TARGET_TMPDIR"), "/cache"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("run wasp");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn invalid_configs_report_every_error_with_its_path() {
    let cases = files("tests/ui/invalid", &["yaml", "json"]);
    assert!(cases.len() >= 10, "expected the golden cases, found {cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let (ok, _, stderr) = check(&case);
        let golden = case.with_extension("stderr");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&golden, &stderr).expect("bless");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| format!("<missing {}>", golden.display()));
        if ok || stderr != want {
            failures.push(format!("{}:\n--- want\n{want}--- got (exit ok={ok})\n{stderr}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_configs_and_every_example_pass() {
    let mut cases = files("tests/ui/valid", &["yaml", "json"]);
    cases.extend(files("examples", &["yaml"]));
    assert!(cases.len() >= 3);
    for case in cases {
        let (ok, stdout, stderr) = check(&case);
        assert!(ok, "{}:\n{stderr}", case.display());
        assert!(stdout.ends_with(": ok\n"), "{stdout}");
    }
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasp")).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("wasp {}\n", env!("CARGO_PKG_VERSION")));
    let out =
        Command::new(env!("CARGO_BIN_EXE_wasp")).args(["run", "--config", "/nonexistent.yaml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml: cannot read config file"));
}
