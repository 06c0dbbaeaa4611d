//! Connection (L4) filters: a listener's `connection_filters` decide on each
//! connection before anything of it is read or forwarded, with the same
//! limits, failure policy and hot reload as HTTP filters; and a component
//! built before the hook existed still serves routes.
//!
//! All connections here are plaintext, so they carry no identity: the tests
//! of an allowed mTLS identity live with the TLS tests.

use crate::support::client::{self, get};
use crate::support::filters::wasm;
use crate::support::{Running, TestProxy, Upstream, metrics, refused, rename_over, wait_for_metric};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server that counts the connections it accepted.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Connects, sends `bytes`, and returns what came back before the proxy
/// closed the connection (panics if it stays open for 3 s).
async fn closed_after(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let _ = conn.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut out)).await;
    // A reset (the proxy closed with the request unread) is closed too.
    assert!(read.is_ok(), "the connection must be closed promptly");
    out
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";

#[tokio::test]
async fn an_l4_deny_closes_http_and_tcp_connections_before_anything_is_forwarded() {
    let upstream = Upstream::start("app").await;
    let (echo, echo_accepted) = echo_server().await;
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: guarded
    address: 127.0.0.1:0
    connection_filters: [mtls]
    routes:
      - {{ name: r, cluster: app }}
  - name: open
    address: 127.0.0.1:0
    routes:
      - {{ name: identity, match: {{ prefix: /identity }}, cluster: app, filters: [mtls] }}
      - {{ name: any, cluster: app }}
  - {{ name: db, address: 127.0.0.1:0, protocol: tcp, cluster: db, connection_filters: [mtls] }}
  - {{ name: db-open, address: 127.0.0.1:0, protocol: tcp, cluster: db }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
  - {{ name: db, endpoints: ["{echo}"] }}
filters:
  - name: mtls
    module: {}
    config: {{ identities: {{ allow: ["spiffe://cluster.local/ns/*/sa/frontend"] }} }}
"#,
        upstream.addr,
        wasm("auth").display()
    );
    let proxy = TestProxy::new(yaml).start();

    // A plaintext connection has no identity: denied on both listeners that list the filter.
    assert_eq!(closed_after(proxy.addr("guarded"), GET).await, b"", "no response on a denied connection");
    assert_eq!(closed_after(proxy.addr("db"), b"hello").await, b"", "no bytes on a denied tcp connection");
    assert_eq!(upstream.hits(), 0, "the upstream saw nothing");
    assert_eq!(echo_accepted.load(Ordering::SeqCst), 0, "the tcp upstream was never dialled");
    wait_for_metric(&proxy, "wasp_filter_connections_denied_total{filter=\"mtls\"} 2").await;

    // Listeners without connection filters serve as usual.
    let reply = get(&client::h1(), &proxy.url("open", "/")).await;
    assert_eq!(reply.status, 200);
    let mut conn = TcpStream::connect(proxy.addr("db-open")).await.expect("connect");
    conn.write_all(b"ping").await.expect("write");
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), conn.read_exact(&mut back)).await.expect("echo").expect("read");
    assert_eq!(&back, b"ping");

    // The same rules per request (here without an identity): the filter's 403, before any token check.
    let reply = get(&client::h1(), &proxy.url("open", "/identity")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, "forbidden: no verified client identity\n");
    assert_eq!(upstream.hits(), 1, "only the request to the open route arrived");
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_connections_denied_total{filter=\"mtls\"} 2"), "{m}");
}

fn policy_config(upstream: SocketAddr, filters: &[(&str, &str, &str)]) -> String {
    let mut listeners = String::new();
    let mut entries = String::new();
    for (name, mode, on_error) in filters {
        listeners.push_str(&format!(
            "  - {{ name: {name}, address: 127.0.0.1:0, connection_filters: [{name}], routes: [{{ name: r, cluster: app }}] }}\n"
        ));
        entries.push_str(&format!(
            "  - {{ name: {name}, module: {}, config: {mode}, on_error: {on_error}, limits: {{ timeout: 20ms }} }}\n",
            wasm("test-conn-policy").display()
        ));
    }
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n{listeners}clusters:\n  - {{ name: app, endpoints: [\"{upstream}\"] }}\nfilters:\n{entries}"
    )
}

#[tokio::test]
async fn failing_connection_filters_get_their_policy() {
    let upstream = Upstream::start("app").await;
    let proxy = TestProxy::new(policy_config(
        upstream.addr,
        &[
            ("allow", "allow", "fail-closed"),
            ("deny", "deny", "fail-open"),
            ("trap", "trap", "fail-closed"),
            ("spin", "spin", "fail-closed"),
            ("trap-open", "trap", "fail-open"),
            ("spin-open", "spin", "fail-open"),
        ],
    ))
    .start();
    for round in 0..2 {
        // A new client each time: a new connection, asked anew.
        let reply = get(&client::h1(), &proxy.url("allow", "/")).await;
        assert_eq!((reply.status.as_u16(), reply.header("x-conn-policy")), (200, None), "round {round}");
        for closed in ["deny", "trap", "spin"] {
            let start = Instant::now();
            assert_eq!(closed_after(proxy.addr(closed), GET).await, b"", "{closed} (round {round})");
            assert!(start.elapsed() < Duration::from_secs(2), "{closed} took {:?}", start.elapsed());
        }
        for open in ["trap-open", "spin-open"] {
            let reply = get(&client::h1(), &proxy.url(open, "/")).await;
            assert_eq!(reply.status, 200, "fail-open serves the connection ({open}, round {round})");
        }
    }
    for (filter, denied) in [("deny", 2), ("trap", 2), ("spin", 2)] {
        wait_for_metric(&proxy, &format!("wasp_filter_connections_denied_total{{filter=\"{filter}\"}} {denied}")).await;
    }
    let m = metrics(&proxy).await;
    for (filter, reason) in [("trap", "trap"), ("spin", "timeout"), ("trap-open", "trap"), ("spin-open", "timeout")] {
        let line = format!("wasp_filter_errors_total{{filter=\"{filter}\",reason=\"{reason}\"}} 2");
        assert!(m.contains(&line), "{line} in:\n{m}");
    }
    for quiet in ["allow", "trap-open", "spin-open"] {
        assert!(!m.contains(&format!("wasp_filter_connections_denied_total{{filter=\"{quiet}\"}} 1")), "{m}");
    }
    assert!(m.contains("wasp_filter_duration_seconds_count{filter=\"allow\",phase=\"connection\"} 2"), "{m}");
    assert_eq!(upstream.hits(), 6, "only the served connections reached the upstream");
}

fn reload_proxy(upstream: &Upstream, module: &Path) -> Running {
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: ingress, address: 127.0.0.1:0, connection_filters: [gate], routes: [{{ name: r, cluster: app }}] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - {{ name: gate, module: {}, config: deny }}
"#,
        upstream.addr,
        module.display()
    );
    TestProxy::new(yaml).start()
}

#[tokio::test]
async fn a_connection_filter_reloads_for_the_next_connection() {
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("gate.wasm");
    std::fs::write(&module, std::fs::read(wasm("test-conn-policy")).expect("read")).expect("write");
    let proxy = reload_proxy(&upstream, &module);
    assert_eq!(closed_after(proxy.addr("ingress"), GET).await, b"");

    // The next connection meets the new version (an SDK filter: its default allows).
    rename_over(&module, &std::fs::read(wasm("test-marker-a")).expect("read"));
    wait_for_metric(&proxy, "wasp_filter_reloads_total{filter=\"gate\",result=\"ok\"} 1").await;
    let reply = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(reply.status, 200, "the new version allows");
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_filter_connections_denied_total{filter=\"gate\"} 1"), "{m}");

    // A version without on-connection cannot replace a connection filter.
    rename_over(&module, &std::fs::read(wasm("test-legacy-0-1")).expect("read"));
    wait_for_metric(&proxy, "wasp_filter_reloads_total{filter=\"gate\",result=\"error\"} 1").await;
    let reply = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(reply.status, 200, "the previous version keeps serving");
    let status = client::get(&client::h1(), &proxy.admin_url("/filters")).await.json()[0].clone();
    assert!(status["last_error"].as_str().is_some_and(|e| e.contains("has no on-connection export")), "{status}");
    assert_eq!(status["generation"], 2);
}

#[tokio::test]
async fn a_component_built_before_the_hook_serves_routes_but_is_no_connection_filter() {
    let upstream = Upstream::start("app").await;
    let legacy = wasm("test-legacy-0-1");
    let yaml = |connection_filters: &str| {
        format!(
            r#"admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    connection_filters: [{connection_filters}]
    routes:
      - {{ name: r, cluster: app, filters: [legacy] }}
clusters:
  - {{ name: app, endpoints: ["{}"] }}
filters:
  - {{ name: legacy, module: {} }}
  - {{ name: gate, module: {}, config: allow }}
"#,
            upstream.addr,
            legacy.display(),
            wasm("test-conn-policy").display()
        )
    };
    let proxy = TestProxy::new(yaml("gate")).start();
    let reply = get(&client::h1(), &proxy.url("ingress", "/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-legacy"), Some("1"), "the legacy filter ran");
    assert_eq!(reply.json()["path"], "/");
    drop(proxy);

    for stderr in refused(&yaml("gate, legacy")) {
        assert!(
            stderr.contains(
                "listeners[0].connection_filters[1]: filter \"legacy\" has no on-connection export (its component \
                 was built without the connection hook), so it cannot be a connection filter"
            ),
            "{stderr}"
        );
    }
}
