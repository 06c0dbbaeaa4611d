//! Rules on the client's verified identity (mTLS: a SPIFFE ID such as
//! `spiffe://cluster.local/ns/shop/sa/web`, else a DNS name or CN), applied
//! to every request and, when the filter is a connection filter, to every
//! connection. Patterns match the whole identity; a `*` path segment
//! matches exactly one non-empty segment (as wasp's own `match.peer`).

use serde::Deserialize;

/// The `identities:` member of the config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitiesConfig {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// Validated identity rules.
pub struct Identities {
    /// When not empty, an identity must match one of these.
    allow: Vec<String>,
    /// An identity matching one of these is refused, even if allowed.
    deny: Vec<String>,
}

impl Identities {
    /// Checks every pattern, reporting each bad one with its path.
    pub fn compile(c: IdentitiesConfig, errors: &mut Vec<String>) -> Self {
        for (list, patterns) in [("allow", &c.allow), ("deny", &c.deny)] {
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = check_pattern(p) {
                    errors.push(format!("identities.{list}[{i}]: {e}"));
                }
            }
        }
        Identities { allow: c.allow, deny: c.deny }
    }

    /// Whether a client with `identity` (none without a verified client
    /// certificate) may pass; the error is a fixed text for the reply.
    pub fn check(&self, identity: Option<&str>) -> Result<(), &'static str> {
        let Some(identity) = identity else { return Err("no verified client identity") };
        if self.deny.iter().any(|p| matches(p, identity)) {
            return Err("client identity denied");
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| matches(p, identity)) {
            return Err("client identity not allowed");
        }
        Ok(())
    }
}

/// A pattern is a non-empty identity without whitespace or control
/// characters, where `*` appears only as a whole path segment.
fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() || p.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("{p:?} is not an identity (e.g. spiffe://cluster.local/ns/app/sa/web)"));
    }
    if p.contains('*') && !p.split('/').all(|seg| seg == "*" || !seg.contains('*')) {
        return Err(format!("{p:?}: `*` must be a whole path segment, as in spiffe://td/ns/*/sa/web"));
    }
    Ok(())
}

/// Whether `identity` matches `pattern`: equal, with each `*` segment of
/// the pattern matching exactly one non-empty segment.
fn matches(pattern: &str, identity: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == identity;
    }
    let (mut p, mut i) = (pattern.split('/'), identity.split('/'));
    loop {
        match (p.next(), i.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Identities {
        let c = IdentitiesConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        let mut errors = Vec::new();
        let rules = Identities::compile(c, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        rules
    }

    #[test]
    fn a_star_matches_exactly_one_non_empty_segment() {
        let p = "spiffe://cluster.local/ns/*/sa/frontend";
        assert!(matches(p, "spiffe://cluster.local/ns/shop/sa/frontend"));
        assert!(!matches(p, "spiffe://cluster.local/ns/shop/sa/frontend2"));
        assert!(!matches(p, "spiffe://cluster.local/ns//sa/frontend"));
        assert!(!matches(p, "spiffe://cluster.local/ns/a/b/sa/frontend"));
        assert!(!matches(p, "spiffe://cluster.local/ns/shop/sa"));
        assert!(!matches(p, "spiffe://cluster.local/ns/shop/sa/frontend/x"));
        assert!(matches("spiffe://td/*", "spiffe://td/x"));
        assert!(!matches("spiffe://td/*", "spiffe://td/"));
        assert!(matches("spiffe://td/x", "spiffe://td/x"));
        assert!(!matches("spiffe://td/x", "spiffe://td/X"));
        assert!(matches("web.shop.svc", "web.shop.svc"));
        assert!(!matches("web.shop.svc", "web.shop.svc.evil"));
    }

    #[test]
    fn deny_outranks_allow_and_no_identity_never_passes() {
        let r = rules(&["spiffe://cluster.local/ns/*/sa/frontend"], &["spiffe://cluster.local/ns/quarantine/sa/*"]);
        assert_eq!(r.check(Some("spiffe://cluster.local/ns/shop/sa/frontend")), Ok(()));
        assert_eq!(r.check(Some("spiffe://cluster.local/ns/shop/sa/backend")), Err("client identity not allowed"));
        assert_eq!(r.check(Some("spiffe://cluster.local/ns/quarantine/sa/frontend")), Err("client identity denied"));
        assert_eq!(r.check(None), Err("no verified client identity"));
        let deny_only = rules(&[], &["spiffe://cluster.local/ns/quarantine/sa/*"]);
        assert_eq!(deny_only.check(Some("spiffe://cluster.local/ns/shop/sa/anything")), Ok(()));
        assert_eq!(deny_only.check(None), Err("no verified client identity"));
    }

    #[test]
    fn bad_patterns_are_reported_with_their_path() {
        let c = IdentitiesConfig {
            allow: vec!["spiffe://td/ns/fr*nt".into(), "ok".into(), "".into()],
            deny: vec!["a b".into()],
        };
        let mut errors = Vec::new();
        Identities::compile(c, &mut errors);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("identities.allow[0]: \"spiffe://td/ns/fr*nt\": `*` must be a whole path segment")
        );
        assert!(errors[1].starts_with("identities.allow[2]: \"\" is not an identity"));
        assert!(errors[2].starts_with("identities.deny[0]: \"a b\" is not an identity"));
    }
}
