//! The service's decision, as applied and as cached.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use wasp_sdk::host::http::CallResponse;

/// Allow (with headers for the upstream) or deny (with the client's answer).
#[derive(Serialize, Deserialize)]
pub enum Verdict {
    /// Let the request go on with these headers set.
    Allow {
        /// Headers copied from the service's answer.
        headers: Vec<(String, Vec<u8>)>,
    },
    /// Answer the client with this.
    Deny {
        /// The service's status.
        status: u16,
        /// Headers copied from the service's answer.
        headers: Vec<(String, Vec<u8>)>,
        /// The service's body.
        body: Vec<u8>,
    },
}

impl Verdict {
    /// The decision in a service's answer (below 500).
    pub fn of(r: &CallResponse, config: &Config) -> Verdict {
        let pick = |names: &[String]| -> Vec<(String, Vec<u8>)> {
            r.headers.iter().filter(|(n, _)| names.contains(n)).cloned().collect()
        };
        if (200..300).contains(&r.status) {
            Verdict::Allow { headers: pick(&config.upstream_headers) }
        } else {
            // 1xx cannot be a final answer: treat it as a plain denial.
            let status = if r.status < 200 { 403 } else { r.status };
            Verdict::Deny { status, headers: pick(&config.client_headers), body: r.body.clone() }
        }
    }

    /// For the cache.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// From the cache (`None` if unreadable: the service is asked again).
    pub fn decode(bytes: &[u8]) -> Option<Verdict> {
        serde_json::from_slice(bytes).ok()
    }
}
