//! The rate-limit filter (filters/rate-limit) through the real binary.

use crate::support::client::{self, send};
use crate::support::filters::wasm;
use crate::support::metrics;
use crate::support::{Running, TestProxy, Upstream};
use http::Request;

fn proxy(upstream: std::net::SocketAddr, rate: &str, burst: u32) -> Running {
    proxy_with(upstream, rate, burst, "[log, metrics, clock, kv]")
}

fn proxy_with(upstream: std::net::SocketAddr, rate: &str, burst: u32, allow: &str) -> Running {
    TestProxy::new(format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: api, cluster: app, filters: [limit] }}
clusters:
  - {{ name: app, endpoints: ["{upstream}"] }}
filters:
  - name: limit
    module: {}
    config: {{ rate: {rate}, burst: {burst}, key: "header:x-api-key" }}
    allow: {allow}
"#,
        wasm("rate-limit").display()
    ))
    .start()
}

async fn call(proxy: &Running, path: &str, key: &str) -> client::Reply {
    let req = Request::builder()
        .uri(proxy.url("ingress", path))
        .header("x-api-key", key)
        .body(client::empty())
        .expect("request");
    send(&client::h1(), req).await.expect("send")
}

#[tokio::test]
async fn a_key_over_its_burst_gets_429_with_retry_after_and_others_are_unaffected() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(upstream.addr, "0.5", 3);
    for left in [2, 1, 0] {
        let r = call(&proxy, "/", "alice").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        assert_eq!(r.header("ratelimit-remaining"), Some(left.to_string().as_str()));
    }
    let limited = call(&proxy, "/", "alice").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("2"), "one token takes 2 s at 0.5/s");
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert_eq!(limited.body, "rate limit exceeded\n");
    assert_eq!(call(&proxy, "/", "bob").await.status, 200, "another key has its own bucket");
    assert_eq!(upstream.hits(), 4, "the limited request never reached the upstream");
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_rate_limited_total{filter=\"limit\"} 1"), "{m}");
    let log = proxy.wait_access_log(5);
    assert!(log.iter().any(|l| l["status"] == 429 && l["filter"] == "limit" && l["reason"] == "wasp_filter_reply"));
}

/// Concurrent requests run on several instances; the shared store's
/// compare-and-swap keeps the bucket exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_is_exact_under_concurrency_across_instances() {
    let upstream = Upstream::start("app").await;
    upstream.set_delay(std::time::Duration::from_millis(100));
    let proxy = std::sync::Arc::new(proxy(upstream.addr, "0.001", 10));
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let p = proxy.clone();
        tasks.push(tokio::spawn(async move { call(&p, "/", "shared").await.status.as_u16() }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("join"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20, "{statuses:?}");
}

/// The key-value store is a capability: without `kv` in `allow`, the
/// filter's store calls trap and its failure policy applies.
#[tokio::test]
async fn a_capability_the_config_does_not_grant_is_refused() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy_with(upstream.addr, "10", 10, "[log, metrics, clock]");
    let r = call(&proxy, "/", "carol").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "wasp: request failed in a filter\n");
    assert_eq!(upstream.hits(), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !proxy.stderr_lines().iter().any(|l| l.contains("capability `kv` is not granted to filter")) {
        assert!(std::time::Instant::now() < deadline, "the log names the missing grant:\n{:?}", proxy.stderr_lines());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
