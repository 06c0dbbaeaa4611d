//! TCP listeners copy bytes both ways, pass half-close through, and count bytes.

use crate::support::metrics;
use crate::support::upstream::{hex, pattern};
use crate::support::{TestProxy, refused_addr};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn tcp_config(endpoint: std::net::SocketAddr) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: db, address: 127.0.0.1:0, protocol: tcp, cluster: db }}
clusters:
  - {{ name: db, endpoints: [\"{endpoint}\"] }}
"
    )
}

/// Reads until the client half-closes, then answers with the length and hash.
async fn hashing_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                conn.read_to_end(&mut data).await.expect("read to EOF");
                let reply = format!("{} {}", data.len(), hex(&Sha256::digest(&data)));
                conn.write_all(reply.as_bytes()).await.expect("reply after half-close");
            });
        }
    });
    addr
}

#[tokio::test]
async fn bytes_flow_both_ways_through_a_half_close() {
    let server = hashing_server().await;
    let proxy = TestProxy::new(tcp_config(server)).start();
    let data = pattern(0, 3 << 20);
    let mut conn = TcpStream::connect(proxy.addr("db")).await.expect("connect");
    conn.write_all(&data).await.expect("write");
    conn.shutdown().await.expect("half-close");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut reply)).await.expect("reply").expect("read");
    assert_eq!(reply, format!("{} {}", data.len(), hex(&Sha256::digest(&data))));

    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["kind"], "tcp");
    assert_eq!(log[0]["bytes_in"], data.len());
    assert_eq!(log[0]["bytes_out"], reply.len());
    let m = metrics(&proxy).await;
    assert!(
        m.contains(&format!("wasp_tcp_bytes_total{{direction=\"upstream\",listener=\"db\"}} {}", data.len())),
        "{m}"
    );
    assert!(m.contains(&format!("wasp_tcp_bytes_total{{direction=\"downstream\",listener=\"db\"}} {}", reply.len())));
}

#[tokio::test]
async fn a_refused_upstream_closes_the_client_connection() {
    let proxy = TestProxy::new(tcp_config(refused_addr())).start();
    let mut conn = TcpStream::connect(proxy.addr("db")).await.expect("connect");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "client must be closed promptly");
    assert!(buf.is_empty());
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["reason"], "wasp_upstream_connect_failure");
}
