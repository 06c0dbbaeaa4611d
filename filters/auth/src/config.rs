//! The filter's config: plain serde structs, validated once in `new` and
//! compiled into [`Settings`]. Validation reports every bad field with its
//! path (`jwt.keys[1]: RS256 key needs `n` and `e``) before failing.

use crate::api_keys::ApiKeys;
use crate::cache::TokenCache;
use crate::identities::{Identities, IdentitiesConfig};
use crate::jwt::{RequiredClaim, Validator};
use crate::keys::{Jwk, Key};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The `config:` of an auth filter entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `realm` of the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    realm: String,
    /// Header carrying the authenticated subject upstream.
    #[serde(default = "default_subject_header")]
    subject_header: String,
    jwt: Option<JwtConfig>,
    api_keys: Option<ApiKeysConfig>,
    /// Path prefixes where a request without credentials may pass.
    #[serde(default)]
    public_paths: Vec<String>,
    /// Rules on the client's verified (mTLS) identity.
    identities: Option<IdentitiesConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtConfig {
    #[serde(default)]
    keys: Vec<Jwk>,
    jwks: Option<Jwks>,
    #[serde(default)]
    issuers: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway_secs: u32,
    #[serde(default = "yes")]
    require_exp: bool,
    #[serde(default)]
    required_claims: Vec<RequiredClaimConfig>,
    #[serde(default = "default_token_header")]
    header: String,
    prefix: Option<String>,
    #[serde(default = "yes")]
    forward_token: bool,
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
    #[serde(default = "default_cache_size")]
    cache_size: usize,
}

/// A JWKS: the object itself, or its JSON text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Jwks {
    Object { keys: Vec<Jwk> },
    Text(String),
}

/// A required claim: its name (any value), or a name and accepted values.
#[derive(Deserialize)]
#[serde(untagged)]
enum RequiredClaimConfig {
    Name(String),
    WithValues {
        name: String,
        #[serde(default)]
        values: Vec<serde_json::Value>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeysConfig {
    #[serde(default = "default_api_key_header")]
    header: String,
    keys: Vec<ApiKeyEntry>,
    #[serde(default = "yes")]
    forward_key: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyEntry {
    key: String,
    subject: String,
}

fn default_realm() -> String {
    "wasp".into()
}
fn default_subject_header() -> String {
    "x-auth-subject".into()
}
/// Largest `jwt.cache_size` (each instance keeps its own cache, which
/// also stops at 1 MiB: see `cache.rs`).
const MAX_CACHE_SIZE: usize = 1_000;

fn default_cache_size() -> usize {
    100
}

fn default_leeway() -> u32 {
    60
}
fn yes() -> bool {
    true
}
fn default_token_header() -> String {
    "authorization".into()
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// The validated config the filter runs with.
pub struct Settings {
    /// Challenge realm (already checked to be a valid quoted-string).
    pub realm: String,
    /// Lower-case header name for the subject.
    pub subject_header: String,
    /// JWT settings, if JWTs are accepted.
    pub jwt: Option<JwtSettings>,
    /// API keys, if accepted.
    pub api_keys: Option<ApiKeys>,
    /// Path prefixes open to requests without credentials.
    pub public_paths: Vec<String>,
    /// Rules on the client's verified identity, checked before credentials.
    pub identities: Option<Identities>,
}

/// Where tokens come from and what is forwarded once one is valid.
pub struct JwtSettings {
    /// Signature and claim checks.
    pub validator: Validator,
    /// Lower-case header carrying the token.
    pub header: String,
    /// What precedes the token in that header (matched case-insensitively).
    pub prefix: String,
    /// Whether the token header goes on to the upstream.
    pub forward_token: bool,
    /// Claim that names the subject.
    pub subject_claim: String,
    /// Claim name → lower-case header name.
    pub claims_to_headers: Vec<(String, String)>,
    /// Tokens already validated (`cache_size` of them).
    pub cache: RefCell<TokenCache>,
}

/// Parses and validates `text`, reporting every problem found.
pub fn load(text: &str) -> Result<Settings, String> {
    let config: Config = wasp_sdk::parse_config(text)?;
    let mut errors = Vec::new();
    let settings = compile(config, &mut errors);
    if errors.is_empty() { Ok(settings) } else { Err(errors.join("; ")) }
}

fn compile(c: Config, errors: &mut Vec<String>) -> Settings {
    if c.jwt.is_none() && c.api_keys.is_none() && c.identities.is_none() {
        errors.push("configure `jwt`, `api_keys`, `identities` or several of them".into());
    }
    if !is_quotable(&c.realm) {
        errors.push("realm: must be printable ASCII without `\"` or `\\`".into());
    }
    let subject_header = header_name("subject_header", &c.subject_header, errors);
    for (i, path) in c.public_paths.iter().enumerate() {
        if !path.starts_with('/') {
            errors.push(format!("public_paths[{i}]: must start with '/'"));
        }
    }
    let jwt = c.jwt.map(|j| compile_jwt(j, &subject_header, errors));
    let api_keys = c.api_keys.map(|a| compile_api_keys(a, &subject_header, errors));
    if let (Some(j), Some(a)) = (&jwt, &api_keys)
        && j.header == a.header
    {
        errors.push("api_keys.header: must differ from jwt.header".into());
    }
    let identities = c.identities.map(|i| Identities::compile(i, errors));
    Settings { realm: c.realm, subject_header, jwt, api_keys, public_paths: c.public_paths, identities }
}

fn compile_jwt(j: JwtConfig, subject_header: &str, errors: &mut Vec<String>) -> JwtSettings {
    let errors_before = errors.len();
    let mut keys = Vec::new();
    for (i, jwk) in j.keys.iter().enumerate() {
        match Key::load(jwk, false) {
            Ok(key) => keys.extend(key),
            Err(e) => errors.push(format!("jwt.keys[{i}]: {e}")),
        }
    }
    for (i, jwk) in jwks_keys(j.jwks, errors).iter().enumerate() {
        match Key::load(jwk, true) {
            Ok(key) => keys.extend(key),
            Err(e) => errors.push(format!("jwt.jwks.keys[{i}]: {e}")),
        }
    }
    if keys.is_empty() && errors.len() == errors_before {
        errors.push("jwt: needs at least one signature key in `keys` or `jwks`".into());
    }
    let header = header_name("jwt.header", &j.header, errors);
    if header == subject_header {
        errors.push("jwt.header: must differ from subject_header (that header is removed from every request)".into());
    }
    let mut claims_to_headers = Vec::new();
    for (claim, name) in &j.claims_to_headers {
        let name = header_name(&format!("jwt.claims_to_headers.{claim}"), name, errors);
        if name == header || name == subject_header {
            errors.push(format!("jwt.claims_to_headers.{claim}: must differ from jwt.header and subject_header"));
        }
        claims_to_headers.push((claim.clone(), name));
    }
    let required = j.required_claims.into_iter().map(required_claim).collect::<Vec<_>>();
    for (i, r) in required.iter().enumerate() {
        if r.name.is_empty() {
            errors.push(format!("jwt.required_claims[{i}]: the claim name is empty"));
        }
    }
    if j.cache_size > MAX_CACHE_SIZE {
        errors.push(format!("jwt.cache_size: at most {MAX_CACHE_SIZE} tokens (each instance keeps its own)"));
    }
    let prefix = j.prefix.unwrap_or_else(|| if header == "authorization" { "Bearer ".into() } else { String::new() });
    JwtSettings {
        validator: Validator {
            keys,
            issuers: j.issuers,
            audiences: j.audiences,
            leeway_ms: u64::from(j.leeway_secs) * 1000,
            require_exp: j.require_exp,
            required,
        },
        header,
        prefix,
        forward_token: j.forward_token,
        subject_claim: j.subject_claim,
        claims_to_headers,
        cache: RefCell::new(TokenCache::new(j.cache_size)),
    }
}

/// The keys of the `jwks` member, parsing it first if it was given as text.
fn jwks_keys(jwks: Option<Jwks>, errors: &mut Vec<String>) -> Vec<Jwk> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Jwk>,
    }
    match jwks {
        None => Vec::new(),
        Some(Jwks::Object { keys }) => keys,
        Some(Jwks::Text(text)) => match serde_json::from_str::<Set>(&text) {
            Ok(set) => set.keys,
            Err(e) => {
                errors.push(format!("jwt.jwks: not a JWKS (`{{\"keys\": [...]}}`): {e}"));
                Vec::new()
            }
        },
    }
}

fn required_claim(c: RequiredClaimConfig) -> RequiredClaim {
    match c {
        RequiredClaimConfig::Name(name) => RequiredClaim { name, values: Vec::new() },
        RequiredClaimConfig::WithValues { name, values } => RequiredClaim { name, values },
    }
}

fn compile_api_keys(a: ApiKeysConfig, subject_header: &str, errors: &mut Vec<String>) -> ApiKeys {
    let header = header_name("api_keys.header", &a.header, errors);
    if header == subject_header {
        errors.push(
            "api_keys.header: must differ from subject_header (that header is removed from every request)".into(),
        );
    }
    if a.keys.is_empty() {
        errors.push("api_keys.keys: needs at least one key".into());
    }
    let mut entries = Vec::new();
    for (i, entry) in a.keys.into_iter().enumerate() {
        if entry.key.is_empty() {
            errors.push(format!("api_keys.keys[{i}].key: is empty"));
        }
        if entry.subject.is_empty() || !entry.subject.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            errors.push(format!("api_keys.keys[{i}].subject: must be non-empty printable ASCII"));
        }
        entries.push((entry.key, entry.subject));
    }
    let keys = ApiKeys::new(header, a.forward_key, entries);
    if let Some(i) = keys.first_duplicate() {
        errors.push(format!("api_keys.keys[{i}].key: the same key appears twice"));
    }
    keys
}

/// `value` lower-cased, if it is a valid header name; else an error for `path`.
fn header_name(path: &str, value: &str, errors: &mut Vec<String>) -> String {
    if !wasp_sdk::is_header_name(value) {
        errors.push(format!("{path}: {value:?} is not a valid header name"));
    }
    value.to_ascii_lowercase()
}

/// Printable ASCII without `"` and `\`: safe inside a quoted-string.
fn is_quotable(s: &str) -> bool {
    s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        load(json).err().expect("refused")
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let e = err(r#"{"realm": "a\"b", "jwt": {"keys": [{"alg":"HS256","secret":"0123456789abcdef0123456789abcdef"},
                {"alg":"RS256","e":"AQAB"}], "header": "bad header"}}"#);
        assert_eq!(
            e,
            "realm: must be printable ASCII without `\"` or `\\`; jwt.keys[1]: RS256 key needs `n` and `e`; \
             jwt.header: \"bad header\" is not a valid header name"
        );
        assert_eq!(err("{}"), "configure `jwt`, `api_keys`, `identities` or several of them");
        assert!(
            err(r#"{"identities": {"allow": ["spiffe://td/ns/*x/sa/a"]}}"#)
                .starts_with("identities.allow[0]: \"spiffe://td/ns/*x/sa/a\": `*` must be a whole path segment")
        );
        assert!(load(r#"{"identities": {"allow": ["spiffe://td/ns/*/sa/a"]}}"#).is_ok());
        assert!(err(r#"{"jwt": {}}"#).contains("jwt: needs at least one signature key"));
        assert!(
            err(r#"{"api_keys": {"keys": [{"key":"a","subject":"x"},{"key":"a","subject":"y"}]}}"#)
                .contains("api_keys.keys[1].key: the same key appears twice")
        );
        assert!(err(r#"{"jwt": {"jwks": "nope"}}"#).starts_with("jwt.jwks: not a JWKS"));
        assert!(err(r#"{"jwt": {"keys": []}, "colour": 1}"#).contains("unknown field `colour`"));
    }

    #[test]
    fn defaults() {
        let s =
            load(r#"{"jwt": {"jwks": {"keys": [{"kty":"oct","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}}}"#)
                .expect("valid");
        let jwt = s.jwt.expect("jwt");
        assert_eq!((s.realm.as_str(), s.subject_header.as_str()), ("wasp", "x-auth-subject"));
        assert_eq!((jwt.header.as_str(), jwt.prefix.as_str()), ("authorization", "Bearer "));
        assert_eq!(jwt.validator.leeway_ms, 60_000);
        assert!(jwt.forward_token && jwt.validator.require_exp);
    }
}
