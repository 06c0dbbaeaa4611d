//! header-rewrite: adds, sets, removes and renames request and response
//! headers, and rewrites path prefixes. Values may use templates filled from
//! the request: `{request_id}`, `{peer}`, `{route}`, `{method}`, `{path}`,
//! `{host}`. See README.md for the config.

use serde::Deserialize;
use std::collections::BTreeMap;
use wasp_sdk::{Decision, Facts as Wanted, Filter, Phases, Registration, Request};

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

/// A value with `{placeholders}`, split once at load.
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Clone, Copy)]
enum Var {
    RequestId,
    Peer,
    Route,
    Method,
    Path,
    Host,
}

struct Template(Vec<Part>);

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').ok_or_else(|| format!("unclosed '{{' in {text:?}"))? + start;
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let var = match &rest[start + 1..end] {
                "request_id" => Var::RequestId,
                "peer" => Var::Peer,
                "route" => Var::Route,
                "method" => Var::Method,
                "path" => Var::Path,
                "host" => Var::Host,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in {text:?}; use request_id, peer, route, method, path or host"
                    ));
                }
            };
            parts.push(Part::Var(var));
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    fn render<'a>(&'a self, facts: &'a Facts, buf: &'a mut String) -> &'a str {
        // The common cases, a constant or a single variable, need no copy.
        match self.0.as_slice() {
            [] => return "",
            [Part::Text(t)] => return t,
            [Part::Var(v)] => return facts.get(*v),
            _ => {}
        }
        buf.clear();
        for part in &self.0 {
            match part {
                Part::Text(t) => buf.push_str(t),
                Part::Var(v) => buf.push_str(facts.get(*v)),
            }
        }
        buf
    }

    /// Marks the variables this template reads.
    fn needs(&self, needed: &mut Needed) {
        for part in &self.0 {
            if let Part::Var(v) = part {
                needed.0 |= 1 << *v as u8;
            }
        }
    }
}

/// The set of variables some template reads: only those are asked of wasp.
#[derive(Clone, Copy, Default)]
struct Needed(u8);

impl Needed {
    fn has(self, v: Var) -> bool {
        self.0 & (1 << v as u8) != 0
    }
}

/// The request facts some template uses (wasp passes only those, see
/// `registration`), copied because the rules change the request as they apply.
#[derive(Default, Clone)]
struct Facts {
    request_id: String,
    peer: String,
    route: String,
    method: String,
    path: String,
    host: String,
}

impl Facts {
    /// Reads the facts in `needed` from wasp; the others keep stale values no template reads.
    fn fill(&mut self, req: &Request<'_>, needed: Needed) {
        let copy = |to: &mut String, from: &str| {
            to.clear();
            to.push_str(from);
        };
        if needed.has(Var::RequestId) {
            copy(&mut self.request_id, req.request_id());
        }
        if needed.has(Var::Peer) {
            copy(&mut self.peer, req.peer());
        }
        if needed.has(Var::Route) {
            copy(&mut self.route, req.route());
        }
        if needed.has(Var::Method) {
            copy(&mut self.method, req.method());
        }
        if needed.has(Var::Path) {
            copy(&mut self.path, req.path());
        }
        if needed.has(Var::Host) {
            copy(&mut self.host, req.authority().unwrap_or_default());
        }
    }

    fn get(&self, v: Var) -> &str {
        match v {
            Var::RequestId => &self.request_id,
            Var::Peer => &self.peer,
            Var::Route => &self.route,
            Var::Method => &self.method,
            Var::Path => &self.path,
            Var::Host => &self.host,
        }
    }
}

struct CompiledRules {
    add: Vec<(String, Template)>,
    set: Vec<(String, Template)>,
    remove: Vec<String>,
    rename: Vec<(String, String)>,
}

/// Framing and hop-by-hop fields: wasp sets them from the body it sends and
/// refuses a filter's changes to them, so a rule naming one is a mistake.
const MANAGED: [&str; 8] =
    ["content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"];

/// RFC 9110 token characters: what a header name may contain; and not one wasp manages.
fn check_name(side: &str, op: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(format!("{side}.{op}: invalid header name {name:?}"));
    }
    if MANAGED.iter().any(|m| m.eq_ignore_ascii_case(name)) {
        return Err(format!("{side}.{op}: {name:?} is a framing or hop-by-hop header; wasp manages it"));
    }
    Ok(())
}

impl CompiledRules {
    fn compile(rules: Rules, side: &str) -> Result<Self, String> {
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
        let templates = |map: BTreeMap<String, String>, op: &str| {
            map.into_iter()
                .map(|(name, value)| {
                    let t = Template::parse(&value).map_err(|e| format!("{side}.{op}.{name}: {e}"))?;
                    Ok((name.to_ascii_lowercase(), t))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(CompiledRules {
            add: templates(rules.add, "add")?,
            set: templates(rules.set, "set")?,
            remove: rules.remove.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
            rename: rules.rename.into_iter().map(|(a, b)| (a.to_ascii_lowercase(), b.to_ascii_lowercase())).collect(),
        })
    }

    fn needs(&self, needed: &mut Needed) {
        for (_, t) in self.add.iter().chain(&self.set) {
            t.needs(needed);
        }
    }
}

struct HeaderRewrite {
    request: CompiledRules,
    response: CompiledRules,
    prefix: Option<PrefixRewrite>,
    /// The request facts its templates use (a copy: the request changes as rules apply).
    facts: Facts,
    /// The facts the templates use, found at load.
    needed: Needed,
    /// Scratch space for rendering templates with text and variables.
    buf: String,
}

/// The operations rules make: on the request, or (from the request phase,
/// applied by wasp when it comes back) on the response.
trait Headers {
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), String>;
    fn append(&mut self, name: &str, value: &[u8]) -> Result<(), String>;
    fn remove(&mut self, name: &str);
    fn rename(&mut self, from: &str, to: &str) -> Result<(), String>;
}

impl Headers for Request<'_> {
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        self.set_header(name, value)
    }
    fn append(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        self.append_header(name, value)
    }
    fn remove(&mut self, name: &str) {
        self.remove_header(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), String> {
        self.rename_header(from, to)
    }
}

/// The response of a request, changed from its request phase.
struct ResponseOf<'a, 'b>(&'a mut Request<'b>);

impl Headers for ResponseOf<'_, '_> {
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        self.0.set_response_header(name, value)
    }
    fn append(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        self.0.append_response_header(name, value)
    }
    fn remove(&mut self, name: &str) {
        self.0.remove_response_header(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), String> {
        self.0.rename_response_header(from, to)
    }
}

fn apply(rules: &CompiledRules, msg: &mut impl Headers, facts: &Facts, buf: &mut String) {
    for name in &rules.remove {
        msg.remove(name);
    }
    for (from, to) in &rules.rename {
        let _ = msg.rename(from, to);
    }
    for (name, t) in &rules.set {
        if msg.set(name, t.render(facts, buf).as_bytes()).is_err() {
            wasp_sdk::host::log::warn(&format!(
                "cannot set header {name}: the rendered value is not a valid header value"
            ));
        }
    }
    for (name, t) in &rules.add {
        if msg.append(name, t.render(facts, buf).as_bytes()).is_err() {
            wasp_sdk::host::log::warn(&format!(
                "cannot add header {name}: the rendered value is not a valid header value"
            ));
        }
    }
}

impl Filter for HeaderRewrite {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = wasp_sdk::parse_config(config)?;
        if let Some(p) = &c.path_prefix
            && (!p.from.starts_with('/') || !p.to.starts_with('/'))
        {
            return Err("path_prefix.from and path_prefix.to must start with '/'".into());
        }
        let request = CompiledRules::compile(c.request, "request")?;
        let response = CompiledRules::compile(c.response, "response")?;
        let mut needed = Needed::default();
        request.needs(&mut needed);
        response.needs(&mut needed);
        Ok(HeaderRewrite {
            request,
            response,
            prefix: c.path_prefix,
            facts: Facts::default(),
            needed,
            buf: String::new(),
        })
    }

    /// One phase: response rules go back with the request phase's outcome
    /// (wasp applies them to the response), so the filter needs no response
    /// phase and its instance is free as soon as the request phase returns.
    /// It reads no header (wasp renames natively) and only the facts its
    /// templates and the path rewrite use.
    fn registration(&self) -> Registration {
        let mut facts = Wanted::empty();
        for (var, fact) in [
            (Var::RequestId, Wanted::REQUEST_ID),
            (Var::Peer, Wanted::PEER),
            (Var::Route, Wanted::ROUTE),
            (Var::Method, Wanted::METHOD),
            (Var::Path, Wanted::PATH),
            (Var::Host, Wanted::AUTHORITY),
        ] {
            if self.needed.has(var) {
                facts |= fact;
            }
        }
        if self.prefix.is_some() {
            facts |= Wanted::PATH;
        }
        Registration::new().phases(Phases::REQUEST_HEADERS).facts(facts)
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        self.facts.fill(req, self.needed);
        apply(&self.request, req, &self.facts, &mut self.buf);
        apply(&self.response, &mut ResponseOf(req), &self.facts, &mut self.buf);
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
