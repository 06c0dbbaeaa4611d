//! Filter hot reload through the real binary: module files replaced in
//! place, renamed over, and swapped the Kubernetes way under a continuous
//! request stream; bad files keep the previous version serving.

use crate::support::client;
use crate::support::filters::wasm;
use crate::support::load::{Load, Outcome, one_of};
use crate::support::{Running, TestProxy, Upstream, metrics, rename_over, wait_for_metric};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn proxy(upstream: &Upstream, module: &Path) -> Running {
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: r, cluster: app, filters: [marker] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - {{ name: marker, module: {} }}
"#,
        upstream.addr,
        module.display()
    );
    TestProxy::new(yaml).start()
}

fn marker(v: &str) -> Vec<u8> {
    std::fs::read(wasm(&format!("test-marker-{v}"))).expect("marker component")
}

/// Waits until a response carries `x-version: v` (the new version serves).
async fn wait_for_version(proxy: &Running, v: &str) -> Duration {
    let start = Instant::now();
    loop {
        let reply = client::get(&client::h1(), &proxy.url("ingress", "/")).await;
        if reply.header("x-version") == Some(v) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "version {v} never served");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn filters(proxy: &Running) -> serde_json::Value {
    client::get(&client::h1(), &proxy.admin_url("/filters")).await.json()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_a_filter_50_times_under_load_fails_no_request() {
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("marker.wasm");
    let (a, b) = (marker("a"), marker("b"));
    std::fs::write(&module, &a).expect("write");
    let proxy = proxy(&upstream, &module);

    let load = Load::start(proxy.url("ingress", "/"), 6, |r| one_of(r, "x-version", &["a", "b"]));

    let mut latencies = Vec::new();
    for i in 0..50 {
        let (bytes, v) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
        if i % 4 < 2 {
            rename_over(&module, bytes);
        } else {
            std::fs::write(&module, bytes).expect("write in place");
        }
        latencies.push(wait_for_version(&proxy, v).await);
    }
    let Outcome { ok, bad } = load.finish().await;
    let failures: Vec<String> = proxy.stderr_lines().into_iter().filter(|l| l.contains("filter failed")).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed or mixed versions: {:?}\nwasp logged: {failures:?}",
        bad.len(),
        ok + bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(ok > 100, "the request stream ran ({ok} requests)");
    latencies.sort();
    eprintln!("reload to serving: p50 {:?}, max {:?}", latencies[25], latencies[49]);

    let status = filters(&proxy).await;
    assert_eq!(status["generation"], 51, "{status}");
    assert_eq!(status["last_error"], serde_json::Value::Null);
    assert_eq!(status["sha256"].as_str().map(str::len), Some(64));
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_reloads_total{filter=\"marker\",result=\"ok\"} 50"), "{m}");
    assert!(m.contains("wasp_filter_generation{filter=\"marker\"} 51"), "{m}");
    let log = proxy.access_log();
    assert!(log.iter().any(|l| l["filters"]["marker"] == 51), "the access log names the generation");
}

#[tokio::test]
async fn bad_files_keep_the_previous_version_serving_and_are_counted() {
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("marker.wasm");
    std::fs::write(&module, marker("a")).expect("write");
    let proxy = proxy(&upstream, &module);
    let bad: [(&str, Vec<u8>, &str); 3] = [
        ("garbage", b"\0asm but not really a component".to_vec(), "not a valid WebAssembly component"),
        ("wrong WIT", std::fs::read(wasm("test-wrong-version")).expect("read"), "wasp:filter@9.0.0"),
        ("init trap", std::fs::read(wasm("test-init-trap")).expect("read"), "init failed"),
    ];
    for (n, (what, bytes, reason)) in bad.iter().enumerate() {
        rename_over(&module, bytes);
        wait_for_metric(&proxy, &format!("wasp_filter_reloads_total{{filter=\"marker\",result=\"error\"}} {}", n + 1))
            .await;
        let reply = client::get(&client::h1(), &proxy.url("ingress", "/")).await;
        assert_eq!((reply.status.as_u16(), reply.header("x-version")), (200, Some("a")), "{what}");
        let status = filters(&proxy).await;
        assert_eq!(status["generation"], 1, "{what}");
        assert!(status["last_error"].as_str().is_some_and(|e| e.contains(reason)), "{what}: {status}");
    }
    std::fs::remove_file(&module).expect("delete");
    proxy.wait_stderr("filter module unreadable; the loaded version keeps serving");
    let reply = client::get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(reply.header("x-version"), Some("a"), "a deleted file keeps the loaded version");
    std::fs::write(&module, marker("b")).expect("write");
    wait_for_version(&proxy, "b").await;
    assert_eq!(filters(&proxy).await["generation"], 2);
}

#[tokio::test]
async fn a_kubernetes_volume_swap_reloads_the_filter() {
    // A ConfigMap volume: marker.wasm -> ..data/marker.wasm, ..data -> ..<timestamp>/
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let version = |name: &str, bytes: Vec<u8>| -> PathBuf {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("marker.wasm"), bytes).expect("write");
        d
    };
    version("..2026_11_22_a", marker("a"));
    std::os::unix::fs::symlink("..2026_11_22_a", dir.path().join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/marker.wasm", dir.path().join("marker.wasm")).expect("symlink");
    let proxy = proxy(&upstream, &dir.path().join("marker.wasm"));
    assert_eq!(client::get(&client::h1(), &proxy.url("ingress", "/")).await.header("x-version"), Some("a"));

    version("..2026_11_22_b", marker("b"));
    std::os::unix::fs::symlink("..2026_11_22_b", dir.path().join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
    wait_for_version(&proxy, "b").await;
}
