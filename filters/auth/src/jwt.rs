//! JWT validation (RFC 7519, compact JWS only): split and decode the token,
//! pick the keys its header allows, verify the signature, and only then
//! look at the claims: time (`exp`, `nbf`), then issuer, audience and the
//! required claims.

use crate::cache::TokenCache;
use crate::keys::{Alg, Key};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::rc::Rc;

/// A token's claims, once its signature checked out.
pub type Claims = Map<String, Value>;

/// Longest token accepted, in bytes: bounds the work a client can ask for.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was turned down.
#[derive(Debug, PartialEq)]
pub enum Rejection {
    /// Malformed, badly signed, expired, not yet valid: 401 `invalid_token`.
    Invalid(&'static str),
    /// Genuine and current, but its claims do not meet the requirements:
    /// 403. The `String` names the claim (for the log only).
    Forbidden(&'static str, String),
}

/// A claim the token must carry, optionally with one of some values.
pub struct RequiredClaim {
    /// Claim name, e.g. `tenant`.
    pub name: String,
    /// Accepted values; empty: any value.
    pub values: Vec<Value>,
}

/// Everything a token is checked against.
pub struct Validator {
    /// Keys, each bound to one algorithm.
    pub keys: Vec<Key>,
    /// Accepted `iss` values; empty: any (or none).
    pub issuers: Vec<String>,
    /// Accepted audiences; empty: any (or none).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in milliseconds.
    pub leeway_ms: u64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
    /// Claims that must be present.
    pub required: Vec<RequiredClaim>,
}

impl Validator {
    /// Validates `token` at `now_ms` (ms since the Unix epoch), from `cache`
    /// when it holds it (then only its time is checked again), and returns
    /// its claims.
    pub fn validate_cached(&self, cache: &mut TokenCache, token: &str, now_ms: u64) -> Result<Rc<Claims>, Rejection> {
        if let Some(claims) = cache.get(token) {
            return match self.check_time(&claims, now_ms) {
                Ok(()) => Ok(claims),
                Err(expired) => {
                    cache.remove(token);
                    Err(expired)
                }
            };
        }
        let claims = Rc::new(self.validate(token, now_ms)?);
        cache.insert(token, claims.clone());
        Ok(claims)
    }

    /// Validates `token` at `now_ms` (ms since the Unix epoch) and returns
    /// its claims.
    pub fn validate(&self, token: &str, now_ms: u64) -> Result<Claims, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Invalid("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejection::Invalid(match token.split('.').count() {
                5 => "encrypted tokens (JWE) are not supported",
                _ => "malformed token",
            }));
        };
        let (alg, kid) = parse_header(&decode_json(header)?)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| Rejection::Invalid("malformed token"))?;
        let signing_input = &token.as_bytes()[..header.len() + 1 + payload.len()];
        self.check_signature(alg, kid.as_deref(), signing_input, &signature)?;
        let claims = decode_json(payload)?;
        self.check_time(&claims, now_ms)?;
        self.check_claims(&claims)?;
        Ok(claims)
    }

    /// Tries every key the header allows: the token's algorithm, and its
    /// `kid` if both it and the key have one.
    fn check_signature(&self, alg: Alg, kid: Option<&str>, input: &[u8], signature: &[u8]) -> Result<(), Rejection> {
        let kid_fits = |key: &Key| kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid;
        let mut candidates = self.keys.iter().filter(|key| key.alg == alg && kid_fits(key)).peekable();
        if candidates.peek().is_none() {
            return Err(Rejection::Invalid(if self.keys.iter().any(kid_fits) && kid.is_some() {
                "alg not allowed for this key"
            } else if kid.is_some() {
                "unknown key id"
            } else {
                "alg not accepted"
            }));
        }
        if candidates.any(|key| key.verify(input, signature)) {
            Ok(())
        } else {
            Err(Rejection::Invalid("signature invalid"))
        }
    }

    fn check_time(&self, claims: &Claims, now_ms: u64) -> Result<(), Rejection> {
        let now = now_ms as f64;
        let leeway = self.leeway_ms as f64;
        match numeric_date(claims, "exp")? {
            Some(exp) if now >= exp * 1000.0 + leeway => return Err(Rejection::Invalid("token expired")),
            None if self.require_exp => return Err(Rejection::Invalid("token has no exp")),
            _ => {}
        }
        match numeric_date(claims, "nbf")? {
            Some(nbf) if now + leeway < nbf * 1000.0 => Err(Rejection::Invalid("token not yet valid")),
            _ => Ok(()),
        }
    }

    fn check_claims(&self, claims: &Claims) -> Result<(), Rejection> {
        if !self.issuers.is_empty() {
            let iss = claims.get("iss").and_then(Value::as_str);
            if !iss.is_some_and(|iss| self.issuers.iter().any(|i| i == iss)) {
                return Err(Rejection::Forbidden("issuer not allowed", "iss".into()));
            }
        }
        if !self.audiences.is_empty() && !audience_fits(claims.get("aud"), &self.audiences) {
            return Err(Rejection::Forbidden("audience not allowed", "aud".into()));
        }
        for required in &self.required {
            let Some(value) = claims.get(&required.name) else {
                return Err(Rejection::Forbidden("required claim missing", required.name.clone()));
            };
            if !required.values.is_empty()
                && !required.values.iter().any(|want| value_fits(&required.name, value, want))
            {
                return Err(Rejection::Forbidden("claim value not allowed", required.name.clone()));
            }
        }
        Ok(())
    }
}

/// The header's algorithm and key id. `alg: none`, unknown algorithms and
/// critical extensions (`crit`) are refused.
fn parse_header(header: &Map<String, Value>) -> Result<(Alg, Option<String>), Rejection> {
    if header.contains_key("crit") {
        return Err(Rejection::Invalid("unsupported critical header"));
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some(name) if name.eq_ignore_ascii_case("none") => {
            return Err(Rejection::Invalid("unsigned tokens are not accepted"));
        }
        Some(name) => Alg::parse(name).ok_or(Rejection::Invalid("alg not accepted"))?,
        None => return Err(Rejection::Invalid("malformed token")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Rejection::Invalid("malformed token")),
    };
    Ok((alg, kid))
}

/// A base64url JSON object (a token's header or payload).
fn decode_json(part: &str) -> Result<Map<String, Value>, Rejection> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| Rejection::Invalid("malformed token"))?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::Invalid("malformed token"))
}

/// A NumericDate claim in seconds, if present; any other JSON type is malformed.
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<f64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(Rejection::Invalid("malformed time claim")),
    }
}

/// `aud` is one string or an array of strings; one of them must be accepted.
fn audience_fits(aud: Option<&Value>, accepted: &[String]) -> bool {
    let fits = |v: &Value| v.as_str().is_some_and(|a| accepted.iter().any(|want| want == a));
    match aud {
        Some(Value::Array(items)) => items.iter().any(fits),
        Some(single) => fits(single),
        None => false,
    }
}

/// Whether claim `name` with `value` carries `want`: equal to it, an array
/// holding it, or, for `scope`/`scp`, a space-separated list naming it.
fn value_fits(name: &str, value: &Value, want: &Value) -> bool {
    match (value, want) {
        (Value::Array(items), _) => items.contains(want),
        (Value::String(have), Value::String(want)) if matches!(name, "scope" | "scp") => {
            have.split(' ').any(|word| word == want)
        }
        _ => value == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Jwk;
    use hmac::{Hmac, Mac};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn validator() -> Validator {
        let jwk: Jwk = serde_json::from_value(json!({"alg": "HS256", "kid": "k1", "secret": SECRET})).expect("jwk");
        Validator {
            keys: vec![Key::load(&jwk, false).expect("ok").expect("key")],
            issuers: vec!["iss-a".into()],
            audiences: vec!["api".into()],
            leeway_ms: 60_000,
            require_exp: true,
            required: vec![RequiredClaim { name: "scope".into(), values: vec![json!("read")] }],
        }
    }

    fn sign(header: Value, claims: Value) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("mac");
        mac.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"sub": "u", "iss": "iss-a", "aud": ["x", "api"], "exp": 2000, "scope": "write read"});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn a_cached_token_costs_a_lookup_and_still_expires() {
        let v = validator();
        let mut cache = TokenCache::new(2);
        let token = sign(json!({"alg": "HS256"}), claims(json!({})));
        let first = v.validate_cached(&mut cache, &token, NOW).expect("valid");
        let again = v.validate_cached(&mut cache, &token, NOW).expect("cached");
        assert!(Rc::ptr_eq(&first, &again), "the second check is the cache's");
        // exp 2000 s with a 60 s leeway: gone at 2060 s, and forgotten.
        assert_eq!(v.validate_cached(&mut cache, &token, 2_060_000), Err(Rejection::Invalid("token expired")));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_cache_hit_keeps_the_time_rules_to_the_millisecond() {
        let v = validator();
        let mut cache = TokenCache::new(8);
        // exp 2000 s, nbf 990 s, leeway 60 s: valid from 930,000 ms to 2,059,999 ms.
        let token = sign(json!({"alg": "HS256"}), claims(json!({"nbf": 990})));
        v.validate_cached(&mut cache, &token, NOW).expect("valid, and kept");
        assert!(v.validate_cached(&mut cache, &token, 2_059_999).is_ok(), "the last millisecond");
        assert_eq!(
            v.validate_cached(&mut cache, &token, 929_999),
            Err(Rejection::Invalid("token not yet valid")),
            "the clock went back before nbf: refused from the cache too"
        );
        v.validate_cached(&mut cache, &token, NOW).expect("valid again");
        assert_eq!(v.validate_cached(&mut cache, &token, 2_060_000), Err(Rejection::Invalid("token expired")));
    }

    #[test]
    fn the_cache_never_vouches_for_another_token() {
        let v = validator();
        let mut cache = TokenCache::new(8);
        let token = sign(json!({"alg": "HS256"}), claims(json!({})));
        v.validate_cached(&mut cache, &token, NOW).expect("valid");
        // The same claims under a changed signature byte, and refused claims: misses, and refused.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(v.validate_cached(&mut cache, &tampered, NOW), Err(Rejection::Invalid("signature invalid")));
        let wrong_issuer = sign(json!({"alg": "HS256"}), claims(json!({"iss": "iss-b"})));
        assert!(matches!(v.validate_cached(&mut cache, &wrong_issuer, NOW), Err(Rejection::Forbidden(..))));
        assert!(matches!(v.validate_cached(&mut cache, &wrong_issuer, NOW), Err(Rejection::Forbidden(..))));
        assert_eq!(cache.len(), 1, "only the valid token is kept");
    }

    #[test]
    fn the_cache_is_bounded() {
        let v = validator();
        let mut cache = TokenCache::new(2);
        let tokens: Vec<String> = (0..3).map(|i| sign(json!({"alg": "HS256"}), claims(json!({"jti": i})))).collect();
        for t in &tokens {
            v.validate_cached(&mut cache, t, NOW).expect("valid");
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&tokens[0]).is_none() && cache.get(&tokens[2]).is_some(), "the oldest went");
        let mut off = TokenCache::new(0);
        v.validate_cached(&mut off, &tokens[0], NOW).expect("valid");
        assert_eq!(off.len(), 0, "cache_size 0 keeps nothing");
        let long = sign(json!({"alg": "HS256"}), claims(json!({"pad": "x".repeat(crate::cache::MAX_CACHED_TOKEN)})));
        v.validate_cached(&mut cache, &long, NOW).expect("valid");
        assert!(cache.get(&long).is_none(), "tokens over 4 KiB are not kept");
    }

    #[test]
    fn the_cache_stops_at_its_byte_budget_and_an_expired_token_leaves_no_trace() {
        use crate::cache::{CLAIMS_FACTOR, MAX_CACHE_BYTES};
        let v = validator();
        let mut cache = TokenCache::new(1_000);
        let big = |i: usize| sign(json!({"alg": "HS256"}), claims(json!({"jti": i, "pad": "x".repeat(2_000)})));
        let first = big(0);
        let fits = MAX_CACHE_BYTES / (first.len() * CLAIMS_FACTOR);
        for i in 0..fits + 5 {
            v.validate_cached(&mut cache, &big(i), NOW).expect("valid");
        }
        assert_eq!(cache.len(), fits, "no more than 1 MiB, counted with the claims");
        assert!(cache.get(&first).is_none(), "the oldest went first");
        // Expired and forgotten, then (the clock went back) valid and kept again: kept once.
        let mut cache = TokenCache::new(2);
        let token = sign(json!({"alg": "HS256"}), claims(json!({})));
        v.validate_cached(&mut cache, &token, NOW).expect("valid");
        assert!(v.validate_cached(&mut cache, &token, 2_060_000).is_err());
        v.validate_cached(&mut cache, &token, NOW).expect("valid again");
        let other = sign(json!({"alg": "HS256"}), claims(json!({"jti": 1})));
        v.validate_cached(&mut cache, &other, NOW).expect("valid");
        assert!(cache.get(&token).is_some() && cache.get(&other).is_some(), "no stale entry evicted a live one");
    }

    #[test]
    fn a_good_token_passes_and_time_has_leeway() {
        let v = validator();
        let hs = json!({"alg": "HS256", "kid": "k1"});
        assert_eq!(v.validate(&sign(hs.clone(), claims(json!({}))), NOW).expect("valid")["sub"], "u");
        assert!(v.validate(&sign(hs.clone(), claims(json!({"exp": 950}))), NOW).is_ok(), "within leeway");
        assert_eq!(
            v.validate(&sign(hs.clone(), claims(json!({"exp": 940}))), NOW),
            Err(Rejection::Invalid("token expired"))
        );
        assert_eq!(
            v.validate(&sign(hs, claims(json!({"nbf": 1061}))), NOW),
            Err(Rejection::Invalid("token not yet valid"))
        );
    }

    #[test]
    fn headers_that_must_not_pass() {
        let v = validator();
        let c = claims(json!({}));
        let none =
            format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(c.to_string()));
        assert_eq!(v.validate(&none, NOW), Err(Rejection::Invalid("unsigned tokens are not accepted")));
        assert_eq!(
            v.validate(&sign(json!({"alg": "RS256"}), c.clone()), NOW),
            Err(Rejection::Invalid("alg not accepted"))
        );
        assert_eq!(
            v.validate(&sign(json!({"alg": "HS256", "kid": "other"}), c.clone()), NOW),
            Err(Rejection::Invalid("unknown key id"))
        );
        assert_eq!(
            v.validate(&sign(json!({"alg": "HS256", "crit": ["x"]}), c.clone()), NOW),
            Err(Rejection::Invalid("unsupported critical header"))
        );
        let mut tampered = sign(json!({"alg": "HS256"}), c);
        tampered.pop();
        tampered.push('A');
        assert!(matches!(v.validate(&tampered, NOW), Err(Rejection::Invalid(_))));
        assert_eq!(v.validate("a.b", NOW), Err(Rejection::Invalid("malformed token")));
    }

    #[test]
    fn claim_requirements_give_forbidden() {
        let v = validator();
        let hs = json!({"alg": "HS256"});
        let forbidden = |extra: Value| match v.validate(&sign(hs.clone(), claims(extra)), NOW) {
            Err(Rejection::Forbidden(reason, _)) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(forbidden(json!({"aud": "web"})), "audience not allowed");
        assert_eq!(forbidden(json!({"iss": "iss-b"})), "issuer not allowed");
        assert_eq!(forbidden(json!({"scope": "write"})), "claim value not allowed");
        assert!(v.validate(&sign(hs, claims(json!({"scope": ["read"], "aud": "api"}))), NOW).is_ok());
    }
}
