//! WebSocket (HTTP/1.1 Upgrade) passes through wasp to a real WebSocket server.

use crate::support::{TestProxy, one_route, rename_over};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server echoing text and binary messages.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.expect("ws handshake");
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    upstream
}

#[tokio::test]
async fn websocket_messages_echo_through_the_proxy() {
    let upstream = echo_server().await;
    let proxy = TestProxy::new(one_route(&[upstream], "http1", "", "")).start();
    let stream = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    let url = format!("ws://{}/chat", proxy.addr("ingress"));
    let (mut ws, resp) = tokio_tungstenite::client_async(url, stream).await.expect("upgrade through wasp");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(ws.next().await.expect("msg").expect("ok"), Message::text("hello"));
    let blob = vec![42u8; 200_000];
    ws.send(Message::binary(blob.clone())).await.expect("send");
    assert_eq!(ws.next().await.expect("msg").expect("ok"), Message::binary(blob));
    ws.close(None).await.expect("close");
    let log = proxy.wait_access_log(1);
    assert_eq!(log[0]["status"], 101);
}

#[tokio::test]
async fn a_tunnel_of_a_removed_listener_closes_at_its_drain_deadline() {
    let upstream = echo_server().await;
    let yaml = format!("drain_timeout: 1s\n{}", one_route(&[upstream], "http1", "", ""));
    let mut proxy = TestProxy::new(yaml.clone()).start();
    let stream = TcpStream::connect(proxy.addr("ingress")).await.expect("connect");
    let url = format!("ws://{}/chat", proxy.addr("ingress"));
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("upgrade through wasp");

    rename_over(&proxy.config_path(), yaml.replace("name: ingress", "name: other").as_bytes());
    proxy.wait_listening("other");
    proxy.wait_stderr("listener removed; draining its connections");
    ws.send(Message::text("still here")).await.expect("send while draining");
    assert_eq!(ws.next().await.expect("msg").expect("ok"), Message::text("still here"));
    let line = proxy.wait_stderr("drain timeout passed; closing its remaining connections");
    assert!(line.contains("\"remaining\":1"), "the tunnel is one of the listener's connections: {line}");
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
    assert!(matches!(end, Ok(None | Some(Err(_)))), "the tunnel is closed: {end:?}");
}

/// A tunnel holds its connection's place under `max_connections` and is
/// closed after `tunnel_idle_timeout` of silence (counted).
#[tokio::test]
async fn a_tunnel_counts_as_a_connection_and_closes_when_idle() {
    let upstream = echo_server().await;
    let yaml = one_route(&[upstream], "http1", "", "")
        .replace("    routes:\n", "    limits: { max_connections: 1, tunnel_idle_timeout: 500ms }\n    routes:\n");
    let proxy = TestProxy::new(yaml).start();
    let addr = proxy.addr("ingress");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/chat"), stream).await.expect("upgrade through wasp");
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(ws.next().await.expect("msg").expect("ok"), Message::text("hi"));

    // The one connection slot is the tunnel's: a second client waits in the backlog.
    let mut second = TcpStream::connect(addr).await.expect("connect (backlog)");
    second.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 512];
    let waited = tokio::time::timeout(std::time::Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "the tunnel holds the only connection slot");

    // Silent for longer than tunnel_idle_timeout: closed, and the slot freed.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
    assert!(matches!(end, Ok(None | Some(Err(_)))), "the idle tunnel is closed: {end:?}");
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("served once the tunnel closed")
        .expect("read");
    assert!(n > 0);
    crate::support::wait_for_metric(&proxy, "wasp_timeouts_total{kind=\"tunnel_idle\",listener=\"ingress\"} 1").await;
}
