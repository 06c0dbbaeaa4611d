//! header-rewrite: adds, sets, removes and renames request and response
//! headers, and rewrites path prefixes. Values may use templates filled from
//! the request: `{request_id}`, `{peer}`, `{route}`, `{method}`, `{path}`,
//! `{host}`. See README.md for the config.

use serde::Deserialize;
use std::collections::BTreeMap;
use wasp_sdk::{Decision, Filter, Request, Response};

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

/// Request facts, read from wasp once per request, and only those some
/// template uses (each is a call into wasp and a string copied in).
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
        if needed.has(Var::RequestId) {
            self.request_id = req.request_id();
        }
        if needed.has(Var::Peer) {
            self.peer = req.peer();
        }
        if needed.has(Var::Route) {
            self.route = req.route();
        }
        if needed.has(Var::Method) {
            self.method = req.method();
        }
        if needed.has(Var::Path) {
            self.path = req.path();
        }
        if needed.has(Var::Host) {
            self.host = req.authority().unwrap_or_default();
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
    /// Facts of the request in flight, kept for response templates.
    facts: Facts,
    /// The facts the templates use, found at load.
    needed: Needed,
    /// Scratch space for rendering templates with text and variables.
    buf: String,
}

/// The operations both requests and responses support.
trait Headers {
    fn all(&self, name: &str) -> Vec<Vec<u8>>;
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), String>;
    fn append(&mut self, name: &str, value: &[u8]) -> Result<(), String>;
    fn remove(&mut self, name: &str);
}

macro_rules! impl_headers {
    ($t:ident) => {
        impl Headers for $t<'_> {
            fn all(&self, name: &str) -> Vec<Vec<u8>> {
                self.header_all(name)
            }
            fn set(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
                self.set_header(name, value)
            }
            fn append(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
                self.append_header(name, value)
            }
            fn remove(&mut self, name: &str) {
                self.remove_header(name)
            }
        }
    };
}
impl_headers!(Request);
impl_headers!(Response);

fn apply(rules: &CompiledRules, msg: &mut impl Headers, facts: &Facts, buf: &mut String) {
    for name in &rules.remove {
        msg.remove(name);
    }
    for (from, to) in &rules.rename {
        let values = msg.all(from);
        if values.is_empty() {
            continue;
        }
        msg.remove(from);
        for v in values {
            let _ = msg.append(to, &v);
        }
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

    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        self.facts.fill(req, self.needed);
        apply(&self.request, req, &self.facts, &mut self.buf);
        if let Some(p) = &self.prefix {
            let path = req.path();
            if let Some(rest) = path.strip_prefix(p.from.as_str()) {
                let _ = req.set_path(&format!("{}{rest}", p.to));
            }
        }
        Decision::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Decision {
        apply(&self.response, resp, &self.facts, &mut self.buf);
        Decision::Continue
    }
}

wasp_sdk::export!(HeaderRewrite);
