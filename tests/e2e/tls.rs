//! TLS and mTLS end to end, with a CA and certificates made by the test:
//! termination over HTTP/1.1 and HTTP/2 (ALPN), the client's identity to
//! routes, the app (`x-forwarded-client-cert`) and the access log; every
//! handshake failure counted and kept from the upstream; SNI certificates;
//! rotation under load; origination with mTLS and `verify_identity`; SNI
//! passthrough; TLS on a TCP listener; what `wasp check` says about bad files.

use crate::support::tls::{self, Ca, Leaf, Names};
use crate::support::upstream::hex;
use crate::support::{TestProxy, Upstream, metrics, refused, rename_over, wait_for_metric};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const BACKEND: &str = "spiffe://cluster.local/ns/shop/sa/backend";

/// A CA, wasp's server certificate for `app.local` (itself a SPIFFE
/// workload), and a frontend client certificate, in a temp dir.
struct Pki {
    ca: Ca,
    server: Leaf,
    frontend: Leaf,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("wasp test CA");
        let server = ca.issue(Names {
            cn: "app",
            dns: &["app.local"],
            uri: &["spiffe://cluster.local/ns/shop/sa/app"],
            ..Default::default()
        });
        let frontend = ca.issue(Names { cn: "frontend", uri: &[FRONTEND], ..Default::default() });
        let dir = tempfile::tempdir().expect("tempdir");
        server.write(dir.path(), "server");
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write CA");
        Pki { ca, server, frontend, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// An mTLS listener `ingress` (plus `extra` YAML under its `tls`) to cluster `app`.
    fn mtls_config(&self, app: std::net::SocketAddr, tls_extra: &str) -> String {
        format!(
            "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    tls:
      cert: {}
      key: {}
      client_ca: {}
      handshake_timeout: 500ms
{tls_extra}
    routes:
      - name: frontend-only
        match: {{ prefix: /private, peer: \"spiffe://cluster.local/ns/*/sa/frontend\" }}
        cluster: app
      - name: main
        match: {{ prefix: /public }}
        cluster: app
clusters:
  - {{ name: app, endpoints: [\"{app}\"] }}
",
            self.path("server.pem"),
            self.path("server-key.pem"),
            self.path("ca.pem"),
        )
    }
}

#[tokio::test]
async fn mtls_over_http1_and_http2_carries_the_client_identity() {
    let pki = Pki::new();
    let app = Upstream::start("app").await;
    let proxy = TestProxy::new(pki.mtls_config(app.addr, "")).start();
    let addr = proxy.addr("ingress");
    for alpn in ["http/1.1", "h2"] {
        let client = tls::client(&pki.ca.pem, Some(&pki.frontend), &[alpn]);
        let forged = [("x-forwarded-client-cert", "By=evil;URI=spiffe://cluster.local/ns/kube-system/sa/admin")];
        let got = tls::get(addr, "app.local", client, "/private/x", &forged).await.expect("mTLS request");
        assert_eq!(got.status, 200, "{alpn}");
        assert_eq!(got.alpn.as_deref(), Some(alpn), "ALPN");
        let seen = got.json();
        assert_eq!(seen["path"], "/private/x");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
        let xfcc = seen["headers"]["x-forwarded-client-cert"].as_str().expect("xfcc sent to the app");
        assert!(!xfcc.contains("evil") && !xfcc.contains("kube-system"), "the client's own header is removed: {xfcc}");
        assert_eq!(
            xfcc,
            format!(
                "By=spiffe://cluster.local/ns/shop/sa/app;Hash={};Subject=\"CN=frontend\";URI={FRONTEND}",
                pki.frontend.sha256()
            )
        );
    }
    let log = proxy.wait_access_log(2);
    assert!(log.iter().all(|l| l["identity"] == FRONTEND && l["sni"] == "app.local"), "{log:?}");

    // Another workload of the same mesh: served where no identity is asked for, not on the frontend's route.
    let backend = pki.ca.issue(Names { cn: "backend", uri: &[BACKEND], ..Default::default() });
    let client = tls::client(&pki.ca.pem, Some(&backend), &["h2"]);
    let got = tls::get(addr, "app.local", client.clone(), "/private/x", &[]).await.expect("request");
    assert_eq!(got.status, 404, "match.peer keeps other identities off the route");
    let got = tls::get(addr, "app.local", client, "/public/x", &[]).await.expect("request");
    assert_eq!(got.status, 200);
    assert!(got.json()["headers"]["x-forwarded-client-cert"].as_str().is_some_and(|x| x.contains(BACKEND)));
    assert_eq!(app.hits(), 3);
}

#[tokio::test]
async fn forwarding_the_client_certificate_can_be_turned_off_and_plain_listeners_drop_the_header() {
    let pki = Pki::new();
    let app = Upstream::start("app").await;
    let proxy = TestProxy::new(pki.mtls_config(app.addr, "      forward_client_cert: false")).start();
    let client = tls::client(&pki.ca.pem, Some(&pki.frontend), &["http/1.1"]);
    let forged = [("x-forwarded-client-cert", "URI=spiffe://forged")];
    let got = tls::get(proxy.addr("ingress"), "app.local", client, "/public/", &forged).await.expect("request");
    assert_eq!(got.json()["headers"]["x-forwarded-client-cert"], serde_json::Value::Null);

    let plain = TestProxy::new(crate::support::one_route(&[app.addr], "http1", "", "")).start();
    let req = http::Request::get(plain.url("ingress", "/"))
        .header("x-forwarded-client-cert", "URI=spiffe://forged")
        .body(crate::support::client::empty())
        .expect("request");
    let reply = crate::support::client::send(&crate::support::client::h1(), req).await.expect("plain request");
    assert_eq!(reply.json()["headers"]["x-forwarded-client-cert"], serde_json::Value::Null);
}

/// Opens a TCP connection, sends `bytes`, and says whether wasp closed it
/// without a single byte of HTTP in return.
async fn closed_without_answer(addr: std::net::SocketAddr, bytes: &[u8]) -> bool {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.write_all(bytes).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    read.is_ok() && !String::from_utf8_lossy(&buf).contains("HTTP/")
}

#[tokio::test]
async fn every_failed_handshake_is_counted_and_reaches_no_upstream() {
    let pki = Pki::new();
    let app = Upstream::start("app").await;
    // A second listener serves only `known.local`: no default certificate.
    let known = pki.ca.issue(Names { cn: "known", dns: &["known.local"], ..Default::default() });
    known.write(pki.dir.path(), "known");
    let mut yaml = pki.mtls_config(app.addr, "");
    yaml = yaml.replace(
        "clusters:",
        &format!(
            "  - name: sni-only
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ sni: [known.local], cert: {}, key: {} }}
    routes: [ {{ name: all, cluster: app }} ]
clusters:",
            pki.path("known.pem"),
            pki.path("known-key.pem")
        ),
    );
    let proxy = TestProxy::new(yaml).start();
    let addr = proxy.addr("ingress");

    // Plaintext HTTP to the TLS port.
    assert!(closed_without_answer(addr, b"GET /public/ HTTP/1.1\r\nhost: app.local\r\n\r\n").await);
    // No client certificate.
    let anonymous = tls::client(&pki.ca.pem, None, &["http/1.1"]);
    assert!(tls::get(addr, "app.local", anonymous, "/public/", &[]).await.is_err());
    // A certificate from a CA wasp does not trust.
    let rogue_ca = Ca::new("rogue CA");
    let rogue = rogue_ca.issue(Names { cn: "frontend", uri: &[FRONTEND], ..Default::default() });
    assert!(tls::get(addr, "app.local", tls::client(&pki.ca.pem, Some(&rogue), &[]), "/public/", &[]).await.is_err());
    // Expired, and not yet valid.
    let expired = pki.ca.issue(Names { cn: "old", uri: &[FRONTEND], years: Some((2020, 2021)), ..Default::default() });
    assert!(tls::get(addr, "app.local", tls::client(&pki.ca.pem, Some(&expired), &[]), "/public/", &[]).await.is_err());
    let future = pki.ca.issue(Names { cn: "new", uri: &[FRONTEND], years: Some((2090, 2091)), ..Default::default() });
    assert!(tls::get(addr, "app.local", tls::client(&pki.ca.pem, Some(&future), &[]), "/public/", &[]).await.is_err());
    // A client that never finishes its handshake.
    assert!(closed_without_answer(addr, b"\x16\x03\x01\x00").await);
    // An unknown server name where there is no default certificate.
    let client = tls::client(&pki.ca.pem, None, &[]);
    assert!(tls::get(proxy.addr("sni-only"), "other.local", client.clone(), "/", &[]).await.is_err());
    assert_eq!(tls::get(proxy.addr("sni-only"), "known.local", client, "/", &[]).await.expect("known SNI").status, 200);

    for (listener, reason) in [
        ("ingress", "not_tls"),
        ("ingress", "no_client_cert"),
        ("ingress", "untrusted"),
        ("ingress", "expired"),
        ("ingress", "not_yet_valid"),
        ("ingress", "timeout"),
        ("sni-only", "unknown_sni"),
    ] {
        wait_for_metric(
            &proxy,
            &format!("wasp_tls_handshake_errors_total{{listener=\"{listener}\",reason=\"{reason}\"}} 1"),
        )
        .await;
    }
    assert_eq!(app.hits(), 1, "only the known-SNI request reached the app");
    // Other clients are unaffected.
    let good = tls::client(&pki.ca.pem, Some(&pki.frontend), &["h2"]);
    assert_eq!(tls::get(addr, "app.local", good, "/public/", &[]).await.expect("good client").status, 200);
}

#[tokio::test]
async fn sni_chooses_the_certificate() {
    let pki = Pki::new();
    let api = pki.ca.issue(Names { cn: "api", dns: &["api.example.com"], ..Default::default() });
    api.write(pki.dir.path(), "api");
    let app = Upstream::start("app").await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    tls:
      cert: {}
      key: {}
      min_version: \"1.3\"
      certificates:
        - {{ sni: [\"*.example.com\"], cert: {}, key: {} }}
    routes: [ {{ name: all, cluster: app }} ]
clusters:
  - {{ name: app, endpoints: [\"{}\"] }}
",
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.path("api.pem"),
        pki.path("api-key.pem"),
        app.addr
    );
    let proxy = TestProxy::new(yaml).start();
    let client = tls::client(&pki.ca.pem, None, &["h2", "http/1.1"]);
    let got = tls::get(proxy.addr("ingress"), "api.example.com", client.clone(), "/", &[]).await.expect("api");
    assert_eq!(hex(&Sha256::digest(&got.server_cert)), api.sha256());
    assert_eq!(got.alpn.as_deref(), Some("h2"), "HTTP/2 preferred over TLS");
    let got = tls::get(proxy.addr("ingress"), "app.local", client, "/", &[]).await.expect("default");
    assert_eq!(hex(&Sha256::digest(&got.server_cert)), pki.server.sha256());
    let certs: serde_json::Value =
        crate::support::client::get(&crate::support::client::h1(), &proxy.admin_url("/certs")).await.json();
    let served: Vec<&str> = certs.as_array().expect("list").iter().filter_map(|c| c["sha256"].as_str()).collect();
    assert!(served.contains(&api.sha256().as_str()) && served.contains(&pki.server.sha256().as_str()), "{certs}");
    assert!(certs[0]["not_after"].as_i64().is_some() && certs[0]["serial"].is_string(), "{certs}");
    let m = metrics(&proxy).await;
    assert!(m.contains("wasp_tls_certificate_expiry_seconds{name=\"ingress\",role=\"server\",scope=\"listener\",subject=\"CN=api\"}"), "{m}");
    assert!(m.contains("wasp_tls_handshakes_total{listener=\"ingress\",version=\"TLSv1.3\"} 2"), "{m}");
}

#[tokio::test]
async fn certificates_rotate_under_load_and_a_bad_pair_is_kept_out() {
    let pki = Pki::new();
    let app = Upstream::start("app").await;
    let proxy = TestProxy::new(pki.mtls_config(app.addr, "")).start();
    let addr = proxy.addr("ingress");
    let client = tls::client(&pki.ca.pem, Some(&pki.frontend), &["http/1.1"]);

    // A stream of new connections, each a full handshake (a fresh client:
    // a resumed session would show the certificate of the session it resumes).
    let load = {
        let (ca, frontend) = (pki.ca.pem.clone(), pki.frontend.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut certs) = (0, Vec::new(), std::collections::HashSet::new());
            for _ in 0..300 {
                let client = tls::client(&ca, Some(&frontend), &["http/1.1"]);
                match tls::get(addr, "app.local", client, "/public/", &[]).await {
                    Ok(g) if g.status == 200 => {
                        ok += 1;
                        certs.insert(hex(&Sha256::digest(&g.server_cert)));
                    }
                    Ok(g) => failed.push(g.status.to_string()),
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed, certs)
        })
    };
    // An established connection keeps working across the rotation.
    let mut kept = tls::connect(addr, "app.local", client.clone()).await.expect("kept connection");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let renewed = pki.ca.issue(Names { cn: "app-renewed", dns: &["app.local"], ..Default::default() });
    // Key first then certificate, each renamed over: in between the pair does not match and is not taken.
    rename_over(&pki.dir.path().join("server-key.pem"), renewed.key.as_bytes());
    rename_over(&pki.dir.path().join("server.pem"), renewed.cert.as_bytes());
    let (ok, failed, seen) = load.await.expect("load");
    assert!(failed.is_empty(), "requests failed during rotation: {failed:?}");
    assert_eq!(ok, 300);
    assert!(
        seen.contains(&renewed.sha256()),
        "new connections see the new certificate; saw {seen:?}; wasp said:\n{}",
        proxy.stderr_lines().join("\n")
    );
    kept.write_all(b"GET /public/kept HTTP/1.1\r\nhost: app.local\r\nconnection: close\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    kept.read_to_end(&mut answer).await.expect("read");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "established connection continues");
    wait_for_metric(&proxy, "wasp_tls_reloads_total{name=\"ingress\",result=\"ok\",scope=\"listener\"} 1").await;

    // A key that does not match: refused, the renewed pair keeps serving.
    // (The half-written state between the two renames above may have been refused once already.)
    let errors = "wasp_tls_reloads_total{name=\"ingress\",result=\"error\",scope=\"listener\"}";
    let count = |m: String| m.lines().find_map(|l| l.strip_prefix(errors)?.trim().parse::<u64>().ok()).unwrap_or(0);
    let before = count(metrics(&proxy).await);
    let stranger = pki.ca.issue(Names { cn: "stranger", dns: &["app.local"], ..Default::default() });
    rename_over(&pki.dir.path().join("server-key.pem"), stranger.key.as_bytes());
    wait_for_metric(&proxy, &format!("{errors} {}", before + 1)).await;
    let fresh = tls::client(&pki.ca.pem, Some(&pki.frontend), &["h2"]);
    let got = tls::get(addr, "app.local", fresh, "/public/", &[]).await.expect("still serving");
    assert_eq!(hex(&Sha256::digest(&got.server_cert)), renewed.sha256());
    proxy.wait_stderr("does not match the certificate");
}

/// A TLS upstream for `spiffe://cluster.local/ns/db/sa/api` (no DNS name)
/// that requires client certificates from `ca`.
async fn spiffe_upstream(ca: &Ca, alpn: &[&str]) -> Upstream {
    let leaf = ca.issue(Names { cn: "api", uri: &["spiffe://cluster.local/ns/db/sa/api"], ..Default::default() });
    Upstream::start_tls("tls-app", tls::server(&leaf, Some(&ca.pem), alpn)).await
}

#[tokio::test]
async fn origination_speaks_mtls_to_the_upstream_and_checks_its_identity() {
    let pki = Pki::new();
    let wasp_client =
        pki.ca.issue(Names { cn: "wasp", uri: &["spiffe://cluster.local/ns/shop/sa/app"], ..Default::default() });
    wasp_client.write(pki.dir.path(), "client");
    let h1 = spiffe_upstream(&pki.ca, &["http/1.1"]).await;
    let h2 = spiffe_upstream(&pki.ca, &["h2"]).await;
    let cluster = |name: &str, addr: std::net::SocketAddr, protocol: &str, identity: &str| {
        format!(
            "  - name: {name}
    endpoints: [\"{addr}\"]
    protocol: {protocol}
    tls: {{ ca: {}, cert: {}, key: {}, sni: api.db, verify_identity: \"{identity}\" }}
",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client-key.pem")
        )
    };
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: egress
    address: 127.0.0.1:0
    routes:
      - {{ name: h1, match: {{ prefix: /h1 }}, cluster: h1 }}
      - {{ name: h2, match: {{ prefix: /h2 }}, cluster: h2 }}
      - {{ name: wrong, match: {{ prefix: /wrong }}, cluster: wrong }}
clusters:
{}{}{}",
        cluster("h1", h1.addr, "http1", "spiffe://cluster.local/ns/db/sa/*"),
        cluster("h2", h2.addr, "http2", "spiffe://cluster.local/ns/db/sa/api"),
        cluster("wrong", h1.addr, "http1", "spiffe://cluster.local/ns/db/sa/other"),
    );
    let proxy = TestProxy::new(yaml).start();
    let plain = crate::support::client::h1();
    for _ in 0..3 {
        let reply = crate::support::client::get(&plain, &proxy.url("egress", "/h1/x")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["version"], "HTTP/1.1");
    }
    assert_eq!(h1.connections(), 1, "pooled TLS connections are reused");
    let reply = crate::support::client::get(&plain, &proxy.url("egress", "/h2/x")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["version"], "HTTP/2.0", "ALPN h2 to an http2 cluster");

    let hits = h1.hits();
    let reply = crate::support::client::get(&plain, &proxy.url("egress", "/wrong/x")).await;
    assert_eq!(reply.status, 503, "an upstream with the wrong identity gets no request");
    assert_eq!(h1.hits(), hits);
    wait_for_metric(&proxy, "wasp_upstream_errors_total{cluster=\"wrong\",kind=\"tls\"} 1").await;
    proxy.wait_stderr("wrong identity");
}

// Multi-threaded: the clients' connection tasks must close while the test waits for the access log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listeners_route_tls_by_sni_untouched_and_terminate_tls() {
    let pki = Pki::new();
    let a_leaf = pki.ca.issue(Names { cn: "a", dns: &["a.example"], ..Default::default() });
    let b_leaf = pki.ca.issue(Names { cn: "b", dns: &["x.b.example"], ..Default::default() });
    let a = Upstream::start_tls("backend-a", tls::server(&a_leaf, None, &["http/1.1"])).await;
    let b = Upstream::start_tls("backend-b", tls::server(&b_leaf, None, &["http/1.1"])).await;
    let plain = Upstream::start("plain-app").await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: passthrough
    address: 127.0.0.1:0
    protocol: tcp
    sni_routes:
      - {{ sni: [a.example], cluster: a }}
      - {{ sni: [\"*.b.example\"], cluster: b }}
  - name: terminate
    address: 127.0.0.1:0
    protocol: tcp
    cluster: plain
    tls: {{ cert: {}, key: {} }}
clusters:
  - {{ name: a, endpoints: [\"{}\"] }}
  - {{ name: b, endpoints: [\"{}\"] }}
  - {{ name: plain, endpoints: [\"{}\"] }}
",
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        a.addr,
        b.addr,
        plain.addr
    );
    let proxy = TestProxy::new(yaml).start();
    let client = tls::client(&pki.ca.pem, None, &["http/1.1"]);
    let through = proxy.addr("passthrough");
    let got = tls::get(through, "a.example", client.clone(), "/", &[]).await.expect("to a");
    assert_eq!(got.json()["upstream"], "backend-a");
    assert_eq!(hex(&Sha256::digest(&got.server_cert)), a_leaf.sha256(), "the backend's own certificate");
    let got = tls::get(through, "x.b.example", client.clone(), "/", &[]).await.expect("to b");
    assert_eq!(got.json()["upstream"], "backend-b");
    assert!(tls::get(through, "c.example", client.clone(), "/", &[]).await.is_err(), "no route, no default");
    assert!(closed_without_answer(through, b"GET / HTTP/1.1\r\n\r\n").await);
    wait_for_metric(&proxy, "wasp_tls_handshake_errors_total{listener=\"passthrough\",reason=\"not_tls\"} 1").await;

    let got = tls::get(proxy.addr("terminate"), "app.local", client, "/db", &[]).await.expect("terminated");
    assert_eq!(got.json()["upstream"], "plain-app");
    assert_eq!(got.json()["path"], "/db");
    assert_eq!(hex(&Sha256::digest(&got.server_cert)), pki.server.sha256());
    let log = proxy.wait_access_log(4);
    assert!(log.iter().any(|l| l["sni"] == "x.b.example" && l["cluster"] == "b"), "{log:?}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).expect("write");
    dir.join(name).display().to_string()
}

#[test]
fn check_reports_unreadable_mismatched_and_expired_certificates_at_their_path() {
    let ca = Ca::new("check CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = ca.issue(Names { cn: "good", dns: &["a.local"], ..Default::default() });
    let other = ca.issue(Names { cn: "other", dns: &["a.local"], ..Default::default() });
    let old = ca.issue(Names { cn: "old", dns: &["a.local"], years: Some((2019, 2020)), ..Default::default() });
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: missing
    address: 127.0.0.1:0
    tls: {{ cert: {}, key: {} }}
    routes: [ {{ name: r, cluster: app }} ]
  - name: mismatched
    address: 127.0.0.1:0
    tls: {{ cert: {}, key: {} }}
    routes: [ {{ name: r, cluster: app }} ]
  - name: expired
    address: 127.0.0.1:0
    tls: {{ cert: {}, key: {} }}
    routes: [ {{ name: r, cluster: app }} ]
clusters:
  - {{ name: app, endpoints: [\"127.0.0.1:1\"], tls: {{ ca: {} }} }}
",
        dir.path().join("nope.pem").display(),
        write(dir.path(), "good-key.pem", &good.key),
        write(dir.path(), "good.pem", &good.cert),
        write(dir.path(), "other-key.pem", &other.key),
        write(dir.path(), "old.pem", &old.cert),
        write(dir.path(), "old-key.pem", &old.key),
        write(dir.path(), "not-a-ca.pem", "hello"),
    );
    let out = refused(&yaml);
    for stderr in &out {
        assert!(stderr.contains("clusters[0].tls.ca:") && stderr.contains("no CERTIFICATE block"), "{stderr}");
    }
    // `wasp check` goes on to the listeners' files.
    let check = &out[0];
    assert!(check.contains("listeners[0].tls.cert: cannot read"), "{check}");
    assert!(check.contains("listeners[1].tls.key:") && check.contains("does not match the certificate"), "{check}");
    assert!(check.contains("listeners[2].tls.cert:") && check.contains("expired on 2020-01-01"), "{check}");
}

#[tokio::test]
async fn the_verified_identity_reaches_filters_per_request_and_per_connection() {
    let pki = Pki::new();
    let app = Upstream::start("app").await;
    let backend = pki.ca.issue(Names { cn: "backend", uri: &[BACKEND], ..Default::default() });
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: l4
    address: 127.0.0.1:0
    tls: {{ cert: {cert}, key: {key}, client_ca: {ca} }}
    connection_filters: [frontends]
    routes: [ {{ name: all, cluster: app }} ]
  - name: l7
    address: 127.0.0.1:0
    tls: {{ cert: {cert}, key: {key}, client_ca: {ca} }}
    routes: [ {{ name: all, cluster: app, filters: [frontends] }} ]
clusters:
  - {{ name: app, endpoints: [\"{}\"] }}
filters:
  - name: frontends
    module: {}
    config: {{ identities: {{ allow: [\"spiffe://cluster.local/ns/*/sa/frontend\"] }} }}
",
        app.addr,
        crate::support::filters::wasm("auth").display(),
        cert = pki.path("server.pem"),
        key = pki.path("server-key.pem"),
        ca = pki.path("ca.pem"),
    );
    let proxy = TestProxy::new(yaml).start();
    let frontend = tls::client(&pki.ca.pem, Some(&pki.frontend), &["h2"]);
    let other = tls::client(&pki.ca.pem, Some(&backend), &["http/1.1"]);

    // Per request: the auth filter reads the identity; the frontend passes, the backend gets 403.
    let got = tls::get(proxy.addr("l7"), "app.local", frontend.clone(), "/x", &[]).await.expect("frontend");
    assert_eq!(got.status, 200);
    let got = tls::get(proxy.addr("l7"), "app.local", other.clone(), "/x", &[]).await.expect("backend");
    assert_eq!(got.status, 403);
    assert!(String::from_utf8_lossy(&got.body).contains("forbidden"), "{:?}", got.body);
    // Per connection: the backend's connection is closed after its handshake, before any request.
    let got = tls::get(proxy.addr("l4"), "app.local", frontend, "/x", &[]).await.expect("frontend on l4");
    assert_eq!(got.status, 200);
    assert!(tls::get(proxy.addr("l4"), "app.local", other, "/x", &[]).await.is_err(), "denied at L4");
    wait_for_metric(&proxy, "wasp_filter_connections_denied_total{filter=\"frontends\"} 1").await;
    assert_eq!(app.hits(), 2, "only the frontend's requests arrived");
}

#[tokio::test]
async fn a_revoked_client_certificate_fails_its_handshake() {
    let pki = Pki::new();
    let app = Upstream::start("app").await;
    let revoked = pki.ca.issue(Names { cn: "stolen", uri: &[FRONTEND], serial: Some(4242), ..Default::default() });
    let valid = pki.ca.issue(Names { cn: "frontend", uri: &[FRONTEND], serial: Some(4243), ..Default::default() });
    std::fs::write(pki.dir.path().join("ca.crl"), pki.ca.crl(&[4242])).expect("write CRL");
    let crl = format!("      crl: [{}]", pki.path("ca.crl"));
    let proxy = TestProxy::new(pki.mtls_config(app.addr, &crl)).start();
    let addr = proxy.addr("ingress");
    let client = tls::client(&pki.ca.pem, Some(&revoked), &["http/1.1"]);
    assert!(tls::get(addr, "app.local", client, "/public/", &[]).await.is_err(), "a revoked certificate is refused");
    wait_for_metric(&proxy, "wasp_tls_handshake_errors_total{listener=\"ingress\",reason=\"revoked\"} 1").await;
    let client = tls::client(&pki.ca.pem, Some(&valid), &["http/1.1"]);
    assert_eq!(tls::get(addr, "app.local", client, "/public/", &[]).await.expect("valid").status, 200);
    assert_eq!(app.hits(), 1);
}
