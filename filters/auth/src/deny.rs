//! Why a request is turned away, and the reply that says so: 401 with an
//! RFC 6750 `WWW-Authenticate` challenge, 403 for a genuine token whose
//! claims fall short, 400 for an ambiguous request. Descriptions are fixed
//! strings: nothing from the token or the keys reaches the client.

use crate::config::Settings;
use crate::jwt::Rejection;
use wasp_sdk::Reply;

/// Why a request was not authenticated.
#[derive(Debug)]
pub enum Failure {
    /// No credentials at all: 401 without an `error` attribute.
    Missing,
    /// The request carries a header twice, or similar: 400 `invalid_request`.
    BadRequest(&'static str),
    /// A token that is malformed, badly signed, expired, ...: 401 `invalid_token`.
    InvalidToken(&'static str),
    /// An API key that is not one of the configured ones: 401.
    InvalidApiKey,
    /// A genuine token whose claims fall short: 403 `insufficient_scope`.
    /// The `String` names the claim, for the log only.
    Forbidden(&'static str, String),
    /// The client's verified identity is missing or not allowed: 403, not a
    /// bearer-token error. The `String` is the identity, for the log only.
    Identity(&'static str, String),
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(why) => Failure::InvalidToken(why),
            Rejection::Forbidden(why, claim) => Failure::Forbidden(why, claim),
        }
    }
}

impl Failure {
    /// The HTTP status this failure gets.
    pub fn status(&self) -> u16 {
        match self {
            Failure::BadRequest(_) => 400,
            Failure::Forbidden(..) | Failure::Identity(..) => 403,
            Failure::Missing | Failure::InvalidToken(_) | Failure::InvalidApiKey => 401,
        }
    }

    /// The RFC 6750 `error` code and description, if any.
    fn error(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Failure::Missing => None,
            Failure::BadRequest(why) => Some(("invalid_request", why)),
            Failure::InvalidToken(why) => Some(("invalid_token", why)),
            // Not a bearer-token error: the Bearer challenge stays plain.
            Failure::InvalidApiKey => None,
            Failure::Forbidden(why, _) => Some(("insufficient_scope", why)),
            // Not a bearer-token error either: no token would help.
            Failure::Identity(..) => None,
        }
    }

    /// One line for wasp's debug log.
    pub fn describe(&self) -> String {
        match self {
            Failure::Missing => "no credentials".into(),
            Failure::BadRequest(why) | Failure::InvalidToken(why) => (*why).into(),
            Failure::InvalidApiKey => "unknown API key".into(),
            Failure::Forbidden(why, claim) => format!("{why} (claim `{claim}`)"),
            Failure::Identity(why, identity) => format!("{why} (identity {identity:?})"),
        }
    }

    fn body(&self) -> String {
        match self {
            Failure::Missing => "authentication required\n".into(),
            Failure::BadRequest(why) => format!("bad request: {why}\n"),
            Failure::InvalidToken(why) => format!("invalid token: {why}\n"),
            Failure::InvalidApiKey => "invalid API key\n".into(),
            Failure::Forbidden(why, _) | Failure::Identity(why, _) => format!("forbidden: {why}\n"),
        }
    }
}

/// The reply for `failure`.
pub fn reply(settings: &Settings, failure: &Failure) -> Reply {
    let mut reply = Reply::new(failure.status()).header("content-type", "text/plain; charset=utf-8");
    if settings.jwt.is_some() {
        reply = reply.header("www-authenticate", bearer_challenge(&settings.realm, failure.error()));
    }
    if settings.api_keys.is_some() && failure.status() == 401 {
        reply = reply.header("www-authenticate", format!("ApiKey realm=\"{}\"", settings.realm));
    }
    reply.body(failure.body())
}

/// `Bearer realm="..."`, plus `error` and `error_description` when there is
/// an error. The realm was checked at load to be a valid quoted-string.
fn bearer_challenge(realm: &str, error: Option<(&str, &str)>) -> String {
    match error {
        None => format!("Bearer realm=\"{realm}\""),
        Some((code, description)) => {
            format!("Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{description}\"")
        }
    }
}
