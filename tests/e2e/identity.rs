//! One request identity: routes, filters and the upstream all see the same
//! normalised path and the same host, whatever form the client used to
//! smuggle a route-level filter's path past it (HTTP/1.1 origin and
//! absolute form, HTTP/2). Every test asserts what the upstream received.

use crate::support::client::{self, get};
use crate::support::filters::wasm;
use crate::support::raw::{self, exchange};
use crate::support::{TestProxy, Upstream};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// `/admin` → `admin` through a header-rewrite filter that marks what it
/// saw; everything else → `public`. `extra` goes into the listener.
fn guarded(admin: SocketAddr, public: SocketAddr, extra: &str) -> String {
    format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
{extra}
    routes:
      - {{ name: admin, match: {{ prefix: /admin }}, cluster: admin, filters: [guard] }}
      - {{ name: host-admin, match: {{ host: admin.local }}, cluster: admin, filters: [guard] }}
      - {{ name: public, cluster: public }}
clusters:
  - {{ name: admin, endpoints: ["{admin}"] }}
  - {{ name: public, endpoints: ["{public}"] }}
filters:
  - name: guard
    module: {}
    config: {{ request: {{ set: {{ x-guarded: "{{path}}" }} }} }}
"#,
        wasm("header-rewrite").display()
    )
}

async fn both() -> (Upstream, Upstream) {
    (Upstream::start("admin").await, Upstream::start("public").await)
}

const BYPASSES: [&str; 7] = [
    "/public/../admin/x",
    "/./admin/x",
    "//admin/x",
    "/%61dmin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2e/admin/x",
    "/public\\..\\admin/x",
];

/// The upstream `admin` received `/admin/x` through the filter.
fn guarded_admin(echo: &serde_json::Value, tried: &str) {
    assert_eq!(echo["upstream"], "admin", "{tried} bypassed the route: {echo}");
    assert_eq!(echo["path"], "/admin/x", "{tried}: {echo}");
    assert_eq!(echo["headers"]["x-guarded"], "/admin/x", "{tried}: the filter saw the normal path: {echo}");
}

#[tokio::test]
async fn encoded_and_dotted_paths_reach_the_guarded_route_normalised_over_h1_and_h2() {
    let (admin, public) = both().await;
    let proxy = TestProxy::new(guarded(admin.addr, public.addr, "")).start();
    let addr = proxy.addr("ingress");
    for path in BYPASSES {
        // Raw bytes: a client library might clean the path up itself.
        let req = format!("GET {path} HTTP/1.1\r\nhost: app.local\r\nconnection: close\r\n\r\n");
        let reply = exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        guarded_admin(&serde_json::from_str(body).unwrap_or_else(|_| panic!("{path}: {reply}")), path);

        let absolute = format!("GET http://app.local{path} HTTP/1.1\r\nhost: app.local\r\nconnection: close\r\n\r\n");
        let reply = exchange(addr, absolute.as_bytes(), Duration::from_secs(5)).await;
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        guarded_admin(&serde_json::from_str(body).unwrap_or_else(|_| panic!("absolute {path}: {reply}")), path);
    }
    for path in BYPASSES.iter().filter(|p| !p.contains('\\')) {
        let reply = get(&client::h2(), &format!("http://{addr}{path}")).await;
        guarded_admin(&reply.json(), path);
    }
    assert_eq!(public.hits(), 0, "nothing reached the unguarded cluster");
}

#[tokio::test]
async fn paths_that_cannot_be_normalised_are_refused_before_any_upstream() {
    let (admin, public) = both().await;
    let proxy = TestProxy::new(guarded(admin.addr, public.addr, "")).start();
    let addr = proxy.addr("ingress");
    for path in ["/..", "/a/../../admin", "/%2e%2e/admin", "/a%zz", "/a%2", "/a%00b", "*", "/public/..;/admin/x"] {
        let req = format!("GET {path} HTTP/1.1\r\nhost: app.local\r\nconnection: close\r\n\r\n");
        let reply = exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(raw::status(&reply), 400, "{path}: {reply}");
    }
    assert_eq!(admin.hits() + public.hits(), 0);
    // Double encoding is decoded once: `%252e` stays data, not a dot segment.
    let reply = get(&client::h1(), &proxy.url("ingress", "/public/%252e%252e/admin/x")).await;
    assert_eq!(reply.json()["upstream"], "public");
    assert_eq!(reply.json()["path"], "/public/%252e%252e/admin/x");
}

#[tokio::test]
async fn escaped_slashes_follow_the_listener_setting() {
    let (admin, public) = both().await;
    let target = "/public/..%2Fadmin%2fx";
    let keep = TestProxy::new(guarded(admin.addr, public.addr, "")).start();
    let reply = get(&client::h1(), &keep.url("ingress", target)).await;
    assert_eq!(reply.status, 400, "a dot segment behind a kept %2F: a server decoding it would climb");
    let reply = get(&client::h1(), &keep.url("ingress", "/public/a%2fb")).await;
    assert_eq!(reply.json()["path"], "/public/a%2Fb", "kept as data (case made canonical)");
    assert_eq!(reply.json()["upstream"], "public");

    let reject = TestProxy::new(guarded(admin.addr, public.addr, "    escaped_slashes: reject")).start();
    assert_eq!(get(&client::h1(), &reject.url("ingress", target)).await.status, 400);

    let unescape = TestProxy::new(guarded(admin.addr, public.addr, "    escaped_slashes: unescape")).start();
    guarded_admin(&get(&client::h1(), &unescape.url("ingress", target)).await.json(), target);
}

#[tokio::test]
async fn an_absolute_form_authority_is_the_host_routes_and_upstream_see() {
    let (admin, public) = both().await;
    let proxy = TestProxy::new(guarded(admin.addr, public.addr, "")).start();
    let addr = proxy.addr("ingress");
    let req = b"GET http://public.local/x HTTP/1.1\r\nhost: admin.local\r\nconnection: close\r\n\r\n";
    let reply = exchange(addr, req, Duration::from_secs(5)).await;
    let echo: serde_json::Value = serde_json::from_str(reply.split_once("\r\n\r\n").expect("body").1).expect("json");
    assert_eq!(echo["upstream"], "public", "routed by the target's authority: {echo}");
    assert_eq!(echo["headers"]["host"], "public.local", "the upstream sees that host too: {echo}");
    assert_eq!(echo["path"], "/x");

    let req = b"GET http://admin.local/x HTTP/1.1\r\nhost: public.local\r\nconnection: close\r\n\r\n";
    let reply = exchange(addr, req, Duration::from_secs(5)).await;
    let echo: serde_json::Value = serde_json::from_str(reply.split_once("\r\n\r\n").expect("body").1).expect("json");
    assert_eq!(echo["upstream"], "admin");
    assert_eq!(echo["headers"]["host"], "admin.local");
    assert!(echo["headers"]["x-guarded"].is_string(), "through the filter: {echo}");
}

#[tokio::test]
async fn hosts_must_be_one_and_h2_authority_must_match_host() {
    let (admin, public) = both().await;
    let proxy = TestProxy::new(guarded(admin.addr, public.addr, "")).start();
    let addr = proxy.addr("ingress");
    for req in [
        &b"GET /x HTTP/1.1\r\nhost: public.local\r\nhost: admin.local\r\nconnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nhost: a@admin.local\r\nconnection: close\r\n\r\n",
        b"GET http://u:p@admin.local/x HTTP/1.1\r\nhost: admin.local\r\nconnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nhost: adm%69n.local\r\nconnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nhost: public.local,admin.local\r\nconnection: close\r\n\r\n",
    ] {
        let reply = exchange(addr, req, Duration::from_secs(5)).await;
        assert_eq!(raw::status(&reply), 400, "{}: {reply}", String::from_utf8_lossy(req));
    }
    // A fully qualified `admin.local.` is `admin.local`: it takes the guarded route.
    let reply = exchange(addr, b"GET /x HTTP/1.1\r\nhost: admin.local.\r\nconnection: close\r\n\r\n", WAIT).await;
    assert!(reply.contains("\"upstream\":\"admin\"") && reply.contains("x-guarded"), "{reply}");
    // HTTP/1.0 may omit Host.
    let reply = exchange(addr, b"GET /x HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(raw::status(&reply), 200, "{reply}");

    // HTTP/2: `:authority` and a disagreeing `host` are refused; an agreeing one is the one host.
    let req = |host: &str| {
        http::Request::builder()
            .uri(format!("http://public.local:{}/x", addr.port()))
            .header("host", host)
            .body(client::empty())
            .expect("request")
    };
    let mismatch = client::h2_to(addr, req(&format!("admin.local:{}", addr.port()))).await;
    assert_eq!(mismatch.status, 400);
    let agree = client::h2_to(addr, req(&format!("PUBLIC.local:{}", addr.port()))).await;
    assert_eq!(agree.status, 200);
    assert_eq!(agree.json()["upstream"], "public");
    assert_eq!(admin.hits() + public.hits(), 3, "only the dotted, HTTP/1.0 and agreeing requests reached an upstream");
}
