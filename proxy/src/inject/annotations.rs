//! The `wasp.io/*` annotations a workload sets to steer its injection,
//! read and validated: every bad value is an error naming the annotation.

use serde_yaml_ng::{Mapping, Value};
use std::net::IpAddr;

/// Opt-out: `wasp.io/inject: disabled` on the workload or its pod template.
pub const INJECT: &str = "wasp.io/inject";
/// Extra inbound ports the interception leaves alone (9901 always is).
pub const EXCLUDE_INBOUND_PORTS: &str = "wasp.io/exclude-inbound-ports";
/// Outbound destination ports the interception leaves alone.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "wasp.io/exclude-outbound-ports";
/// Outbound destination CIDRs the interception leaves alone.
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "wasp.io/exclude-outbound-cidrs";
/// `tcp` (default) or `http`: what the outbound listener speaks.
pub const OUTBOUND_PROTOCOL: &str = "wasp.io/outbound-protocol";
/// Set by inject on the pod template: the wasp version that injected it.
pub const INJECTED: &str = "wasp.io/injected";
/// Set by inject on the pod template: the generated wasp config.
pub const CONFIG: &str = "wasp.io/config";

/// What the annotations ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub disabled: bool,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<String>,
    pub outbound_http: bool,
}

/// Reads the settings: the pod template's annotation wins over the
/// workload's. Returns every problem found.
pub fn read(template: Option<&Mapping>, workload: Option<&Mapping>) -> Result<Settings, Vec<String>> {
    let mut errors = Vec::new();
    let mut get = |key: &str| -> Option<String> {
        let value = template.and_then(|m| m.get(key)).or_else(|| workload.and_then(|m| m.get(key)))?;
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                errors.push(format!("annotation {key}: expected a string, found {}", kind_of(other)));
                None
            }
        }
    };
    let inject = get(INJECT);
    let inbound = get(EXCLUDE_INBOUND_PORTS);
    let outbound = get(EXCLUDE_OUTBOUND_PORTS);
    let cidrs = get(EXCLUDE_OUTBOUND_CIDRS);
    let protocol = get(OUTBOUND_PROTOCOL);
    let mut settings = Settings::default();
    match inject.as_deref() {
        None | Some("enabled") => {}
        Some("disabled") => settings.disabled = true,
        Some(other) => errors.push(format!("annotation {INJECT}: {other:?}; expected \"enabled\" or \"disabled\"")),
    }
    settings.exclude_inbound_ports = list(EXCLUDE_INBOUND_PORTS, inbound.as_deref(), port, &mut errors);
    settings.exclude_outbound_ports = list(EXCLUDE_OUTBOUND_PORTS, outbound.as_deref(), port, &mut errors);
    settings.exclude_outbound_cidrs = list(EXCLUDE_OUTBOUND_CIDRS, cidrs.as_deref(), cidr, &mut errors);
    match protocol.as_deref() {
        None | Some("tcp") => {}
        Some("http") => settings.outbound_http = true,
        Some(other) => errors.push(format!("annotation {OUTBOUND_PROTOCOL}: {other:?}; expected \"tcp\" or \"http\"")),
    }
    if errors.is_empty() { Ok(settings) } else { Err(errors) }
}

/// A comma list (spaces around items allowed, empty items not).
fn list<T>(key: &str, value: Option<&str>, item: fn(&str) -> Result<T, String>, errors: &mut Vec<String>) -> Vec<T> {
    let Some(value) = value else { return Vec::new() };
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim) {
        match item(part) {
            Ok(v) => out.push(v),
            Err(why) => errors.push(format!("annotation {key}: {value:?}: {why}")),
        }
    }
    out
}

fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port (1-65535)")),
    }
}

fn cidr(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, fd00::/8)");
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len {
        None => Ok(s.to_string()),
        Some(l) if !l.starts_with('+') && l.parse::<u8>().is_ok_and(|n| n <= max) => Ok(s.to_string()),
        Some(_) => Err(bad()),
    }
}

/// A YAML value's kind, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Mapping {
        pairs.iter().map(|(k, v)| (Value::from(*k), Value::from(*v))).collect()
    }

    #[test]
    fn lists_are_validated_and_trimmed() {
        let m = with(&[
            (EXCLUDE_INBOUND_PORTS, "8081, 9090"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/8,fd00::/8,169.254.169.254"),
            (OUTBOUND_PROTOCOL, "http"),
        ]);
        let s = read(Some(&m), None).expect("valid");
        assert_eq!(s.exclude_inbound_ports, [8081, 9090]);
        assert_eq!(s.exclude_outbound_cidrs, ["10.0.0.0/8", "fd00::/8", "169.254.169.254"]);
        assert!(s.outbound_http && !s.disabled);
    }

    #[test]
    fn every_bad_value_is_reported() {
        let m = with(&[
            (EXCLUDE_OUTBOUND_PORTS, "0,70000,x,"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/33,fd00::/129,10.0.0.0/-1,host"),
            (INJECT, "no"),
        ]);
        let errors = read(Some(&m), None).expect_err("invalid");
        assert_eq!(errors.len(), 9, "{errors:#?}");
    }

    #[test]
    fn template_wins_over_workload() {
        let t = with(&[(INJECT, "enabled")]);
        let w = with(&[(INJECT, "disabled")]);
        assert!(!read(Some(&t), Some(&w)).expect("valid").disabled);
        assert!(read(None, Some(&w)).expect("valid").disabled);
    }
}
