//! `match.destination`: which original destinations (the `ip:port` a
//! redirected client connected to) a route takes, and the built-in
//! `original_destination` cluster that forwards to that address.

use std::net::{IpAddr, SocketAddr};

/// The cluster that sends each connection (or request) to the address its
/// client originally connected to, before `wasp iptables` redirected it.
pub const ORIGINAL_DESTINATION: &str = "original_destination";

/// A set of destinations: an address or network (or any), and a port (or any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationMatch {
    /// Network and prefix length; `None`: any address.
    net: Option<(IpAddr, u8)>,
    /// `None`: any port.
    port: Option<u16>,
}

impl DestinationMatch {
    /// Parses `ip`, `ip/prefix` or `*`, each with an optional `:port`
    /// (IPv6 in brackets when a port follows: `[fd00::/8]:443`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid destination {text:?}: {why}; expected e.g. \"10.0.0.0/8\", \"10.1.2.3:80\", \"*:443\" or \"[fd00::1]:80\""
            )
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            match after {
                "" => (inside, None),
                _ => (inside, Some(after.strip_prefix(':').ok_or_else(|| bad("expected `:port` after `]`"))?)),
            }
        } else if text.matches(':').count() == 1 {
            let (h, p) = text.split_once(':').unwrap_or((text, ""));
            (h, Some(p))
        } else {
            (text, None)
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(bad("the port must be 1 to 65535")),
            },
        };
        let net = match host {
            "*" => None,
            _ => {
                let (ip, len) = match host.split_once('/') {
                    Some((ip, len)) => (ip, Some(len)),
                    None => (host, None),
                };
                let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len = match len {
                    None => max,
                    Some(l) => match l.parse::<u8>() {
                        Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
                        _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
                    },
                };
                if mask(ip, len) != ip {
                    return Err(bad(&format!("host bits are set; the network is {}/{len}", mask(ip, len))));
                }
                Some((ip, len))
            }
        };
        Ok(DestinationMatch { net, port })
    }

    /// Whether `addr` is in the set (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn matches(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.port.is_none_or(|p| p == addr.port())
            && self.net.is_none_or(|(net, len)| net.is_ipv4() == ip.is_ipv4() && mask(ip, len) == net)
    }
}

/// `ip` with all but its first `len` bits cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::from(bits.to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::from(bits.to_be_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str, addr: &str) -> bool {
        DestinationMatch::parse(text).unwrap_or_else(|e| panic!("{e}")).matches(addr.parse().expect("addr"))
    }

    #[test]
    fn addresses_networks_and_ports() {
        assert!(m("10.1.2.3:80", "10.1.2.3:80"));
        assert!(!m("10.1.2.3:80", "10.1.2.3:81"));
        assert!(m("10.1.2.3", "10.1.2.3:9"));
        assert!(m("10.0.0.0/8", "10.200.0.1:443"));
        assert!(!m("10.0.0.0/8", "11.0.0.1:443"));
        assert!(m("*:443", "192.0.2.1:443"));
        assert!(m("*:443", "[2001:db8::1]:443"));
        assert!(m("0.0.0.0/0", "192.0.2.1:1"));
        assert!(m("[fd00::/8]:80", "[fd12::1]:80"));
        assert!(m("fd00::/8", "[fd12::1]:1"));
        assert!(!m("fd00::/8", "10.0.0.1:1"));
        assert!(m("10.0.0.0/8", "[::ffff:10.0.0.1]:80"));
    }

    #[test]
    fn malformed_destinations_say_why() {
        for (text, why) in [
            ("10.0.0.1:0", "port"),
            ("10.0.0.1:http", "port"),
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.1/8", "host bits"),
            ("example.com:80", "not an IP"),
            ("[::1", "unclosed"),
            ("[::1]80", "`:port`"),
            ("", "not an IP"),
        ] {
            let e = DestinationMatch::parse(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
