//! Transparent interception: the address a redirected connection was headed
//! for, and the two ways forwarding to it could loop back into wasp.
//!
//! `wasp iptables` redirects the app's traffic to wasp's listeners with NAT;
//! the kernel keeps the original destination, which a listener with
//! `original_destination: true` reads with `SO_ORIGINAL_DST`. A loop happens
//! when that destination is wasp itself (a client connected straight to a
//! wasp port, or the rules redirect a wasp port), or when wasp's own
//! upstream connections are redirected back to it (wasp does not run as the
//! uid the rules exclude). The first is refused before dialing
//! ([`is_wasp`]); the second when the looped connection arrives
//! ([`from_wasp`]): while any listener recovers original destinations,
//! wasp picks the local port of each upstream connection before connecting
//! and remembers it for the connection's life.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use tokio::net::{TcpSocket, TcpStream};

/// Where `tcp` was headed before a NAT redirect; its local address when it
/// was not redirected (no conntrack entry).
pub fn recover(tcp: &TcpStream, local: SocketAddr) -> SocketAddr {
    let sock = socket2::SockRef::from(tcp);
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6().or_else(|_| sock.original_dst_v4()),
    };
    original.ok().and_then(|a| a.as_socket()).unwrap_or(local)
}

/// Whether `dst` is one of wasp's own sockets: a port wasp listens on
/// (`own_ports`) at an address of this host.
pub fn is_wasp(dst: SocketAddr, own_ports: &[u16]) -> bool {
    own_ports.contains(&dst.port()) && is_local(dst.ip())
}

/// The ports wasp listens on (its listeners and admin), as configured now.
static OWN_PORTS: LazyLock<ArcSwap<Vec<u16>>> = LazyLock::new(Default::default);

/// The ports wasp listens on.
pub fn own_ports() -> Arc<Vec<u16>> {
    OWN_PORTS.load_full()
}

/// Sets the ports wasp listens on (when a config starts serving).
pub fn set_own_ports(ports: Vec<u16>) {
    OWN_PORTS.store(Arc::new(ports));
}

/// Whether a connection from `peer` is one of wasp's own upstream
/// connections, redirected back to it.
pub fn from_wasp(peer: SocketAddr) -> bool {
    let known = DIALS.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&peer.port());
    known && is_local(peer.ip())
}

/// Whether `ip` is an address of this host (binding to it works only then).
fn is_local(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Local ports of wasp's open upstream connections, with how many use each.
static DIALS: LazyLock<Mutex<HashMap<u16, usize>>> = LazyLock::new(Default::default);

/// Whether upstream connections are remembered (a listener recovers original destinations).
static WATCHING: AtomicBool = AtomicBool::new(false);

/// From now on, remember the local port of every upstream connection.
pub fn watch_own_connections() {
    WATCHING.store(true, Ordering::Relaxed);
}

/// An upstream connection's place in the remembered ports, freed on drop.
#[derive(Default)]
pub struct OwnDial(Option<u16>);

impl Drop for OwnDial {
    fn drop(&mut self) {
        if let Some(port) = self.0 {
            let mut dials = DIALS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = dials.get_mut(&port) {
                *n -= 1;
                if *n == 0 {
                    dials.remove(&port);
                }
            }
        }
    }
}

/// Connects to `address` (`host:port`), remembering the local port first
/// when upstream connections are watched.
pub async fn connect(address: &str) -> io::Result<(TcpStream, OwnDial)> {
    if !WATCHING.load(Ordering::Relaxed) {
        return Ok((TcpStream::connect(address).await?, OwnDial::default()));
    }
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{address} resolves to no address"));
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        let any: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        socket.bind(any)?;
        let port = socket.local_addr()?.port();
        *DIALS.lock().unwrap_or_else(|p| p.into_inner()).entry(port).or_default() += 1;
        let own = OwnDial(Some(port));
        match socket.connect(addr).await {
            Ok(stream) => return Ok((stream, own)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasp_ports_on_this_host_are_wasp() {
        assert!(is_wasp("127.0.0.1:15001".parse().expect("addr"), &[15001, 9901]));
        assert!(is_wasp("[::ffff:127.0.0.1]:9901".parse().expect("addr"), &[15001, 9901]));
        assert!(!is_wasp("127.0.0.1:80".parse().expect("addr"), &[15001, 9901]));
        // TEST-NET-1 is never assigned to this host.
        assert!(!is_wasp("192.0.2.1:15001".parse().expect("addr"), &[15001]));
    }

    #[tokio::test]
    async fn watched_connections_are_known_by_their_port_while_open() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        watch_own_connections();
        let (stream, own) = connect(&address).await.expect("connect");
        let (_accepted, peer) = listener.accept().await.expect("accept");
        assert_eq!(peer, stream.local_addr().expect("local"));
        assert!(from_wasp(peer));
        drop((stream, own));
        assert!(!from_wasp(peer));
    }
}
