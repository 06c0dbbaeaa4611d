//! Body phases through the real binary, with the test filter in
//! tests/filters/body: buffered and streamed request and response bodies,
//! the body limit, replies from a body phase, and trailers.

use crate::support::client::{self, send};
use crate::support::filters::wasm;
use crate::support::upstream::{Body, hex, pattern};
use crate::support::{TestProxy, Upstream};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};

/// A proxy with one route through the body test filter configured with `config`.
fn proxy(upstream: &Upstream, protocol: &str, config: &str, body_limit: &str) -> crate::support::Running {
    let entry = format!(
        "  - {{ name: body, module: {}, config: {config}, limits: {{ body: {body_limit} }} }}",
        wasm("test-body").display()
    );
    chain(upstream, protocol, "[body]", &entry)
}

/// A proxy with one route through `filters` (a YAML list of names), whose
/// entries are `entries` (YAML list items).
fn chain(upstream: &Upstream, protocol: &str, filters: &str, entries: &str) -> crate::support::Running {
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ name: r, cluster: app, filters: {filters} }}
clusters:
  - {{ name: app, endpoints: ["{}"], protocol: {protocol} }}
filters:
{entries}
"#,
        upstream.addr
    );
    TestProxy::new(yaml).start()
}

/// A request body sent in `chunks` frames of `size` bytes, with no Content-Length.
fn chunked(chunks: usize, size: usize) -> (Body, Bytes) {
    let all = pattern(0, chunks * size);
    let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
        (0..chunks).map(|i| Ok(Frame::data(all.slice(i * size..(i + 1) * size)))).collect();
    (BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames))), all)
}

fn upper(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

fn post(url: String, body: Body) -> Request<Body> {
    client::request(Method::POST, &url, body)
}

#[tokio::test]
async fn a_buffered_request_body_is_rewritten_whole_with_its_new_length_and_header_changes() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, "http1", r#"{ request: buffer }"#, "1MiB");
    let (body, sent) = chunked(8, 1000);
    let reply = send(&client::h1(), post(proxy.url("ingress", "/reflect"), body)).await.expect("send");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_ref(), upper(&sent), "the upstream got the filter's body");
    assert_eq!(reply.header("x-request-length"), Some("8000"), "a whole body goes with its length");

    let reply = send(&client::h2(), post(proxy.url("ingress", "/echo"), client::full("abc"))).await.expect("send");
    let headers = &reply.json()["headers"];
    assert_eq!(headers["x-body-len"], "3", "header changes made in a buffered body phase apply");
    assert_eq!(headers["content-length"], "3");
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_refused_413_without_reaching_the_upstream() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, "http1", r#"{ request: buffer }"#, "1KiB");
    let declared = send(&client::h1(), post(proxy.url("ingress", "/reflect"), client::full(vec![b'a'; 1025])))
        .await
        .expect("send");
    assert_eq!(declared.status, 413, "refused on its Content-Length");
    let (body, _) = chunked(3, 400);
    let streamed = send(&client::h1(), post(proxy.url("ingress", "/reflect"), body)).await.expect("send");
    assert_eq!(streamed.status, 413, "refused once more than the limit arrived");
    let at_limit = send(&client::h1(), post(proxy.url("ingress", "/reflect"), client::full(vec![b'a'; 1024])))
        .await
        .expect("send");
    assert_eq!(at_limit.status, 200);
    assert_eq!(upstream.hits(), 1, "only the body within the limit went upstream");
    let log = proxy.wait_access_log(3);
    assert!(log.iter().any(|l| l["reason"] == "wasp_request_body_too_large"), "{log:?}");
}

#[tokio::test]
async fn a_buffered_body_phase_can_answer_instead_of_the_upstream() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, "http1", r#"{ request: buffer, deny: forbidden }"#, "1MiB");
    let reply = send(&client::h1(), post(proxy.url("ingress", "/reflect"), client::full("a forbidden word")))
        .await
        .expect("send");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, "body mentions forbidden\n");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn streamed_bodies_pass_chunk_by_chunk_both_ways_byte_exact() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, "http1", r#"{ request: stream, response: stream }"#, "1MiB");
    // 8 MiB: far over the buffer limit, so this only works streamed.
    let (body, sent) = chunked(128, 64 * 1024);
    let reply = send(&client::h2(), post(proxy.url("ingress", "/reflect"), body)).await.expect("send");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-length"), Some("none"), "a streamed body may change length: no Content-Length");
    assert_eq!(reply.body.len(), sent.len());
    assert_eq!(hex(&Sha256::digest(&reply.body)), hex(&Sha256::digest(upper(&sent))));
    let trailers = reply.trailers.expect("trailers from the response's last body call");
    let chunks: u32 = trailers["x-chunks"].to_str().expect("text").parse().expect("number");
    assert!(chunks > 1, "the response body came in {chunks} calls");
}

#[tokio::test]
async fn trailers_reach_the_streaming_filter_and_the_client() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, "http2", r#"{ response: stream }"#, "1MiB");
    let reply = client::get(&client::h2(), &proxy.url("ingress", "/trailers")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "HELLO");
    let t = reply.trailers.expect("trailers");
    assert_eq!(t["grpc-status"], "0");
    assert_eq!(t["x-upstream-trailer"], "yes");
    assert_eq!(t["x-seen-grpc-status"], "0", "the filter read the upstream's trailer");
    assert!(t.contains_key("x-chunks"), "the filter added a trailer: {t:?}");
}

#[tokio::test]
async fn a_buffered_response_is_rewritten_whole_and_one_over_the_limit_is_a_502() {
    let upstream = Upstream::start("app").await;
    let proxy = proxy(&upstream, "http1", r#"{ response: buffer }"#, "4KiB");
    for path in ["/bytes/4096", "/bytes/4096?chunked"] {
        let reply = client::get(&client::h1(), &proxy.url("ingress", path)).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body.as_ref(), upper(&pattern(0, 4096)), "{path}");
        assert_eq!(reply.header("content-length"), Some("4096"), "{path}");
        assert_eq!(reply.header("x-filtered-len"), Some("4096"), "{path}");
    }
    for path in ["/bytes/4097", "/bytes/5000?chunked"] {
        let reply = client::get(&client::h1(), &proxy.url("ingress", path)).await;
        assert_eq!(reply.status, 502, "{path}");
    }
    let buffered = client::get(&client::h2(), &proxy.url("ingress", "/trailers")).await;
    assert_eq!(buffered.body, "HELLO", "a buffered body with trailers");
}

/// Request trailers survive a filter that buffers the body, to an HTTP/1.1
/// upstream (which is sent only the trailers a `Trailer` field declares)
/// and to an HTTP/2 one, from HTTP/2 and HTTP/1.1 clients.
#[tokio::test]
async fn request_trailers_survive_a_buffering_filter() {
    for protocol in ["http1", "http2"] {
        let upstream = Upstream::start("app").await;
        let proxy = proxy(&upstream, protocol, "{ request: buffer }", "1MiB");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
        let frames = vec![Ok(Frame::data(Bytes::from("hello"))), Ok(Frame::trailers(trailers))];
        let body: Body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)));
        let req = Request::builder().method(Method::POST).uri(proxy.url("ingress", "/sha256")).body(body).expect("req");
        let seen = send(&client::h2(), req).await.expect("send").json();
        assert_eq!(seen["len"], 5, "{protocol}: {seen}");
        assert_eq!(seen["trailers"]["x-checksum"], "abc", "{protocol}, from HTTP/2: {seen}");

        let mut conn = crate::support::raw::Conn::open(proxy.addr("ingress")).await;
        conn.send(b"POST /sha256 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: def\r\n\r\n").await;
        let reply = conn.response(false).await.expect("answer");
        let seen: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        assert_eq!(seen["trailers"]["x-checksum"], "def", "{protocol}, from HTTP/1.1: {seen}");
    }
}

#[tokio::test]
async fn a_reply_from_a_request_body_phase_goes_through_the_filters_before_it_only() {
    // before (response header by a standing edit) → body (asks for a response
    // header, then answers 403 from its body phase) → after (response header).
    let upstream = Upstream::start("app").await;
    let rewrite = wasm("header-rewrite");
    for mode in ["buffer", "stream"] {
        let entries = format!(
            "  - {{ name: before, module: {rw}, config: {{ response: {{ set: {{ x-before: \"1\" }} }} }} }}\n\
             \x20 - {{ name: body, module: {body}, config: {{ request: {mode}, deny: forbidden, mark: true }} }}\n\
             \x20 - {{ name: after, module: {rw}, config: {{ response: {{ set: {{ x-after: \"1\" }} }} }} }}",
            rw = rewrite.display(),
            body = wasm("test-body").display(),
        );
        let proxy = chain(&upstream, "http1", "[before, body, after]", &entries);
        let passed =
            send(&client::h1(), post(proxy.url("ingress", "/echo"), client::full("fine"))).await.expect("send");
        assert_eq!(passed.status, 200, "{mode}");
        for h in ["x-before", "x-body-filter", "x-after"] {
            assert!(passed.header(h).is_some(), "{mode}: an upstream answer gets {h}");
        }
        let denied = send(&client::h1(), post(proxy.url("ingress", "/echo"), client::full("a forbidden word")))
            .await
            .expect("send");
        assert_eq!(denied.status, 403, "{mode}");
        assert_eq!(denied.body, "body mentions forbidden\n", "{mode}");
        assert_eq!(denied.header("x-before"), Some("1"), "{mode}: the filter before the replying one edits its reply");
        assert_eq!(denied.header("x-body-filter"), None, "{mode}: a filter's response edits skip its own reply");
        assert_eq!(denied.header("x-after"), None, "{mode}: the filters after the replying one do not see its reply");
    }
}

#[tokio::test]
async fn a_filter_failing_open_in_its_request_body_phase_is_skipped_for_the_rest_of_the_request() {
    // Its request headers phase asked for a response header; its body phase
    // traps. Fail-open: the request goes on, and the filter's response phase
    // and response edits are skipped, as when a headers phase fails.
    let upstream = Upstream::start("app").await;
    let entry = format!(
        "  - {{ name: body, module: {}, config: {{ request: buffer, mark: true, fail: true }}, on_error: fail-open }}",
        wasm("test-body").display()
    );
    let proxy = chain(&upstream, "http1", "[body]", &entry);
    let reply = send(&client::h1(), post(proxy.url("ingress", "/reflect"), client::full("abc"))).await.expect("send");
    assert_eq!(reply.status, 200, "fail-open: the request goes on");
    assert_eq!(reply.body, "abc", "the upstream got the body as sent");
    assert_eq!(reply.header("x-body-filter"), None, "the failed filter's response edits are skipped");
    let m = crate::support::metrics(&proxy).await;
    assert!(m.contains("wasp_filter_errors_total{filter=\"body\",reason=\"trap\"} 1"), "{m}");
    assert!(m.contains("wasp_filter_errors_total{filter=\"body\",reason=\"unavailable\"} 0"), "no second failure: {m}");
}
