//! The header-rewrite filter (filters/header-rewrite) through the real binary.

use crate::support::client::{self, send};
use crate::support::filters::wasm;
use crate::support::metrics;
use crate::support::{Running, TestProxy, Upstream, refused};
use http::Request;
use std::path::Path;

#[tokio::test]
async fn rewrites_request_and_response_headers_and_path_prefixes() {
    let (_upstream, proxy) = rewrites_through(&wasm("header-rewrite")).await;
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_duration_seconds_count{filter=\"rewrite\",phase=\"request_headers\"} 1"), "{m}");
}

/// Sends one request through header-rewrite built as `module` (this
/// tree's 0.2 build, or the 0.1 build kept in tests/filters/abi-0.1) with
/// request and response rules and a path prefix, and checks what the
/// upstream received and what the client got. Returns the proxy (and its
/// upstream) for further checks.
pub async fn rewrites_through(module: &Path) -> (Upstream, Running) {
    let upstream = Upstream::start("app").await;
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    trusted_hops: 1 # the test client's x-request-id is kept
    routes:
      - {{ name: api, match: {{ prefix: /old }}, cluster: app, filters: [rewrite] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - name: rewrite
    module: {}
    config:
      request:
        set: {{ x-trace: "req {{request_id}} from {{peer}} via {{route}}" }}
        add: {{ x-tag: "two" }}
        remove: [x-secret]
        rename: {{ x-legacy: x-modern }}
      response:
        add: {{ x-served-by: wasp }}
        remove: [x-upstream]
      path_prefix: {{ from: /old, to: /new }}
"#,
        upstream.addr,
        module.display()
    );
    let proxy = TestProxy::new(yaml).start();
    let req = Request::builder()
        .uri(proxy.url("ingress", "/old/users?x=1"))
        .header("x-request-id", "rid-7")
        .header("x-secret", "s3cret")
        .header("x-legacy", "v1")
        .header("x-tag", "one")
        .body(client::empty())
        .expect("request");
    let reply = send(&client::h1(), req).await.expect("send");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-served-by"), Some("wasp"));
    assert_eq!(reply.header("x-upstream"), None, "removed from the response");
    let echo = reply.json();
    assert_eq!(echo["path"], "/new/users?x=1");
    let h = &echo["headers"];
    let trace = h["x-trace"].as_str().expect("x-trace");
    let port = trace.strip_prefix("req rid-7 from 127.0.0.1:").and_then(|t| t.strip_suffix(" via api"));
    assert!(port.is_some_and(|p| p.parse::<u16>().is_ok()), "{trace}");
    assert_eq!(h["x-tag"], "one|two");
    assert_eq!(h["x-modern"], "v1");
    assert!(h.get("x-secret").is_none() && h.get("x-legacy").is_none(), "{h}");
    (upstream, proxy)
}

/// Header rules alone are standing edits: wasp makes them and never calls
/// the filter, so one instance serves any number of concurrent requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_alone_are_made_by_wasp_without_calling_the_filter() {
    let upstream = Upstream::start("app").await;
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
filter_instances: 1
listeners:
  - name: ingress
    address: 127.0.0.1:0
    trusted_hops: 1 # the test client's x-request-id is kept
    routes:
      - {{ name: api, cluster: app, filters: [rewrite] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - name: rewrite
    module: {}
    config:
      request:
        set: {{ x-trace: "{{request_id}}", x-where: "{{method}} {{host}}{{path}}" }}
        remove: [x-secret]
      response:
        set: {{ x-echo-id: "{{request_id}}" }}
"#,
        upstream.addr,
        wasm("header-rewrite").display()
    );
    let proxy = TestProxy::new(yaml).start();
    upstream.set_delay(std::time::Duration::from_millis(200));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = proxy.url("ingress", &format!("/items?i={i}"));
        tasks.push(tokio::spawn(async move {
            let id = format!("req-{i}");
            let req = Request::builder()
                .uri(url)
                .header("x-request-id", &id)
                .header("x-secret", "s")
                .body(client::empty())
                .expect("request");
            (i, id, send(&client::h1(), req).await.expect("send"))
        }));
    }
    for t in tasks {
        let (i, id, reply) = t.await.expect("join");
        assert_eq!(reply.status, 200, "one instance, eight requests in flight at once");
        assert_eq!(reply.header("x-echo-id"), Some(id.as_str()));
        let echo = reply.json();
        let h = &echo["headers"];
        assert_eq!(h["x-trace"], id.as_str());
        let host = h["host"].as_str().expect("host");
        assert_eq!(h["x-where"], format!("GET {host}/items?i={i}"));
        assert!(h.get("x-secret").is_none(), "{h}");
    }
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_duration_seconds_count{filter=\"rewrite\",phase=\"request_headers\"} 0"), "{m}");
    assert!(m.contains("wasp_filter_standing_values_left_out_total{filter=\"rewrite\"} 0"), "{m}");
}

#[tokio::test]
async fn a_config_the_filter_rejects_fails_the_load_with_its_message() {
    let config = |rules: &str| {
        format!(
            "listeners:\n  - {{ name: i, address: 127.0.0.1:0, routes: [{{ name: r, cluster: c, filters: [rw] }}] }}\n\
             clusters:\n  - {{ name: c, endpoints: [\"127.0.0.1:1\"] }}\n\
             filters:\n  - {{ name: rw, module: {}, config: {rules} }}\n",
            wasm("header-rewrite").display()
        )
    };
    let cases = [
        ("{ request: { set: { x: \"{nope}\" } } }", "request.set.x: unknown placeholder {nope}"),
        (
            "{ response: { set: { Content-Length: \"3\" } } }",
            "response.set: \"Content-Length\" is a framing or hop-by-hop header; wasp manages it",
        ),
        ("{ request: { add: { Host: a.example } } }", "request.add: a request has one host; use request.set.host"),
        ("{ request: { rename: { x-h: host } } }", "request.rename: a request has one host; use request.set.host"),
    ];
    for (rules, message) in cases {
        for stderr in refused(&config(rules)) {
            assert!(
                stderr.contains(&format!("filters[0].module: the filter rejected its config: {message}")),
                "{stderr}"
            );
        }
    }
}

/// A filter instance belongs to one request from its request phase to its
/// response phase: concurrent requests never see each other's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_keep_their_own_filter_state() {
    let upstream = Upstream::start("app").await;
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    trusted_hops: 1 # the test client's x-request-id is kept
    routes:
      - {{ name: api, cluster: app, filters: [rewrite] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - name: rewrite
    module: {}
    config: {{ response: {{ set: {{ x-echo-id: "{{request_id}}" }} }} }}
"#,
        upstream.addr,
        wasm("header-rewrite").display()
    );
    let proxy = TestProxy::new(yaml).start();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let url = proxy.url("ingress", &format!("/delay/{}", 50 + (i * 37) % 200));
        tasks.push(tokio::spawn(async move {
            let id = format!("req-{i}");
            let req = Request::builder().uri(url).header("x-request-id", &id).body(client::empty()).expect("request");
            let reply = send(&client::h1(), req).await.expect("send");
            (id, reply.header("x-echo-id").map(str::to_string))
        }));
    }
    for t in tasks {
        let (id, echoed) = t.await.expect("join");
        assert_eq!(echoed.as_deref(), Some(id.as_str()), "response phase saw another request's state");
    }
}
