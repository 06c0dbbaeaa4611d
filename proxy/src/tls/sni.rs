//! SNI passthrough: the ClientHello is read (and kept, to be replayed to the
//! upstream byte for byte) only far enough to learn the server name the
//! client asks for; the TLS session itself is the client's and the
//! upstream's, untouched.

use rustls::server::Acceptor;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The largest ClientHello wasp reads before giving up (post-quantum key
/// shares make them a few KiB; TLS allows up to 16 KiB per record, and a
/// hello may span several).
const MAX_HELLO: usize = 64 * 1024;

/// The bytes read up to the end of the ClientHello, and its server name
/// (lower case); or the `wasp_tls_handshake_errors_total` reason.
pub async fn peek(tcp: &mut TcpStream, deadline: Duration) -> Result<(Vec<u8>, Option<String>), &'static str> {
    let read = async {
        let mut acceptor = Acceptor::default();
        let mut seen = Vec::with_capacity(2048);
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.map_err(|_| "io")?;
            if n == 0 {
                return Err("io");
            }
            seen.extend_from_slice(&chunk[..n]);
            let mut fed = &chunk[..n];
            while !fed.is_empty() {
                acceptor.read_tls(&mut fed).map_err(|_| "protocol_error")?;
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let sni = accepted.client_hello().server_name().map(str::to_ascii_lowercase);
                    return Ok((seen, sni));
                }
                Ok(None) if seen.len() < MAX_HELLO => {}
                Ok(None) => return Err("protocol_error"),
                Err((rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }, _)) => {
                    return Err("not_tls");
                }
                Err(_) => return Err("protocol_error"),
            }
        }
    };
    tokio::time::timeout(deadline, read).await.unwrap_or(Err("timeout"))
}
