//! Requests and responses cross wasp intact over every protocol pairing,
//! with hop-by-hop headers removed and forwarding headers added.

use crate::support::client::{self, get, request, send};
use crate::support::{TestProxy, Upstream, one_route};
use http::{Method, Request};

async fn echo_through(down: &str, up: &str) {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], up, "", "")).start();
    let c = if down == "h2" { client::h2() } else { client::h1() };
    let reply = get(&c, &proxy.url("ingress", "/hello?x=1")).await;
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!(echo["path"], "/hello?x=1");
    let want = if up == "http2" { "HTTP/2.0" } else { "HTTP/1.1" };
    assert_eq!(echo["version"], want, "{down} -> {up}");
    let host = proxy.addr("ingress").to_string();
    let seen_host = echo["headers"]["host"].as_str().map(str::to_string);
    if up == "http1" {
        assert_eq!(seen_host.as_deref(), Some(host.as_str()), "Host reaches an HTTP/1 upstream");
    }
    assert_eq!(reply.header("x-upstream"), Some("app"));
}

#[tokio::test]
async fn h1_to_h1() {
    echo_through("h1", "http1").await;
}

#[tokio::test]
async fn h2_to_h1() {
    echo_through("h2", "http1").await;
}

#[tokio::test]
async fn h1_to_h2() {
    echo_through("h1", "http2").await;
}

#[tokio::test]
async fn h2_to_h2() {
    echo_through("h2", "http2").await;
}

/// The usual config with the listener trusting one proxy in front of it.
fn trusting(upstream: std::net::SocketAddr) -> String {
    one_route(&[upstream], "http1", "", "").replace("    routes:\n", "    trusted_hops: 1\n    routes:\n")
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarding_headers_added() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(trusting(upstream.addr)).start();
    let req = Request::builder()
        .uri(proxy.url("ingress", "/echo"))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-forwarded-for", "203.0.113.9")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("x-request-id", "req-42")
        .body(client::empty())
        .expect("request");
    let echo = send(&client::h1(), req).await.expect("send").json();
    let h = &echo["headers"];
    for gone in ["x-private", "keep-alive", "proxy-connection", "te"] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_eq!(h["x-request-id"], "req-42");
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["client"], "203.0.113.9", "the client the trusted hop reported: {}", log[0]);
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_and_shown_in_the_access_log() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let echo = get(&client::h1(), &proxy.url("ingress", "/echo")).await.json();
    let id = echo["headers"]["x-request-id"].as_str().expect("generated id").to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["request_id"], id.as_str());
}

#[tokio::test]
async fn methods_and_bodies_pass_through() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
        let reply = send(&client::h1(), request(method.clone(), &proxy.url("ingress", "/echo"), client::empty()))
            .await
            .expect("send");
        assert_eq!(reply.json()["method"], method.as_str());
    }
    let head = send(&client::h1(), request(Method::HEAD, &proxy.url("ingress", "/bytes/1000"), client::empty()))
        .await
        .expect("HEAD");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    assert!(head.body.is_empty());
}

/// By default the peer is the client: what it claims about earlier hops and
/// its own request id reach the app replaced, not trusted.
#[tokio::test]
async fn an_untrusted_client_cannot_claim_forwarding_headers() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    for c in [client::h1(), client::h2()] {
        let req = Request::builder()
            .uri(proxy.url("ingress", "/echo"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-request-id", "chosen-by-client")
            .body(client::empty())
            .expect("request");
        let reply = send(&c, req).await.expect("send");
        let h = &reply.json()["headers"];
        assert_eq!(h["x-forwarded-proto"], "http", "the listener's real scheme: {h}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "only the peer: {h}");
        let id = h["x-request-id"].as_str().expect("an id");
        assert_ne!(id, "chosen-by-client");
    }
    let log = proxy.wait_access_log(2);
    assert!(log.iter().all(|l| l.get("client").is_none()), "the peer is the client: {log:?}");
}
