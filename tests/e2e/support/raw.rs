//! Raw HTTP/1.1 over TCP, for requests a well-behaved client library would
//! never send (absolute-form targets, duplicate `Host`, broken chunking) and
//! for reading responses byte-exact on a keep-alive connection.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` on a new connection and returns everything that comes
/// back until the proxy closes it or `wait` passes.
pub async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, conn.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// The status code at the start of a raw response (0 if there is none).
pub fn status(response: &str) -> u16 {
    response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// One response read off a keep-alive connection.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A keep-alive connection that reads responses exactly as framed.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Self {
        Conn { stream: TcpStream::connect(addr).await.expect("connect"), buf: Vec::new() }
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one response (a `HEAD` response has no body: `head_only`);
    /// `None` if the connection closed or nothing came within 5 s.
    pub async fn response(&mut self, head_only: bool) -> Option<Response> {
        tokio::time::timeout(Duration::from_secs(5), self.read_response(head_only)).await.ok()?
    }

    /// Whether the proxy closed the connection (reads EOF within 3 s).
    pub async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(3), self.stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.ok()?;
        (n > 0).then(|| self.buf.extend_from_slice(&chunk[..n]))
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 2);
                return Some(line);
            }
            self.fill().await?;
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Some(self.buf.drain(..n).collect())
    }

    async fn read_response(&mut self, head_only: bool) -> Option<Response> {
        let status_line = self.line().await?;
        let status = status(&status_line);
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':')?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = Response { status, headers, body: Vec::new() };
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return Some(resp);
        }
        if resp.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            loop {
                let size = usize::from_str_radix(self.line().await?.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break;
                }
                resp.body.extend(self.exact(size).await?);
                self.line().await?;
            }
        } else {
            let len: usize = resp.header("content-length")?.parse().ok()?;
            resp.body = self.exact(len).await?;
        }
        Some(resp)
    }
}
