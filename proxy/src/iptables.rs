//! `wasp iptables install|remove`: the nat-table rules that send a pod's
//! (or host's) TCP through wasp without changing the app, as Istio's and
//! Linkerd's init containers do. Inbound TCP is redirected to the ingress
//! listener, outbound TCP to the egress listener; wasp's own traffic
//! (by uid, and by packet mark if given), loopback, the excluded ports and
//! networks pass untouched. Both listeners need `original_destination: true`.
//!
//! Everything lives in four chains of our own (`WASP_*`) and two jumps
//! into them, so `install` can start from scratch each time (running it
//! twice gives the same rules) and `remove` takes away exactly what
//! `install` added.

use std::net::IpAddr;
use std::process::Command;

/// Settings of `wasp iptables install`.
#[derive(clap::Args, Debug, Clone)]
pub struct Install {
    /// The uid wasp runs as: its connections are never redirected.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Also exempt packets carrying this firewall mark (SO_MARK).
    #[arg(long)]
    pub proxy_mark: Option<u32>,
    /// Port of wasp's ingress listener (inbound TCP goes there).
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Port of wasp's egress listener (outbound TCP goes there).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Inbound destination ports left alone (e.g. wasp's admin port, for probes).
    #[arg(long, value_delimiter = ',', default_value = "9901", value_parser = port)]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    #[arg(long, value_delimiter = ',', value_parser = port)]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination networks left alone (`10.0.0.0/8`, `169.254.169.254`).
    #[arg(long, value_delimiter = ',', value_parser = cidr)]
    pub exclude_outbound_cidrs: Vec<String>,
    /// Also install the rules for IPv6 (with ip6tables).
    #[arg(long)]
    pub ipv6: bool,
    /// Print the commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Settings of `wasp iptables remove`.
#[derive(clap::Args, Debug, Clone)]
pub struct Remove {
    /// Also remove the IPv6 rules.
    #[arg(long)]
    pub ipv6: bool,
    /// Print the commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
}

const INBOUND: &str = "WASP_INBOUND";
const IN_REDIRECT: &str = "WASP_IN_REDIRECT";
const OUTPUT: &str = "WASP_OUTPUT";
const OUT_REDIRECT: &str = "WASP_OUT_REDIRECT";
const CHAINS: [&str; 4] = [IN_REDIRECT, INBOUND, OUT_REDIRECT, OUTPUT];

/// The jumps from the built-in chains into ours.
const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND), ("OUTPUT", OUTPUT)];

/// An IP family's tool and loopback network.
#[derive(Clone, Copy)]
struct Family {
    tool: &'static str,
    loopback: &'static str,
    v6: bool,
}

const V4: Family = Family { tool: "iptables", loopback: "127.0.0.0/8", v6: false };
const V6: Family = Family { tool: "ip6tables", loopback: "::1/128", v6: true };

fn families(ipv6: bool) -> Vec<Family> {
    if ipv6 { vec![V4, V6] } else { vec![V4] }
}

/// One rule in our chains, as `iptables -t nat` arguments.
fn rule(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The rules `install` puts in our chains for `family`, in order.
fn chain_rules(s: &Install, family: Family) -> Vec<Vec<String>> {
    let (inbound, outbound) = (s.inbound_port.to_string(), s.outbound_port.to_string());
    let mut rules = vec![
        rule(&["-A", IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound]),
        rule(&["-A", OUT_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound]),
    ];
    // Inbound: to wasp's own ports and the excluded ones as it came; the rest to the ingress listener.
    let mut keep_in = vec![s.inbound_port, s.outbound_port];
    keep_in.extend(&s.exclude_inbound_ports);
    for ports in port_lists(&keep_in) {
        rules.push(rule(&["-A", INBOUND, "-p", "tcp", "-m", "multiport", "--dports", &ports, "-j", "RETURN"]));
    }
    rules.push(rule(&["-A", INBOUND, "-p", "tcp", "-j", IN_REDIRECT]));
    // Outbound: wasp's own connections, loopback, excluded ports and networks go out as they are.
    rules.push(rule(&["-A", OUTPUT, "-m", "owner", "--uid-owner", &s.proxy_uid.to_string(), "-j", "RETURN"]));
    if let Some(mark) = s.proxy_mark {
        rules.push(rule(&["-A", OUTPUT, "-m", "mark", "--mark", &mark.to_string(), "-j", "RETURN"]));
    }
    rules.push(rule(&["-A", OUTPUT, "-d", family.loopback, "-j", "RETURN"]));
    for ports in port_lists(&s.exclude_outbound_ports) {
        rules.push(rule(&["-A", OUTPUT, "-p", "tcp", "-m", "multiport", "--dports", &ports, "-j", "RETURN"]));
    }
    for net in s.exclude_outbound_cidrs.iter().filter(|n| n.contains(':') == family.v6) {
        rules.push(rule(&["-A", OUTPUT, "-d", net, "-j", "RETURN"]));
    }
    rules.push(rule(&["-A", OUTPUT, "-p", "tcp", "-j", OUT_REDIRECT]));
    rules
}

/// `ports` as `multiport` lists (at most 15 ports each), duplicates dropped.
fn port_lists(ports: &[u16]) -> Vec<String> {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.chunks(15).map(|c| c.iter().map(u16::to_string).collect::<Vec<_>>().join(",")).collect()
}

/// Runs (or, dry, prints) `tool -t nat args…`; whether it succeeded.
fn run(tool: &str, args: &[String], dry_run: bool, quiet: bool) -> Result<bool, String> {
    let line = format!("{tool} -t nat {}", args.join(" "));
    if dry_run {
        if !quiet {
            println!("{line}");
        }
        return Ok(true);
    }
    let out = Command::new(tool).args(["-w", "-t", "nat"]).args(args).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{tool} not found: install iptables (e.g. apt-get install iptables)"),
        _ => format!("cannot run {tool}: {e}"),
    })?;
    if !quiet {
        println!("{line}");
    }
    if out.status.success() {
        return Ok(true);
    }
    if quiet {
        return Ok(false);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!("`{line}` failed: {}", err.trim()))
}

/// Takes our jumps and chains away (each only if present).
fn remove_family(tool: &str, dry_run: bool) -> Result<(), String> {
    for (from, to) in JUMPS {
        let jump = rule(&[from, "-p", "tcp", "-j", to]);
        let check = [vec!["-C".to_string()], jump.clone()].concat();
        // Several copies (an install interrupted and run again) all go.
        while !dry_run && run(tool, &check, false, true)? {
            run(tool, &[vec!["-D".to_string()], jump.clone()].concat(), false, false)?;
        }
        if dry_run {
            run(tool, &[vec!["-D".to_string()], jump].concat(), true, false)?;
        }
    }
    // Our chains refer to each other: empty all of them, then delete them.
    for op in ["-F", "-X"] {
        for chain in CHAINS {
            let exists = dry_run || run(tool, &rule(&["-S", chain]), false, true)?;
            if exists {
                run(tool, &rule(&[op, chain]), dry_run, false)?;
            }
        }
    }
    Ok(())
}

/// `wasp iptables install`.
pub fn install(s: &Install) -> Result<(), String> {
    for family in families(s.ipv6) {
        remove_family(family.tool, s.dry_run)?;
        for chain in CHAINS {
            run(family.tool, &rule(&["-N", chain]), s.dry_run, false)?;
        }
        for r in chain_rules(s, family) {
            run(family.tool, &r, s.dry_run, false)?;
        }
        for (from, to) in JUMPS {
            run(family.tool, &rule(&["-A", from, "-p", "tcp", "-j", to]), s.dry_run, false)?;
        }
    }
    Ok(())
}

/// `wasp iptables remove`.
pub fn remove(s: &Remove) -> Result<(), String> {
    for family in families(s.ipv6) {
        remove_family(family.tool, s.dry_run)?;
    }
    Ok(())
}

fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port (1-65535)")),
    }
}

/// An address or network, normalised to `ip/prefix`.
fn cidr(text: &str) -> Result<String, String> {
    let text = text.trim();
    let (ip, len) = text.split_once('/').map_or((text, None), |(ip, len)| (ip, Some(len)));
    let ip: IpAddr = ip.parse().map_err(|_| format!("{text:?} is not an address or network (e.g. 10.0.0.0/8)"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => {
            l.parse::<u8>().ok().filter(|n| *n <= max).ok_or(format!("{text:?}: the prefix must be 0 to {max}"))?
        }
    };
    Ok(format!("{ip}/{len}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Install {
        Install {
            proxy_uid: 1337,
            proxy_mark: Some(7),
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: vec![9901, 22],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec!["169.254.169.254/32".into(), "fd00::/8".into()],
            ipv6: false,
            dry_run: true,
        }
    }

    #[test]
    fn rules_exempt_wasp_loopback_and_exclusions_before_redirecting() {
        let text: Vec<String> = chain_rules(&settings(), V4).iter().map(|r| r.join(" ")).collect();
        let expected = [
            "-A WASP_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A WASP_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A WASP_INBOUND -p tcp -m multiport --dports 22,9901,15001,15006 -j RETURN",
            "-A WASP_INBOUND -p tcp -j WASP_IN_REDIRECT",
            "-A WASP_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A WASP_OUTPUT -m mark --mark 7 -j RETURN",
            "-A WASP_OUTPUT -d 127.0.0.0/8 -j RETURN",
            "-A WASP_OUTPUT -p tcp -m multiport --dports 5432 -j RETURN",
            "-A WASP_OUTPUT -d 169.254.169.254/32 -j RETURN",
            "-A WASP_OUTPUT -p tcp -j WASP_OUT_REDIRECT",
        ];
        assert_eq!(text, expected);
        let v6: Vec<String> = chain_rules(&settings(), V6).iter().map(|r| r.join(" ")).collect();
        assert!(v6.contains(&"-A WASP_OUTPUT -d fd00::/8 -j RETURN".to_string()), "{v6:?}");
        assert!(v6.contains(&"-A WASP_OUTPUT -d ::1/128 -j RETURN".to_string()), "{v6:?}");
    }

    #[test]
    fn long_port_lists_are_split_for_multiport() {
        let ports: Vec<u16> = (1..=20).collect();
        assert_eq!(port_lists(&ports), ["1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", "16,17,18,19,20"]);
    }

    #[test]
    fn bad_ports_and_networks_are_refused() {
        assert!(port("0").is_err());
        assert!(port("http").is_err());
        assert_eq!(cidr("10.0.0.1").as_deref(), Ok("10.0.0.1/32"));
        assert!(cidr("10.0.0.0/33").expect_err("prefix").contains("prefix"));
        assert!(cidr("example.com").expect_err("name").contains("not an address"));
    }
}
