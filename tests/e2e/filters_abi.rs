//! The two filter ABIs through the real binary: components built for
//! `wasp:filter@0.1.0` (binaries kept in tests/filters/abi-0.1) keep
//! working unchanged beside 0.2 ones; a hostile 0.2 filter
//! (tests/filters/raw-edits, no SDK checks) cannot get an invalid edit
//! applied, never has an unregistered phase called, and cannot register
//! standing edits wasp would not make itself; and a filter with no
//! response phase does not hold an instance for the upstream round trip.

use crate::filters_header_rewrite::rewrites_through;
use crate::support::client::{self, get, send};
use crate::support::filters::wasm;
use crate::support::metrics;
use crate::support::{TestProxy, Upstream};
use http::{Method, Request};
use std::path::PathBuf;
use std::time::Duration;

/// A 0.1 build kept as a fixture (see tests/filters/abi-0.1/README.md).
fn abi_0_1(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/filters/abi-0.1").join(format!("{name}.wasm"))
}

fn one_filter(upstream: &Upstream, module: &std::path::Path, extra: &str, config: &str) -> String {
    format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
{extra}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    trusted_hops: 1
    routes:
      - {{ name: api, match: {{ prefix: / }}, cluster: app, filters: [f] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - name: f
    module: {}
    {config}
"#,
        upstream.addr,
        module.display()
    )
}

fn counter(m: &str, line: &str) -> u64 {
    m.lines().find(|l| l.starts_with(line)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_header_rewrite_built_for_0_1_still_rewrites_requests_and_responses() {
    let (_upstream, proxy) = rewrites_through(&abi_0_1("header_rewrite")).await;
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_duration_seconds_count{filter=\"rewrite\",phase=\"response_headers\"} 1"), "{m}");
    let status = get(&client::h1(), &proxy.admin_url("/filters")).await.json()[0].clone();
    assert_eq!(status["abi"], "0.1.0", "/filters says which ABI serves it: {status}");
}

#[tokio::test]
async fn a_body_filter_built_for_0_1_still_sees_whole_and_streamed_bodies() {
    let upstream = Upstream::start("app").await;
    let buffered = r#"config: { request: buffer, response: buffer, deny: forbidden }"#;
    let proxy = TestProxy::new(one_filter(&upstream, &abi_0_1("body"), "", buffered)).start();
    let post =
        |path: &str, body: &'static str| client::request(Method::POST, &proxy.url("ingress", path), client::full(body));
    let reply = send(&client::h1(), post("/reflect", "hello body")).await.expect("send");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "HELLO BODY", "upper-cased on the way up (and again on the way down)");
    assert_eq!(reply.header("x-request-length"), Some("10"));
    let denied = send(&client::h1(), post("/reflect", "a forbidden word")).await.expect("send");
    assert_eq!(denied.status, 403, "a reply from the 0.1 body phase");
    drop(proxy);

    let streamed = r#"config: { response: stream }"#;
    let yaml = one_filter(&upstream, &abi_0_1("body"), "", streamed);
    // Trailers come from the upstream over HTTP/2.
    let yaml = yaml.replace(r#"endpoints: [""#, r#"protocol: http2, endpoints: [""#);
    let proxy = TestProxy::new(yaml).start();
    let reply = get(&client::h2(), &proxy.url("ingress", "/trailers")).await;
    assert_eq!(reply.body, "HELLO");
    let t = reply.trailers.expect("trailers");
    assert_eq!(t["x-seen-grpc-status"], "0", "the 0.1 filter read the upstream's trailer");
    assert!(t.contains_key("x-chunks"), "and set its own: {t:?}");
}

#[tokio::test]
async fn valid_0_2_edits_are_applied_natively_and_unregistered_phases_never_run() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_filter(&upstream, &wasm("test-raw-edits"), "", "on_error: fail-closed")).start();
    let req = Request::builder()
        .uri(proxy.url("ingress", "/ok"))
        .header("x-probe", "p")
        .body(client::empty())
        .expect("request");
    let reply = send(&client::h1(), req).await.expect("send");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-raw-response"), Some("1"), "a response edit from the request phase");
    assert_eq!(reply.header("x-upstream"), None, "a response removal from the request phase");
    assert_eq!(reply.header("host"), Some("not an/authority"), "a response's host is a plain header");
    let echo = reply.json();
    assert_eq!(echo["path"], "/rewritten?q=1");
    assert_eq!(echo["method"], "PUT");
    let h = &echo["headers"];
    assert_eq!(h["host"], "rewritten.example:8080");
    assert_eq!(h["x-raw"], "1");
    assert_eq!(h["x-raw-list"], "a|b");
    assert_eq!(h["x-probed"], "p", "renamed natively");
    assert!(h.get("x-probe").is_none(), "{h}");
    let m = metrics(&proxy).await;
    assert_eq!(
        counter(&m, "wasp_filter_errors_total{filter=\"f\",reason=\"trap\"}"),
        0,
        "no unregistered phase ran:\n{m}"
    );
    assert_eq!(counter(&m, "wasp_filter_duration_seconds_count{filter=\"f\",phase=\"response_headers\"}"), 0);
}

#[tokio::test]
async fn a_0_2_phase_gets_only_the_facts_and_headers_it_registered() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_filter(&upstream, &wasm("test-raw-edits"), "", "")).start();
    let req = Request::builder()
        .uri(proxy.url("ingress", "/seen"))
        .header("x-probe", "one")
        .header("x-other", "secret")
        .header("authorization", "Bearer t")
        .body(client::empty())
        .expect("request");
    let reply = send(&client::h1(), req).await.expect("send");
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        "headers=x-probe=one method=None request_id=None peer=None route=None\n"
    );
}

/// Each vector: an outcome with `x-marker: 1` then one invalid edit. The
/// filter is fail-open, so the request goes on, without any of its edits.
#[tokio::test]
async fn an_invalid_0_2_outcome_is_refused_whole() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_filter(&upstream, &wasm("test-raw-edits"), "", "on_error: fail-open")).start();
    let vectors = [
        "framing",
        "transfer-encoding",
        "connection",
        "rename-to-framing",
        "bad-name",
        "bad-value",
        "host-crlf",
        "authority",
        "path",
        "path-crlf",
        "method",
        "status-on-request",
        "body-in-headers-phase",
        "trailer-in-headers-phase",
        "read-unregistered-body",
        "response-edit-body",
        "response-edit-framing",
        "response-edit-status",
        "wait-without-call",
    ];
    let invalid = "wasp_filter_errors_total{filter=\"f\",reason=\"invalid_output\"}";
    for (i, v) in vectors.iter().enumerate() {
        let path = format!("/v/{v}");
        let req = Request::builder()
            .uri(proxy.url("ingress", &path))
            .header("x-probe", "p")
            .body(client::empty())
            .expect("request");
        let reply = send(&client::h1(), req).await.expect("send");
        assert_eq!(reply.status, 200, "{v}: fail-open goes on");
        assert_eq!(
            reply.header("content-length").map(|l| l.parse::<usize>().ok()),
            Some(Some(reply.body.len())),
            "{v}"
        );
        let echo = reply.json();
        assert_eq!(echo["path"], path.as_str(), "{v}: the path is the client's");
        assert_eq!(echo["method"], "GET", "{v}");
        let h = &echo["headers"];
        assert!(h.get("x-marker").is_none(), "{v}: no edit of a refused outcome applies: {h}");
        assert!(h.get("x-injected").is_none() && h.get("x-v").is_none(), "{v}: {h}");
        assert_eq!(h["x-probe"], "p", "{v}");
        assert!(h.get("content-length").is_none() && h.get("transfer-encoding").is_none(), "{v}: {h}");
        assert_eq!(reply.header("x-upstream"), Some("app"), "{v}: the response is the upstream's, untouched");
        let m = metrics(&proxy).await;
        assert_eq!(counter(&m, invalid), i as u64 + 1, "{v}: counted once as invalid output");
    }
    drop(proxy);

    let proxy = TestProxy::new(one_filter(&upstream, &wasm("test-raw-edits"), "", "on_error: fail-closed")).start();
    let hits = upstream.hits();
    let reply = get(&client::h1(), &proxy.url("ingress", "/v/framing")).await;
    assert_eq!(reply.status, 500, "fail-closed: the request fails");
    assert_eq!(upstream.hits(), hits, "and never reaches the upstream");
}

/// A 0.2 filter without a response phase gives its instance back when its
/// request phase returns, so slow upstream requests do not use up
/// `filter_instances`; a 0.1 filter holds its instance for the round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_not_held_for_the_upstream_round_trip_without_a_response_phase() {
    let upstream = Upstream::start("app").await;
    // The path prefix gives header-rewrite a request phase (its header rules
    // alone are standing edits, which take no instance at all).
    let config = r#"config: { request: { set: { x-id: "{request_id}" } }, response: { add: { x-seen: "1" } }, path_prefix: { from: /delay, to: /delay } }"#;
    for (module, expect_all_ok) in [(wasm("header-rewrite"), true), (abi_0_1("header_rewrite"), false)] {
        let yaml = one_filter(&upstream, &module, "filter_instances: 2", config);
        let proxy = TestProxy::new(yaml).start();
        let url = proxy.url("ingress", "/delay/600");
        let mut slow = Vec::new();
        for _ in 0..6 {
            let u = url.clone();
            slow.push(tokio::spawn(async move { get(&client::h1(), &u).await }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut statuses = Vec::new();
        for s in slow {
            let reply = s.await.expect("join");
            if reply.status == 200 {
                assert_eq!(reply.header("x-seen"), Some("1"), "{}", module.display());
            }
            statuses.push(reply.status.as_u16());
        }
        let all_ok = statuses.iter().all(|&s| s == 200);
        assert_eq!(all_ok, expect_all_ok, "{}: {statuses:?}", module.display());
    }
}

/// Standing edits are wasp's: made before the filter's request phase, from
/// the request as it reached the filter, and still made when that phase
/// fails (fail-open).
#[tokio::test]
async fn standing_edits_are_made_by_wasp_around_the_filter_phase() {
    let upstream = Upstream::start("app").await;
    let proxy =
        TestProxy::new(one_filter(&upstream, &wasm("test-raw-edits"), "", "config: standing\n    on_error: fail-open"))
            .start();
    let req = |path: &str| {
        Request::builder()
            .uri(proxy.url("ingress", path))
            .header("x-probe", "p")
            .header("x-drop", "secret")
            .header("x-request-id", "rid-9")
            .body(client::empty())
            .expect("request")
    };
    for path in ["/ok", "/v/framing"] {
        let reply = send(&client::h1(), req(path)).await.expect("send");
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("x-standing-response"), Some("id=rid-9"), "{path}");
        let echo = reply.json();
        let h = &echo["headers"];
        assert_eq!(h["x-standing"], format!("api:{path}"), "{path}: filled in before the phase ran");
        assert!(h.get("x-drop").is_none(), "{path}: {h}");
        if path == "/ok" {
            assert_eq!(echo["path"], "/rewritten?q=1", "then the phase's own edits");
            assert_eq!(reply.header("x-raw-response"), Some("1"));
        } else {
            assert!(h.get("x-marker").is_none(), "the failed phase's edits are not: {h}");
        }
    }
}

/// A filter cannot register a standing edit wasp would refuse in a phase's
/// outcome: the load fails, naming the edit and the reason.
#[tokio::test]
async fn a_standing_edit_wasp_would_refuse_fails_the_load() {
    let upstream = Upstream::start("app").await;
    let cases = [
        ("standing-framing", "request-edits[0]: header \"content-length\" is managed by wasp"),
        ("standing-crlf", "request-edits[0]: invalid text \"a\\r\\nx-injected: 1\" in the value of x-v"),
        ("standing-bad-name", "request-edits[0]: invalid header name \"bad name\""),
        ("standing-second-host", "request-edits[0]: a request has one host"),
        ("standing-response-hop-by-hop", "response-edits[0]: header \"transfer-encoding\" is managed by wasp"),
    ];
    for (config, message) in cases {
        let yaml = one_filter(&upstream, &wasm("test-raw-edits"), "", &format!("config: {config}"));
        for stderr in crate::support::refused(&yaml) {
            assert!(stderr.contains(&format!("invalid registration: {message}")), "{config}: {stderr}");
        }
    }
}
