//! Every config and manifest in examples/ is loaded by a test: `wasp check`
//! on each wasp config (with its filters where the deployment puts them),
//! and structural checks of the Kubernetes manifests (there is no cluster
//! on CI), which `wasp inject`'s output must pass too.

use super::support::filters;
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()) {
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(config: &Path) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .env("XDG_CACHE_HOME", concat!(env!("CARGO_TARGET_TMPDIR"), "/cache"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run wasp check");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
}

/// The image's default config: checked in the image tree (tests/e2e/image.rs).
const IMAGE_CONFIG: &str = "examples/deploy/wasp.yaml";
/// The pod's config: checked with its filters beside it, as the ConfigMap mounts them.
const K8S_CONFIG: &str = "examples/deploy/k8s/wasp.yaml";
const K8S_MANIFEST: &str = "examples/deploy/k8s/app.yaml";

#[test]
fn every_yaml_in_examples_is_a_checked_config_or_a_checked_manifest() {
    let mut failures = Vec::new();
    for path in yaml_files(&root().join("examples")) {
        let rel = path.strip_prefix(root()).expect("under root").to_string_lossy().replace('\\', "/");
        let docs = documents(&read(&path));
        let is_config = docs.len() == 1 && docs[0].get("listeners").is_some();
        let is_manifest =
            !docs.is_empty() && docs.iter().all(|d| d.get("apiVersion").is_some() && d.get("kind").is_some());
        match (is_config, is_manifest) {
            (true, _) if rel == IMAGE_CONFIG || rel == K8S_CONFIG => {} // checked where they are deployed
            (true, _) => {
                if let Err(e) = check(&path) {
                    failures.push(format!("{rel}:\n{e}"));
                }
            }
            (false, true) => assert_eq!(rel, K8S_MANIFEST, "a new manifest: give it structural checks here"),
            // Prometheus rules: every metric they use is checked against a running wasp there.
            (false, false) if rel == "examples/observability/alerts.yaml" && docs[0].get("groups").is_some() => {}
            (false, false) => failures.push(format!("{rel}: neither a wasp config nor Kubernetes objects")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The ConfigMap keys of the walkthrough's `kubectl create configmap` commands.
fn configmap_keys(readme: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = readme.lines().filter(|l| l.starts_with("kubectl create configmap wasp-config ")).collect();
    assert!(!lines.is_empty(), "the walkthrough creates the ConfigMap");
    let mut seen = BTreeSet::new();
    for line in &lines {
        let keys: Vec<(String, String)> = line
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("--from-file="))
            .map(|f| match f.split_once('=') {
                Some((k, p)) => (k.to_string(), p.to_string()),
                None => (Path::new(f).file_name().expect("name").to_string_lossy().to_string(), f.to_string()),
            })
            .collect();
        seen.insert(keys);
    }
    assert_eq!(seen.len(), 1, "every ConfigMap command in the walkthrough creates the same keys: {seen:?}");
    seen.into_iter().next().expect("one")
}

fn k8s_config() -> Value {
    serde_yaml_ng::from_str(&read(&root().join(K8S_CONFIG))).expect("k8s wasp.yaml")
}

#[test]
fn the_configmap_holds_exactly_the_config_and_the_modules_it_names() {
    let keys = configmap_keys(&read(&root().join("examples/deploy/k8s/README.md")));
    let config = k8s_config();
    let mut want: BTreeSet<String> = ["wasp.yaml".to_string()].into();
    for f in config["filters"].as_sequence().expect("filters") {
        let module = f["module"].as_str().expect("module");
        assert!(!module.contains('/'), "{module}: a ConfigMap key is a file name beside wasp.yaml");
        want.insert(module.to_string());
    }
    let got: BTreeSet<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, want);
    // The files the command reads: the config, and the built filters.
    filters::wasm("header-rewrite");
    for (key, file) in &keys {
        assert!(root().join(file).is_file(), "{key}={file}: no such file after the build");
    }
    // Where kubectl is installed (it needs no cluster for this), the
    // walkthrough's own command: the config as data, the modules as binaryData.
    let readme = read(&root().join("examples/deploy/k8s/README.md"));
    let line = readme.lines().find(|l| l.starts_with("kubectl create configmap wasp-config ")).expect("command");
    let command = line.split(" | ").next().expect("create");
    let Ok(out) = Command::new("sh").arg("-c").arg(command).current_dir(root()).output() else { return };
    if out.status.code() == Some(127) {
        return; // no kubectl here
    }
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    let cm: Value = serde_yaml_ng::from_slice(&out.stdout).expect("ConfigMap YAML");
    let data: Vec<&str> = cm["data"].as_mapping().expect("data").keys().filter_map(Value::as_str).collect();
    assert_eq!(data, ["wasp.yaml"]);
    assert_eq!(cm["data"]["wasp.yaml"].as_str(), Some(read(&root().join(K8S_CONFIG)).as_str()));
    let binary: BTreeSet<String> =
        cm["binaryData"].as_mapping().expect("binaryData").keys().filter_map(Value::as_str).map(String::from).collect();
    want.remove("wasp.yaml");
    assert_eq!(binary, want, "binaryData keys are the modules wasp.yaml names");
}

#[test]
fn the_k8s_config_passes_check_with_its_filters_mounted_beside_it() {
    filters::wasm("header-rewrite");
    let mount = tempfile::tempdir().expect("tmp");
    for (key, file) in configmap_keys(&read(&root().join("examples/deploy/k8s/README.md"))) {
        std::fs::copy(root().join(&file), mount.path().join(&key)).expect("copy");
    }
    if let Err(e) = check(&mount.path().join("wasp.yaml")) {
        panic!("{K8S_CONFIG}:\n{e}");
    }
}

fn seconds(v: &Value) -> u64 {
    let s = v.as_str().expect("a duration");
    s.strip_suffix('s').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{s}: expected whole seconds"))
}

fn port_of(address: &Value) -> u64 {
    address.as_str().and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| p.parse().ok()).expect("ip:port")
}

fn names(v: &Value) -> Vec<&str> {
    v.as_sequence().map(|s| s.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// What must hold of every pod with wasp in it, against the config it runs
/// (`ours`: the app containers are ours too, and locked down as well).
/// Returns the wasp container's config volume.
fn check_pod(pod: &Value, config: &Value, ours: bool) -> Value {
    let spec = &pod["spec"];
    let admin = port_of(&config["admin"]["address"]);
    let init = spec["initContainers"].as_sequence().expect("initContainers");
    assert!(init.len() >= 2);
    assert_eq!(init[0]["name"], Value::from("wasp-init"), "interception comes first");
    assert_eq!(init[1]["name"], Value::from("wasp"), "then the sidecar");
    let (iptables, wasp) = (&init[0], &init[1]);
    assert!(spec["containers"].as_sequence().expect("containers").iter().all(|c| c["name"] != *"wasp"));

    // Interception: root, NET_ADMIN and NET_RAW only, excludes the admin port.
    let args = names(&iptables["args"]);
    assert_eq!(args[..2], ["iptables", "install"]);
    let arg =
        |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]).unwrap_or_else(|| panic!("{flag}"));
    assert_eq!(arg("--proxy-uid"), "1337");
    assert!(arg("--exclude-inbound-ports").split(',').any(|p| p == admin.to_string()));
    let listener_ports: Vec<u64> =
        config["listeners"].as_sequence().expect("listeners").iter().map(|l| port_of(&l["address"])).collect();
    assert!(listener_ports.contains(&arg("--inbound-port").parse().expect("port")));
    assert!(listener_ports.contains(&arg("--outbound-port").parse().expect("port")));
    // The real `wasp iptables install` accepts them (printing, not running, its commands).
    let dry = Command::new(env!("CARGO_BIN_EXE_wasp")).args(&args).arg("--dry-run").output().expect("run iptables");
    assert!(dry.status.success(), "{args:?}: {}", String::from_utf8_lossy(&dry.stderr));
    assert_eq!(iptables["securityContext"]["runAsUser"], Value::from(0));
    assert_eq!(names(&iptables["securityContext"]["capabilities"]["add"]), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(iptables["securityContext"]["readOnlyRootFilesystem"], Value::from(true));
    let run = iptables["volumeMounts"].as_sequence().and_then(|m| m.iter().find(|m| m["mountPath"] == *"/run"));
    let run = run.expect("a writable /run for iptables' lock file");
    assert!(
        spec["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == run["name"] && v.get("emptyDir").is_some())
    );

    // The sidecar: native, probed on the admin port, locked down.
    assert_eq!(wasp["restartPolicy"], Value::from("Always"));
    for (probe, path) in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(wasp[probe]["httpGet"]["path"], Value::from(path), "{probe}");
        assert_eq!(wasp[probe]["httpGet"]["port"], Value::from(admin), "{probe} is not on admin.address's port");
    }
    let sc = &wasp["securityContext"];
    assert_eq!(sc["runAsUser"], Value::from(1337));
    assert_eq!(sc["runAsNonRoot"], Value::from(true));
    assert_eq!(sc["readOnlyRootFilesystem"], Value::from(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::from(false));
    assert!(wasp["resources"]["requests"].is_mapping() && wasp["resources"]["limits"].is_mapping());
    assert!(
        config.get("admin").and_then(|a| a.get("ready_cluster")).is_none(),
        "the startupProbe would wait for the app"
    );

    // Nobody else has capabilities or root.
    let apps = spec["containers"].as_sequence().expect("containers").iter().filter(|_| ours);
    for c in init[1..].iter().filter(|c| ours || c["name"] == *"wasp").chain(apps) {
        let sc = &c["securityContext"];
        assert_eq!(names(&sc["capabilities"]["drop"]), ["ALL"], "{:?}", c["name"]);
        assert!(sc["capabilities"].get("add").is_none(), "{:?} adds capabilities", c["name"]);
        assert_ne!(sc["runAsUser"], Value::from(0), "{:?} runs as root", c["name"]);
    }

    // Shutdown: the grace period outlasts wasp's drain.
    let grace = spec.get("terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30);
    assert!(seconds(&config["drain_timeout"]) < grace, "drain_timeout must fit in the grace period");

    // The config: a directory mount at /etc/wasp, read by `run --config`.
    assert_eq!(names(&wasp["args"]), ["run", "--config", "/etc/wasp/wasp.yaml"]);
    let mounts = wasp["volumeMounts"].as_sequence().expect("volumeMounts");
    let mount = mounts.iter().find(|m| m["mountPath"] == *"/etc/wasp").expect("/etc/wasp mount");
    assert!(mount.get("subPath").is_none(), "a subPath mount never sees updates");
    let volume =
        spec["volumes"].as_sequence().expect("volumes").iter().find(|v| v["name"] == mount["name"]).expect("volume");
    volume.clone()
}

#[test]
fn the_k8s_manifest_runs_wasp_as_a_locked_down_native_sidecar() {
    let docs = documents(&read(&root().join(K8S_MANIFEST)));
    let deployment = docs.iter().find(|d| d["kind"] == *"Deployment").expect("a Deployment");
    let volume = check_pod(&deployment["spec"]["template"], &k8s_config(), true);
    assert_eq!(volume["configMap"]["name"], Value::from("wasp-config"));
    let service = docs.iter().find(|d| d["kind"] == *"Service").expect("a Service");
    assert_eq!(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]);
}

fn inject(args: &[&str], input: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_wasp")).arg("inject").args(args).arg(input).output().expect("inject");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    documents(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn injected_pods_pass_the_same_checks() {
    let input = root().join("tests/inject/exclusions.yaml");
    let docs = inject(&[], &input);
    let template = &docs[0]["spec"]["template"];
    let config: Value =
        serde_yaml_ng::from_str(template["metadata"]["annotations"]["wasp.io/config"].as_str().expect("config"))
            .expect("yaml");
    let volume = check_pod(template, &config, false);
    assert_eq!(
        volume["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        Value::from("metadata.annotations['wasp.io/config']")
    );
    assert_eq!(volume["downwardAPI"]["items"][0]["path"], Value::from("wasp.yaml"));

    // With --config-map, against the config that ConfigMap carries here.
    let docs = inject(&["--config-map", "wasp-config"], &input);
    let volume = check_pod(&docs[0]["spec"]["template"], &k8s_config(), false);
    assert_eq!(volume["configMap"]["name"], Value::from("wasp-config"));
}
