//! auth: authenticates requests with a JWT (HS256, RS256, ES256; keys
//! inline or from a JWKS in the config) or an API key, before they reach
//! the upstream.
//!
//! Per request: remove any client-supplied identity headers (the subject
//! header and the `claims_to_headers` targets), check the client's verified
//! identity against the `identities` rules, find the credentials, check
//! them (`jwt`, `api_keys`), then either forward the subject and selected
//! claims as headers, or answer 401/403/400 (`deny`). As a connection
//! filter it applies the `identities` rules to each connection. See
//! README.md for the config.

mod api_keys;
mod cache;
mod config;
mod deny;
mod identities;
mod jwt;
mod keys;

use config::{JwtSettings, Settings};
use deny::Failure;
use jwt::Claims;
use serde_json::Value;
use std::borrow::Cow;
use std::rc::Rc;
use wasp_sdk::host::{clock, log, metrics};
use wasp_sdk::{Connection, ConnectionDecision, Decision, Facts, Filter, Phases, Registration, Request};

/// Who a request turned out to be.
enum Identity<'a> {
    /// A valid JWT, with its claims and the settings that checked it.
    Jwt(&'a JwtSettings, Rc<Claims>),
    /// A known API key, with its subject.
    ApiKey(String),
    /// Only identity rules are configured: the client's verified identity.
    Peer(String),
    /// No credentials, on a public path.
    Anonymous,
}

struct Auth {
    settings: Settings,
}

impl Filter for Auth {
    fn new(config: &str) -> Result<Self, String> {
        Ok(Auth { settings: config::load(config)? })
    }

    /// The request headers phase only, with the credential headers it
    /// reads (not the ones it strips: removing needs no read), the path
    /// when there are public prefixes, and the peer identity when identity
    /// rules are set. (Its debug log needs no route or request id: wasp
    /// adds those to a filter's log lines.)
    fn registration(&self) -> Registration {
        let mut facts = Facts::empty();
        if !self.settings.public_paths.is_empty() {
            facts |= Facts::PATH;
        }
        if self.settings.identities.is_some() {
            facts |= Facts::PEER_IDENTITY;
        }
        let headers = self.settings.jwt.iter().map(|j| j.header.as_str());
        let headers = headers.chain(self.settings.api_keys.iter().map(|k| k.header.as_str()));
        Registration::new().phases(Phases::REQUEST_HEADERS).facts(facts).request_headers(headers)
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        self.strip_identity_headers(req);
        match self.authenticate(req).and_then(|identity| self.forward(req, identity)) {
            Ok(counter) => {
                metrics::counter_add(counter, 1);
                Decision::Continue
            }
            Err(failure) => {
                metrics::counter_add("auth_denied", 1);
                log::debug(&format!("auth: {} ({})", failure.status(), failure.describe()));
                Decision::Reply(deny::reply(&self.settings, &failure))
            }
        }
    }

    fn on_connection(&mut self, conn: &Connection) -> ConnectionDecision {
        let Some(rules) = &self.settings.identities else { return ConnectionDecision::Allow };
        match rules.check(conn.identity()) {
            Ok(()) => ConnectionDecision::Allow,
            Err(why) => ConnectionDecision::Deny(format!("{why} (identity {:?})", conn.identity().unwrap_or(""))),
        }
    }
}

impl Auth {
    /// Identity headers are the filter's to set: whatever the client sent
    /// under those names is dropped first.
    fn strip_identity_headers(&self, req: &mut Request<'_>) {
        req.remove_header(&self.settings.subject_header);
        if let Some(jwt) = &self.settings.jwt {
            for (_, header) in &jwt.claims_to_headers {
                req.remove_header(header);
            }
        }
    }

    /// Checks the client's identity against the `identities` rules (when
    /// they are all there is, the identity is the subject), then whatever
    /// credentials the request carries; either kind succeeding is enough. A
    /// token's failure outranks an API key's.
    fn authenticate(&self, req: &Request<'_>) -> Result<Identity<'_>, Failure> {
        if let Some(rules) = &self.settings.identities {
            let peer = req.peer_identity();
            rules.check(peer).map_err(|why| Failure::Identity(why, peer.unwrap_or_default().to_string()))?;
            if self.settings.jwt.is_none() && self.settings.api_keys.is_none() {
                return Ok(Identity::Peer(peer.unwrap_or_default().to_string()));
            }
        }
        let token = match &self.settings.jwt {
            Some(jwt) => bearer_token(req, &jwt.header, &jwt.prefix)?,
            None => None,
        };
        let key = match &self.settings.api_keys {
            Some(keys) => single_value(req, &keys.header, "more than one API key header")?,
            None => None,
        };
        if token.is_none() && key.is_none() {
            return if self.is_public(req.path()) { Ok(Identity::Anonymous) } else { Err(Failure::Missing) };
        }
        let mut failure = None;
        if let (Some(token), Some(jwt)) = (&token, &self.settings.jwt) {
            match jwt.validator.validate_cached(&mut jwt.cache.borrow_mut(), token, clock::now_ms()) {
                Ok(claims) => return Ok(Identity::Jwt(jwt, claims)),
                Err(rejection) => failure = Some(Failure::from(rejection)),
            }
        }
        if let (Some(key), Some(keys)) = (&key, &self.settings.api_keys) {
            match keys.subject(key) {
                Some(subject) => return Ok(Identity::ApiKey(subject.to_string())),
                None => failure = failure.or(Some(Failure::InvalidApiKey)),
            }
        }
        Err(failure.unwrap_or(Failure::Missing))
    }

    /// Sets the subject and claim headers for an authenticated request and
    /// drops the credentials the config keeps from the upstream. Returns the
    /// counter to add to.
    fn forward(&self, req: &mut Request<'_>, identity: Identity<'_>) -> Result<&'static str, Failure> {
        let subject_header = &self.settings.subject_header;
        let counter = match identity {
            Identity::Anonymous => return Ok("auth_anonymous"),
            Identity::ApiKey(subject) | Identity::Peer(subject) => {
                set(req, subject_header, &subject)?;
                "auth_allowed"
            }
            Identity::Jwt(jwt, claims) => {
                if let Some(subject) = claims.get(&jwt.subject_claim).and_then(claim_text) {
                    set(req, subject_header, &subject)?;
                }
                for (claim, header) in &jwt.claims_to_headers {
                    if let Some(value) = claims.get(claim).and_then(claim_text) {
                        set(req, header, &value)?;
                    }
                }
                "auth_allowed"
            }
        };
        if let Some(jwt) = self.settings.jwt.as_ref().filter(|jwt| !jwt.forward_token) {
            req.remove_header(&jwt.header);
        }
        if let Some(keys) = self.settings.api_keys.as_ref().filter(|keys| !keys.forward_key) {
            req.remove_header(&keys.header);
        }
        Ok(counter)
    }

    /// Whether `path` (with its query) falls under a public prefix. Only
    /// plain paths qualify: no `.`/`..` segments, no encoded dots, slashes
    /// or backslashes that an upstream might resolve differently.
    fn is_public(&self, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let lower = path.to_ascii_lowercase();
        let plain = !path.contains('\\')
            && !["%2e", "%2f", "%5c"].iter().any(|enc| lower.contains(enc))
            && !path.split('/').any(|segment| segment == "." || segment == "..");
        plain
            && self.settings.public_paths.iter().any(|prefix| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
            })
    }
}

/// The token in `header` after `prefix` (case-insensitive), if the header
/// is there and has that prefix.
fn bearer_token<'r>(req: &'r Request<'_>, header: &str, prefix: &str) -> Result<Option<&'r str>, Failure> {
    let Some(value) = single_value(req, header, "more than one token header")? else { return Ok(None) };
    let value = std::str::from_utf8(value).map_err(|_| Failure::InvalidToken("malformed token"))?;
    let n = prefix.len();
    if !value.as_bytes().get(..n).is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes())) {
        // Another scheme (e.g. `Basic`): no bearer token here.
        return Ok(None);
    }
    match value.get(n..).map(|token| token.trim_matches(' ')) {
        Some(token) if !token.is_empty() => Ok(Some(token)),
        _ => Err(Failure::InvalidToken("malformed token")),
    }
}

/// The one value of `header`; a request with several is refused, since
/// the upstream might read another one than the filter checked.
fn single_value<'r>(req: &'r Request<'_>, header: &str, several: &'static str) -> Result<Option<&'r [u8]>, Failure> {
    let mut values = req.header_all(header);
    match values.len() {
        0 => Ok(None),
        1 => Ok(values.pop()),
        _ => Err(Failure::BadRequest(several)),
    }
}

/// A claim as header text: strings as they are, numbers and booleans as
/// JSON, arrays of those joined with `,`, objects as compact JSON.
fn claim_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => {
            Some(Cow::Owned(items.iter().filter_map(claim_text).collect::<Vec<_>>().join(",")))
        }
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// Sets a header to a claim or subject; one that is not a valid header
/// value fails the request rather than reaching the upstream half-done.
fn set(req: &mut Request<'_>, header: &str, value: &str) -> Result<(), Failure> {
    req.set_header(header, value).map_err(|_| Failure::InvalidToken("claim is not a valid header value"))
}

wasp_sdk::export!(Auth);
