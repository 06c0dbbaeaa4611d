//! WebSocket (HTTP/1.1 Upgrade) passes through wasp to a real WebSocket server.

use crate::support::{TestProxy, one_route};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_messages_echo_through_the_proxy() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.expect("ws handshake");
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.expect("echo");
                    }
                }
            });
        }
    });
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
