//! The compiled-filter cache: a restart with unchanged filters loads their
//! compiled code from disk instead of compiling again.

use crate::support::client;
use crate::support::filters::wasm;
use crate::support::{Running, TestProxy, Upstream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

fn proxy(upstream: &Upstream, cache: &str) -> Running {
    TestProxy::new(format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
filter_cache: {cache}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: r, cluster: app, filters: [hr, rl] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - {{ name: hr, module: {} }}
  - {{ name: rl, module: {}, allow: [log, metrics, clock, kv], config: {{ rate: 1000, burst: 1000 }} }}
"#,
        upstream.addr,
        wasm("header-rewrite").display(),
        wasm("rate-limit").display()
    ))
    .start()
}

/// The compiled artifacts in `dir` (not wasmtime's usage counters), with their modification times.
fn artifacts(dir: &Path) -> Vec<(String, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let (path, meta) = (entry.path(), entry.metadata().expect("metadata"));
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_none() && !path.to_string_lossy().contains(".cleanup") {
                out.push((path.display().to_string(), meta.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}

fn started(proxy: &Running) -> serde_json::Value {
    serde_json::from_str(&proxy.wait_stderr("\"wasp started\"")).expect("JSON log")
}

#[tokio::test]
async fn a_restart_with_unchanged_filters_does_not_compile_them_again() {
    let upstream = Upstream::start("app").await;
    let cache = tempfile::tempdir().expect("tempdir");
    let first = proxy(&upstream, &cache.path().display().to_string());
    let cold = started(&first);
    assert_eq!(cold["filter_cache"], cache.path().display().to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while artifacts(cache.path()).len() < 2 {
        assert!(Instant::now() < deadline, "two compiled filters cached: {:?}", artifacts(cache.path()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let compiled = artifacts(cache.path());
    let in_proxy =
        |p: &Running| p.stderr_lines().into_iter().filter(|l| l.contains("in the proxy")).collect::<Vec<_>>();
    assert_eq!(in_proxy(&first), Vec::<String>::new(), "compiled by the child process, loaded from the cache");
    drop(first);

    let second = proxy(&upstream, &cache.path().display().to_string());
    let reply = client::get(&client::h1(), &second.url("ingress", "/")).await;
    assert_eq!(reply.status, 200, "{:?} {:?}", reply.body, second.stderr_lines());
    assert_eq!(artifacts(cache.path()), compiled, "the second start wrote no new compiled code");
    eprintln!("start: {} ms compiling, {} ms from the cache", cold["startup_ms"], started(&second)["startup_ms"]);
}

#[tokio::test]
async fn filter_cache_off_is_reported() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, "off");
    assert_eq!(started(&proxy)["filter_cache"], serde_json::Value::Null);
}

/// A module that takes longer than `filter_compile_timeout` to compile is
/// refused with that reason: the compile process is stopped, the proxy does
/// not start on a filter it could not load.
#[tokio::test]
async fn a_compile_over_the_timeout_is_stopped_and_refused() {
    let cache = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
filter_cache: {}
filter_compile_timeout: 1ms
listeners:
  - {{ name: ingress, address: 127.0.0.1:0, routes: [{{ name: r, cluster: app, filters: [hr] }}] }}
clusters:
  - {{ name: app, endpoints: ["127.0.0.1:1"] }}
filters:
  - {{ name: hr, module: {} }}
"#,
        cache.path().display(),
        wasm("header-rewrite").display()
    );
    for stderr in crate::support::refused(&yaml) {
        assert!(
            stderr.contains("header_rewrite.wasm: compiling it took longer than filter_compile_timeout (1ms); stopped"),
            "{stderr}"
        );
    }
    assert!(artifacts(cache.path()).is_empty(), "the stopped compile cached nothing: {:?}", artifacts(cache.path()));
}
