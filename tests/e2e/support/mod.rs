//! Test harness: start the real `wasp` binary on port 0 ([`TestProxy`])
//! against real hyper upstreams ([`Upstream`]) and talk to it with real
//! HTTP/1.1 and HTTP/2 clients ([`client`]).

pub mod client;
pub mod filters;
pub mod load;
pub mod proxy;
pub mod raw;
pub mod tls;
pub mod upstream;

pub use proxy::{Running, TestProxy, refused};
pub use upstream::Upstream;

use std::time::{Duration, Instant};

/// A localhost port nothing listens on (bound, then released).
pub fn refused_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The usual single-route config to one cluster, with extra YAML appended to the route.
pub fn one_route(endpoints: &[std::net::SocketAddr], protocol: &str, route_extra: &str, cluster_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - name: main
        cluster: app
{route_extra}
clusters:
  - name: app
    endpoints: [{}]
    protocol: {protocol}
{cluster_extra}
",
        eps.join(", ")
    )
}

/// The proxy's `/metrics` text.
pub async fn metrics(proxy: &Running) -> String {
    let reply = client::get(&client::h1(), &proxy.admin_url("/metrics")).await;
    String::from_utf8(reply.body.to_vec()).expect("metrics are UTF-8")
}

/// Waits until `/metrics` has the whole line `line`.
pub async fn wait_for_metric(proxy: &Running, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics(proxy).await.lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "no metric {line:?} in:\n{}", metrics(proxy).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `bytes` over `path` atomically: a new file renamed over the old one.
pub fn rename_over(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
