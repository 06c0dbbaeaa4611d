//! The ext-authz filter (filters/ext-authz) through the real binary, asking
//! a real authorization service (the test upstream's `/authz` handler) over
//! the filter's outbound HTTP call.

use crate::support::client::{self, send};
use crate::support::filters::wasm;
use crate::support::metrics;
use crate::support::{Running, TestProxy, Upstream, refused};
use http::Request;

/// A proxy whose route `/` goes to `app` through ext-authz asking `authz`.
fn proxy(app: &Upstream, authz: &str, config: &str) -> Running {
    proxy_granting(app, authz, config, "[authz]")
}

/// The same, with the filter allowed to call `http_clusters` (YAML list).
fn proxy_granting(app: &Upstream, authz: &str, config: &str, http_clusters: &str) -> Running {
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: r, cluster: app, filters: [authz] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
  - {{ name: authz, endpoints: ["{authz}"], connect_timeout: 200ms }}
filters:
  - name: authz
    module: {}
    config: {config}
    allow: [log, metrics, clock, kv]
    http_clusters: {http_clusters}
"#,
        app.addr,
        wasm("ext-authz").display()
    );
    TestProxy::new(yaml).start()
}

async fn call(proxy: &Running, token: &str, extra: &[(&str, &str)]) -> client::Reply {
    let mut req = Request::builder().uri(proxy.url("ingress", "/orders?id=7")).header("authorization", token);
    for (n, v) in extra {
        req = req.header(*n, *v);
    }
    send(&client::h1(), req.body(client::empty()).expect("request")).await.expect("send")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn allows_and_denies_as_the_service_answers() {
    let (app, authz) = (Upstream::start("app").await, Upstream::start("authz").await);
    let proxy =
        proxy(&app, &authz.addr.to_string(), r#"{ cluster: authz, path_prefix: /authz, upstream_headers: [x-user] }"#);
    let allowed = call(&proxy, "Bearer good", &[("x-user", "mallory")]).await;
    assert_eq!(allowed.status, 200);
    let echo = allowed.json();
    assert_eq!(echo["path"], "/orders?id=7");
    assert_eq!(echo["headers"]["x-user"], "alice", "the service's header replaces the client's");

    let denied = call(&proxy, "Bearer bad", &[]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "denied by authz\n", "the service's answer reaches the client");
    assert_eq!(denied.header("www-authenticate"), Some("Bearer realm=\"authz\""));
    assert_eq!(app.hits(), 1, "the denied request never reached the app");
    assert_eq!(authz.hits(), 2);
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_duration_seconds_count{filter=\"authz\",phase=\"call_response\"} 2"), "{m}");
}

#[tokio::test]
async fn decisions_are_cached_per_credential_for_the_ttl() {
    let (app, authz) = (Upstream::start("app").await, Upstream::start("authz").await);
    let proxy = proxy(&app, &authz.addr.to_string(), r#"{ cluster: authz, path_prefix: /authz, cache_ttl_ms: 60000 }"#);
    for _ in 0..3 {
        assert_eq!(call(&proxy, "Bearer good", &[]).await.status, 200);
        assert_eq!(call(&proxy, "Bearer bad", &[]).await.status, 403);
    }
    assert_eq!(authz.hits(), 2, "one check per credential, then the cache");
    assert_eq!(app.hits(), 3);
    let m = metrics(&proxy).await;
    assert_eq!(metric(&m, "wasp_filter_ext_authz_cache_hits_total"), 4, "{m}");
}

#[tokio::test]
async fn a_failing_service_denies_by_default_and_allows_when_configured() {
    let app = Upstream::start("app").await;
    let unreachable = "127.0.0.1:9"; // discard port: nothing listens
    let closed = proxy(&app, unreachable, r#"{ cluster: authz, status_on_error: 503 }"#);
    let reply = call(&closed, "Bearer good", &[]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "authorization service unavailable\n");
    let open = proxy(&app, unreachable, r#"{ cluster: authz, on_service_error: allow }"#);
    assert_eq!(call(&open, "Bearer good", &[]).await.status, 200);
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn a_slow_service_is_cut_off_at_the_check_timeout() {
    let (app, authz) = (Upstream::start("app").await, Upstream::start("authz").await);
    let proxy = proxy(&app, &authz.addr.to_string(), r#"{ cluster: authz, path_prefix: /authz, timeout_ms: 100 }"#);
    let start = std::time::Instant::now();
    let reply = call(&proxy, "Bearer slow", &[]).await;
    assert_eq!(reply.status, 403, "timed out: a service error, denied");
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "not held for the service's 2 s");
    // The filter's own log line: wasp adds the filter, the route and the request id.
    let line: serde_json::Value = serde_json::from_str(&proxy.wait_stderr("timed out after 100ms")).expect("JSON log");
    assert_eq!((line["filter"].as_str(), line["route"].as_str()), (Some("authz"), Some("r")), "{line}");
    assert!(line["request_id"].as_str().is_some_and(|id| id.len() >= 16), "{line}");
}

#[tokio::test]
async fn calling_a_cluster_the_config_does_not_list_is_refused() {
    let app = Upstream::start("app").await;
    // The filter asks cluster `app`, which its entry does not list.
    let proxy = proxy_granting(&app, "127.0.0.1:9", "{ cluster: app }", "[]");
    let reply = call(&proxy, "Bearer good", &[]).await;
    assert_eq!(reply.status, 500, "fail-closed: the call trapped");
    assert_eq!(app.hits(), 0);
    proxy.wait_stderr("add it to the filter's `http_clusters`");
    let errors = refused(&format!(
        "listeners:\n  - {{ name: i, address: 127.0.0.1:0, routes: [{{ name: r, cluster: c }}] }}\n\
         clusters:\n  - {{ name: c, endpoints: [\"127.0.0.1:1\"] }}\n\
         filters:\n  - {{ name: a, module: {}, http_clusters: [nope] }}\n",
        wasm("ext-authz").display()
    ));
    assert!(errors.iter().any(|e| e.contains("filters[0].http_clusters[0]: no cluster named \"nope\"")), "{errors:?}");
}
