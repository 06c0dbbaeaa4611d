//! Golden tests of `wasp inject`, running the real binary: every
//! `tests/inject/*.yaml` must turn into exactly its `.out.yaml` twin, and
//! injecting that output again must change nothing; every
//! `tests/inject/invalid/*.yaml` must fail with exactly the text in its
//! `.stderr` twin and write nothing to stdout. A case's first line may be
//! `# args: ...` (extra flags). `BLESS=1` rewrites the expected files.
//! Every `wasp.io/config` that inject generated must pass `wasp check`.

use serde_yaml_ng::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("tests").join("inject")
}

fn cases(sub: &str) -> Vec<PathBuf> {
    let root = dir().join(sub);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".yaml") && !p.to_string_lossy().ends_with(".out.yaml"))
        .collect();
    out.sort();
    out
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `wasp inject` in tests/inject on `case` (a relative path), or on stdin.
fn inject(case: &Path, stdin: Option<&str>) -> Run {
    let text = std::fs::read_to_string(dir().join(case)).expect("read case");
    let args: Vec<&str> =
        text.lines().next().and_then(|l| l.strip_prefix("# args:")).unwrap_or("").split_whitespace().collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasp"));
    cmd.current_dir(dir()).arg("inject").args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match stdin {
        Some(_) => cmd.stdin(Stdio::piped()),
        None => cmd.arg(case).stdin(Stdio::null()),
    };
    let mut child = cmd.spawn().expect("run wasp");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    Run { ok: out.status.success(), stdout: text(&out.stdout), stderr: text(&out.stderr) }
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(dir()).expect("under tests/inject").to_path_buf()
}

#[test]
fn workloads_are_injected_as_the_golden_files_say_and_only_once() {
    let cases = cases("");
    assert!(cases.len() >= 10, "expected the golden cases, found {cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let run = inject(&relative(&case), None);
        let golden = PathBuf::from(case.to_string_lossy().replace(".yaml", ".out.yaml"));
        if !run.ok {
            failures.push(format!("{}: failed:\n{}", case.display(), run.stderr));
            continue;
        }
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&golden, &run.stdout).expect("bless");
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| format!("<missing {}>", golden.display()));
        if run.stdout != want {
            failures.push(format!("{}:\n--- want\n{want}--- got\n{}", case.display(), run.stdout));
            continue;
        }
        let again = inject(&relative(&case), Some(&run.stdout));
        if !again.ok || again.stdout != run.stdout {
            failures.push(format!(
                "{}: injecting the output again changed it:\n{}{}",
                case.display(),
                again.stdout,
                again.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn already_injected_input_comes_back_byte_for_byte() {
    let case = Path::new("already-injected.yaml");
    let input = std::fs::read_to_string(dir().join(case)).expect("read");
    let run = inject(case, None);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, input);
}

#[test]
fn invalid_inputs_fail_with_where_and_what_was_expected() {
    let cases = cases("invalid");
    assert!(cases.len() >= 8, "expected the golden cases, found {cases:?}");
    let mut failures = Vec::new();
    for case in cases {
        let run = inject(&relative(&case), None);
        let golden = case.with_extension("stderr");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&golden, &run.stderr).expect("bless");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| format!("<missing {}>", golden.display()));
        if run.ok || run.stderr != want || !run.stdout.is_empty() {
            failures.push(format!(
                "{}:\n--- want\n{want}--- got (exit ok={})\n{}{}",
                case.display(),
                run.ok,
                run.stderr,
                run.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every `wasp.io/config` annotation in a value (any depth).
fn embedded_configs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("wasp.io/config"), Value::String(config)) => out.push(config.clone()),
                    _ => embedded_configs(v, out),
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| embedded_configs(v, out)),
        _ => {}
    }
}

#[test]
fn every_generated_config_passes_wasp_check() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases("") {
        let golden = std::fs::read_to_string(case.to_string_lossy().replace(".yaml", ".out.yaml")).expect("golden");
        let mut configs = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&golden) {
            embedded_configs(&serde::Deserialize::deserialize(doc).expect("output parses"), &mut configs);
        }
        for (i, config) in configs.into_iter().enumerate() {
            let path = tmp.path().join(format!("{}-{i}.yaml", relative(&case).display()));
            std::fs::write(&path, config).expect("write");
            let out = Command::new(env!("CARGO_BIN_EXE_wasp"))
                .env("XDG_CACHE_HOME", tmp.path().join("cache"))
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .expect("run wasp check");
            checked += 1;
            if !out.status.success() {
                failures.push(format!("{}:\n{}", path.display(), String::from_utf8_lossy(&out.stderr)));
            }
        }
    }
    assert!(checked >= 8, "only {checked} generated configs found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
