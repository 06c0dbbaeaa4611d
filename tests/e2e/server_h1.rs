//! wasp's own HTTP/1.1 server, checked on the wire and on what the
//! upstream received: pipelined requests, bodies left unread (never read
//! as the next request), `Expect: 100-continue`, HTTP/1.0 clients, `HEAD`,
//! and the header timeout of a keep-alive connection's next request.

use crate::support::raw::Conn;
use crate::support::{TestProxy, Upstream, one_route, wait_for_metric};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON echo")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_reach_the_upstream_whole() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(
        b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n\
          POST /sha256 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
          POST /sha256 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /last HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    let first = conn.response(false).await.expect("first");
    assert_eq!(json(&first.body)["path"], "/first");
    let second = conn.response(false).await.expect("second");
    assert_eq!(json(&second.body)["len"], 5, "{}", second.text());
    let third = conn.response(false).await.expect("third");
    assert_eq!(json(&third.body)["len"], 3, "{}", third.text());
    let last = conn.response(false).await.expect("last");
    assert_eq!(json(&last.body)["path"], "/last");
    assert!(last.header("date").is_some(), "responses carry a Date");
    assert_eq!(upstream.hits(), 4);
    assert_eq!(upstream.bodies(), 2);
}

/// A request answered without its body being read (here: no route) must
/// never have that body read as the next request. A rest already buffered
/// is skipped and the connection kept; one still to come closes it.
#[tokio::test]
async fn an_unread_body_is_never_read_as_the_next_request() {
    let upstream = Upstream::start("app").await;
    let route = "        match: { prefix: /app }";
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", route, "")).start();
    let smuggled = b"GET /app/smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let head = format!("POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", smuggled.len());

    // The body arrives with its head: skipped, and the connection goes on.
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    let mut all = head.clone().into_bytes();
    all.extend_from_slice(smuggled);
    all.extend_from_slice(b"GET /app/real HTTP/1.1\r\nhost: x\r\n\r\n");
    conn.send(&all).await;
    assert_eq!(conn.response(false).await.expect("no route").status, 404);
    let real = conn.response(false).await.expect("the next request");
    assert_eq!(json(&real.body)["path"], "/app/real");

    // The body comes after the answer: the connection is closed instead,
    // and the answer says so.
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(head.as_bytes()).await;
    let answer = conn.response(false).await.expect("no route");
    assert_eq!((answer.status, answer.header("connection")), (404, Some("close")));
    conn.send(smuggled).await;
    assert!(conn.closed().await, "the connection closes rather than read the body as a request");
    assert_eq!(upstream.hits(), 1, "only /app/real reached the upstream");
}

#[tokio::test]
async fn expect_100_continue_gets_its_interim_response_before_the_body() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(b"POST /sha256 HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n").await;
    let interim = conn.response(true).await.expect("interim");
    assert_eq!(interim.status, 100, "the client is told to send its body");
    conn.send(b"hello").await;
    let done = conn.response(false).await.expect("final");
    assert_eq!(json(&done.body)["len"], 5, "{}", done.text());
    assert_eq!(upstream.bodies(), 1);
}

#[tokio::test]
async fn http10_clients_get_close_delimited_bodies_and_keep_alive_only_when_asked() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    // No length known and no chunked encoding in HTTP/1.0: the body ends with the connection.
    let mut stream = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    stream.write_all(b"GET /bytes/3000?chunked HTTP/1.0\r\n\r\n").await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await.expect("closed").expect("read");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let (head, body) = (String::from_utf8_lossy(&raw[..end]), &raw[end + 4..]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert_eq!(body.len(), 3000);

    let mut conn = Conn::open(proxy.addr("ingress")).await;
    for round in 0..2 {
        conn.send(b"GET /bytes/10 HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
        let reply = conn.response(false).await.unwrap_or_else(|| panic!("round {round}"));
        assert_eq!(reply.header("connection"), Some("keep-alive"));
        assert_eq!(reply.body.len(), 10);
    }
    conn.send(b"GET /bytes/10 HTTP/1.0\r\n\r\n").await;
    assert_eq!(conn.response(false).await.expect("last").header("connection"), Some("close"));
    assert!(conn.closed().await, "HTTP/1.0 without keep-alive closes");
}

#[tokio::test]
async fn head_responses_keep_their_length_and_carry_no_body() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(b"HEAD /bytes/100 HTTP/1.1\r\nhost: x\r\n\r\nGET /after HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let head = conn.response(true).await.expect("head");
    assert_eq!((head.status, head.header("content-length")), (200, Some("100")));
    let after = conn.response(false).await.expect("the next response, right after the head");
    assert_eq!(json(&after.body)["path"], "/after", "no body bytes came between");
}

/// `header_read_timeout` governs a head that has begun to arrive (and the
/// first one, from the accept); a keep-alive connection with nothing in
/// flight is left to `idle_timeout`.
#[tokio::test]
async fn a_slow_next_head_is_cut_off_but_a_quiet_keep_alive_connection_is_not() {
    let upstream = Upstream::start("app").await;
    let limits = "    limits: { header_read_timeout: 300ms, idle_timeout: 30s }\n    routes:\n";
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "").replace("    routes:\n", limits)).start();
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(conn.response(false).await.expect("one").status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    conn.send(b"GET /two HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(conn.response(false).await.expect("still open after 3 header timeouts").status, 200);
    conn.send(b"GET /three HTTP/1.1\r\nhost: x\r\n").await;
    assert!(conn.closed().await, "a head that stops half-way is cut off");
    wait_for_metric(&proxy, "wasp_timeouts_total{kind=\"header_read\",listener=\"ingress\"} 1").await;
    assert_eq!(upstream.hits(), 2);
}

/// A chunked body's lines all end with CRLF, its trailer section too: a
/// bare LF there is where a reader that disagrees would see a different
/// end of the body (and a different next request).
#[tokio::test]
async fn a_chunked_body_ended_by_a_bare_lf_is_refused() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    conn.send(
        b"POST /sha256 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n\
          GET /after HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    let reply = conn.response(false).await.expect("an answer");
    assert_eq!((reply.status, reply.header("connection")), (400, Some("close")), "{}", reply.text());
    assert!(conn.closed().await);
    assert_eq!(upstream.bodies(), 0, "the body never reached the upstream as complete");
    let echo_hits = upstream.hits();
    assert!(echo_hits <= 1, "/after was not read as a request: {echo_hits} hits");
}

/// A head that arrives a byte at a time (and one ended by bare LFs) is
/// parsed when its end arrives; refusals before routing carry a Date too.
#[tokio::test]
async fn a_head_dribbled_byte_by_byte_is_parsed_when_it_ends() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    for head in [&b"GET /dribbled HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n\r\n"[..], b"GET /lf HTTP/1.1\nhost: x\n\n"] {
        let mut stream = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        for byte in head {
            stream.write_all(&[*byte]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut buf = vec![0u8; 4096];
        let n =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("answered").expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    let mut stream = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n").await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await.expect("closed").expect("read");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 501") && text.contains("\r\ndate: "), "{text}");
    assert_eq!(upstream.hits(), 2);
}

/// Header maps are reused from one message to the next (`h1::spare`):
/// nothing of a request's fields may reach the upstream with the next
/// request on the connection, and nothing of an upstream's response fields
/// may reach the client with the next response.
#[tokio::test]
async fn a_field_name_is_what_its_own_bytes_say_whatever_came_before() {
    // Names kept from earlier messages on the thread (h1/names.rs) must not
    // stand in for a different name, nor make an invalid one valid.
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    // Same length and first, middle and last bytes (one cache slot), then a case variant.
    conn.send(b"GET /1 HTTP/1.1\r\nhost: x\r\nX-aaa-Y: 1\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\nX-bab-Y: 2\r\n\r\nGET /3 HTTP/1.1\r\nhost: x\r\nx-AAA-y: 3\r\n\r\n")
        .await;
    for (path, name, other, value) in
        [("/1", "x-aaa-y", "x-bab-y", "1"), ("/2", "x-bab-y", "x-aaa-y", "2"), ("/3", "x-aaa-y", "x-bab-y", "3")]
    {
        let echo = json(&conn.response(false).await.expect("echo").body);
        assert_eq!(echo["path"], path);
        assert_eq!(echo["headers"][name], value, "{echo}");
        assert!(echo["headers"].get(other).is_none(), "{echo}");
    }
    // A name with a space, the same length and ends as one just kept: refused, never forwarded.
    conn.send(b"GET /4 HTTP/1.1\r\nhost: x\r\nX-a a-Y: 4\r\n\r\n").await;
    assert_eq!(conn.response(false).await.expect("refused").status, 400);
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn no_field_of_one_message_is_carried_into_the_next() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(one_route(&[upstream.addr], "http1", "", "")).start();
    let mut conn = Conn::open(proxy.addr("ingress")).await;
    let mut first =
        b"GET /first HTTP/1.1\r\nhost: x\r\nx-secret: one\r\nx-secret: two\r\nauthorization: Bearer good\r\n".to_vec();
    for i in 0..40 {
        first.extend_from_slice(format!("x-filler-{i}: {i}\r\n").as_bytes());
    }
    first.extend_from_slice(b"\r\nGET /second HTTP/1.1\r\nhost: x\r\n\r\n");
    conn.send(&first).await;
    let one = json(&conn.response(false).await.expect("first").body);
    assert_eq!(
        (one["headers"]["x-secret"].as_str(), one["headers"]["x-filler-39"].as_str()),
        (Some("one|two"), Some("39"))
    );
    let two = json(&conn.response(false).await.expect("second").body);
    assert_eq!(two["path"], "/second");
    let sent: Vec<&String> = two["headers"].as_object().expect("headers").keys().collect();
    assert!(
        sent.iter().all(|k| !k.starts_with("x-secret") && !k.starts_with("x-filler") && *k != "authorization"),
        "the upstream got fields of the request before: {sent:?}"
    );

    // The response side: an answer with `x-user`, then one without, on the
    // same client and upstream connections.
    conn.send(b"GET /authz/a HTTP/1.1\r\nhost: x\r\nauthorization: Bearer good\r\n\r\nGET /authz/b HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let allowed = conn.response(false).await.expect("allowed");
    assert_eq!((allowed.status, allowed.header("x-user")), (200, Some("alice")));
    let denied = conn.response(false).await.expect("denied");
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.header("x-user"), None, "the client got a field of the response before");
    assert!(denied.header("www-authenticate").is_some());
}
