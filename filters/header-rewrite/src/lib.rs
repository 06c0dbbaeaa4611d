//! header-rewrite: adds, sets, removes and renames request and response
//! headers, and rewrites path prefixes. Values may use templates filled from
//! the request: `{request_id}`, `{peer}`, `{route}`, `{method}`, `{path}`,
//! `{host}`, `{peer_identity}`. See README.md for the config.
//!
//! The header rules are registered as standing edits, which wasp makes
//! itself: without a path prefix the filter is never called per request.

use serde::Deserialize;
use std::collections::BTreeMap;
use wasp_sdk::{Decision, Facts, Filter, Phases, Registration, Request, StandingEdit, Template};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: Rules,
    #[serde(default)]
    response: Rules,
    /// `{ from: "/old", to: "/new" }`: a path starting with `from` gets `to` instead.
    #[serde(default)]
    path_prefix: Option<PrefixRewrite>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rules {
    /// Added to existing values.
    #[serde(default)]
    add: BTreeMap<String, String>,
    /// Replacing existing values.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Removed.
    #[serde(default)]
    remove: Vec<String>,
    /// Renamed: `{ old: new }` moves every value of `old` to `new`.
    #[serde(default)]
    rename: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixRewrite {
    from: String,
    to: String,
}

/// A valid header name, and not one wasp manages (framing, hop-by-hop): a
/// rule naming one is a mistake.
fn check_name(side: &str, op: &str, name: &str) -> Result<(), String> {
    if !wasp_sdk::is_header_name(name) {
        return Err(format!("{side}.{op}: invalid header name {name:?}"));
    }
    if wasp_sdk::is_managed_header(name) {
        return Err(format!("{side}.{op}: {name:?} is a framing or hop-by-hop header; wasp manages it"));
    }
    Ok(())
}

/// `rules` as standing edits, in the order they apply: removes, renames,
/// sets, then adds.
fn edits(rules: Rules, side: &str) -> Result<Vec<StandingEdit>, String> {
    for name in rules.add.keys() {
        check_name(side, "add", name)?;
    }
    for name in rules.set.keys() {
        check_name(side, "set", name)?;
    }
    for name in &rules.remove {
        check_name(side, "remove", name)?;
    }
    for (from, to) in &rules.rename {
        check_name(side, "rename", from)?;
        check_name(side, "rename", to)?;
    }
    // A request has one host (wasp keeps `Host` and the URI's authority as one).
    if side == "request" {
        let host = |n: &String| n.eq_ignore_ascii_case("host");
        if rules.add.keys().any(host) {
            return Err("request.add: a request has one host; use request.set.host".into());
        }
        if rules.rename.values().any(host) {
            return Err("request.rename: a request has one host; use request.set.host".into());
        }
    }
    let template =
        |op: &str, name: &str, value: &str| Template::parse(value).map_err(|e| format!("{side}.{op}.{name}: {e}"));
    let mut out: Vec<StandingEdit> = rules.remove.into_iter().map(StandingEdit::Remove).collect();
    out.extend(rules.rename.into_iter().map(|(from, to)| StandingEdit::Rename(from, to)));
    for (name, value) in rules.set {
        let t = template("set", &name, &value)?;
        out.push(StandingEdit::Set(name, t));
    }
    for (name, value) in rules.add {
        let t = template("add", &name, &value)?;
        out.push(StandingEdit::Append(name, t));
    }
    Ok(out)
}

struct HeaderRewrite {
    request: Vec<StandingEdit>,
    response: Vec<StandingEdit>,
    prefix: Option<PrefixRewrite>,
}

impl Filter for HeaderRewrite {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = wasp_sdk::parse_config(config)?;
        if let Some(p) = &c.path_prefix
            && (!p.from.starts_with('/') || !p.to.starts_with('/'))
        {
            return Err("path_prefix.from and path_prefix.to must start with '/'".into());
        }
        Ok(HeaderRewrite {
            request: edits(c.request, "request")?,
            response: edits(c.response, "response")?,
            prefix: c.path_prefix,
        })
    }

    /// The header rules are standing edits: wasp makes them (request rules
    /// when this filter's turn comes, response rules where its response
    /// phase would run) without calling the filter. Only a path prefix
    /// needs code: then the request headers phase runs, reading the path.
    fn registration(&self) -> Registration {
        let mut r = Registration::new();
        if self.prefix.is_some() {
            r = r.phases(Phases::REQUEST_HEADERS).facts(Facts::PATH);
        }
        for e in &self.request {
            r = r.request_edit(e.clone());
        }
        for e in &self.response {
            r = r.response_edit(e.clone());
        }
        r
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        if let Some(p) = &self.prefix {
            let path = req.path();
            if let Some(rest) = path.strip_prefix(p.from.as_str()) {
                let path = format!("{}{rest}", p.to);
                let _ = req.set_path(&path);
            }
        }
        Decision::Continue
    }
}

wasp_sdk::export!(HeaderRewrite);
