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

    fn render(&self, facts: &Facts) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&facts.get(*v)),
            }
        }
        out
    }
}

/// Request facts, read from wasp once per request when a template needs them.
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
    fn of(req: &Request<'_>) -> Self {
        Facts {
            request_id: req.request_id(),
            peer: req.peer(),
            route: req.route(),
            method: req.method(),
            path: req.path(),
            host: req.authority().unwrap_or_default(),
        }
    }

    fn get(&self, v: Var) -> String {
        match v {
            Var::RequestId => self.request_id.clone(),
            Var::Peer => self.peer.clone(),
            Var::Route => self.route.clone(),
            Var::Method => self.method.clone(),
            Var::Path => self.path.clone(),
            Var::Host => self.host.clone(),
        }
    }
}

struct CompiledRules {
    add: Vec<(String, Template)>,
    set: Vec<(String, Template)>,
    remove: Vec<String>,
    rename: Vec<(String, String)>,
}

/// RFC 9110 token characters: what a header name may contain.
fn check_name(side: &str, op: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(format!("{side}.{op}: invalid header name {name:?}")) }
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

    fn uses_templates(&self) -> bool {
        self.add.iter().chain(&self.set).any(|(_, t)| t.0.iter().any(|p| matches!(p, Part::Var(_))))
    }
}

struct HeaderRewrite {
    request: CompiledRules,
    response: CompiledRules,
    prefix: Option<PrefixRewrite>,
    /// Facts of the request in flight, kept for response templates.
    facts: Facts,
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

fn apply(rules: &CompiledRules, msg: &mut impl Headers, facts: &Facts) {
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
        if msg.set(name, t.render(facts).as_bytes()).is_err() {
            wasp_sdk::host::log::warn(&format!(
                "cannot set header {name}: the rendered value is not a valid header value"
            ));
        }
    }
    for (name, t) in &rules.add {
        if msg.append(name, t.render(facts).as_bytes()).is_err() {
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
        Ok(HeaderRewrite {
            request: CompiledRules::compile(c.request, "request")?,
            response: CompiledRules::compile(c.response, "response")?,
            prefix: c.path_prefix,
            facts: Facts::default(),
        })
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Decision {
        self.facts = if self.request.uses_templates() || self.response.uses_templates() {
            Facts::of(req)
        } else {
            Facts::default()
        };
        apply(&self.request, req, &self.facts);
        if let Some(p) = &self.prefix {
            let path = req.path();
            if let Some(rest) = path.strip_prefix(p.from.as_str()) {
                let _ = req.set_path(&format!("{}{rest}", p.to));
            }
        }
        Decision::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Decision {
        apply(&self.response, resp, &self.facts);
        Decision::Continue
    }
}

wasp_sdk::export!(HeaderRewrite);
