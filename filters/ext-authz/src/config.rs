//! The filter's config, checked once at load.

use serde::Deserialize;

/// What to do when the service cannot answer.
#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Answer `status_on_error`.
    #[default]
    Deny,
    /// Let the request through.
    Allow,
}

/// `config:` of an ext-authz filter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster the service runs in (also listed in the filter's `http_clusters`).
    pub cluster: String,
    /// Prepended to the request's path for the check.
    #[serde(default)]
    pub path_prefix: String,
    /// Time limit of one check.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
    /// Request headers sent with the check.
    #[serde(default = "default_headers_to_send")]
    pub headers_to_send: Vec<String>,
    /// Send the request body too (buffered up to the filter's `limits.body`).
    #[serde(default)]
    pub include_body: bool,
    /// Headers of an allowing answer copied onto the request (client values are removed).
    #[serde(default)]
    pub upstream_headers: Vec<String>,
    /// Headers of a denying answer copied to the client.
    #[serde(default = "default_client_headers")]
    pub client_headers: Vec<String>,
    /// Cache decisions this long (needs the `kv` capability); absent: no cache.
    #[serde(default)]
    pub cache_ttl_ms: Option<u64>,
    /// `deny` (default) or `allow` when the service fails, times out or answers 5xx.
    #[serde(default)]
    pub on_service_error: OnError,
    /// Status of a denial caused by a service error.
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
}

impl Config {
    /// Parses and checks the config.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut c: Config = wasp_sdk::parse_config(text)?;
        if c.cluster.is_empty() {
            return Err("invalid config: `cluster` must name the authorization service's cluster".into());
        }
        if !c.path_prefix.is_empty() && !c.path_prefix.starts_with('/') {
            return Err(format!("invalid config: path_prefix {:?} must start with '/'", c.path_prefix));
        }
        if c.path_prefix.ends_with('/') {
            c.path_prefix.pop();
        }
        if !(200..=599).contains(&c.status_on_error) {
            return Err(format!(
                "invalid config: status_on_error {} is not a final status (200-599)",
                c.status_on_error
            ));
        }
        if c.cache_ttl_ms == Some(0) {
            return Err("invalid config: cache_ttl_ms must be positive (leave it out for no cache)".into());
        }
        for list in [&mut c.headers_to_send, &mut c.upstream_headers, &mut c.client_headers] {
            for name in list.iter_mut() {
                *name = name.to_ascii_lowercase();
            }
        }
        Ok(c)
    }
}

fn default_timeout() -> u32 {
    200
}
fn default_headers_to_send() -> Vec<String> {
    vec!["authorization".into()]
}
fn default_client_headers() -> Vec<String> {
    vec!["www-authenticate".into(), "location".into()]
}
fn default_status_on_error() -> u16 {
    403
}
