//! Standing edits: header edits a filter registers once
//! ([`crate::Registration::request_edit`], [`crate::Registration::response_edit`])
//! and wasp makes itself on every request, with no call into the filter.
//! Their values are [`Template`]s, filled in from each request.

use crate::bindings::wasp::filter::types as wit;

/// One of a request's facts, as a [`Template`] reads it:
/// `Fact::Method`, `Path` (with the query), `Authority`, `RequestId`,
/// `Peer` (`ip:port`), `Route`, `PeerIdentity` (empty without mTLS).
pub use wit::Fact;

/// A header value wasp fills in for each request: text and facts, joined.
#[derive(Debug, Clone, Default)]
pub struct Template(Vec<wit::Part>);

impl Template {
    /// Text as it is.
    pub fn text(text: impl Into<String>) -> Self {
        Template(vec![wit::Part::Text(text.into())])
    }

    /// One fact.
    pub fn fact(fact: Fact) -> Self {
        Template(vec![wit::Part::Fact(fact)])
    }

    /// This, then `text`.
    pub fn then_text(mut self, text: impl Into<String>) -> Self {
        self.0.push(wit::Part::Text(text.into()));
        self
    }

    /// This, then `fact`.
    pub fn then_fact(mut self, fact: Fact) -> Self {
        self.0.push(wit::Part::Fact(fact));
        self
    }

    /// Text with `{placeholders}`: `{request_id}`, `{peer}`, `{route}`,
    /// `{method}`, `{path}`, `{host}` (the authority), `{peer_identity}`.
    /// `"req {request_id} via {route}"`. An unknown placeholder or a `{`
    /// without its `}` is an error that quotes the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut t = Template(Vec::new());
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').ok_or_else(|| format!("unclosed '{{' in {text:?}"))? + start;
            if start > 0 {
                t = t.then_text(&rest[..start]);
            }
            let fact = match &rest[start + 1..end] {
                "request_id" => Fact::RequestId,
                "peer" => Fact::Peer,
                "route" => Fact::Route,
                "method" => Fact::Method,
                "path" => Fact::Path,
                "host" => Fact::Authority,
                "peer_identity" => Fact::PeerIdentity,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in {text:?}; use request_id, peer, route, method, path, host or peer_identity"
                    ));
                }
            };
            t = t.then_fact(fact);
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            t = t.then_text(rest);
        }
        Ok(t)
    }
}

/// A header edit wasp makes on every request (or response), registered
/// once. Names are checked when wasp loads the filter: an invalid one, or
/// one wasp manages (framing, hop-by-hop), fails the load with the reason.
#[derive(Debug, Clone)]
pub enum StandingEdit {
    /// Replaces a header's values with one value (`host` on a request sets its authority).
    Set(String, Template),
    /// Adds a value to a header.
    Append(String, Template),
    /// Removes a header.
    Remove(String),
    /// Moves every value of a header (the first name) to another.
    Rename(String, String),
}

impl StandingEdit {
    pub(crate) fn into_wit(self) -> wit::StandingEdit {
        let header =
            |name: String, value: Template| wit::HeaderTemplate { name: name.to_ascii_lowercase(), value: value.0 };
        match self {
            StandingEdit::Set(n, v) => wit::StandingEdit::SetHeader(header(n, v)),
            StandingEdit::Append(n, v) => wit::StandingEdit::AppendHeader(header(n, v)),
            StandingEdit::Remove(n) => wit::StandingEdit::RemoveHeader(n.to_ascii_lowercase()),
            StandingEdit::Rename(from, to) => wit::StandingEdit::RenameHeader(wit::Rename {
                from: from.to_ascii_lowercase(),
                to: to.to_ascii_lowercase(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(t: &Template) -> Vec<String> {
        t.0.iter()
            .map(|p| match p {
                wit::Part::Text(t) => format!("text:{t}"),
                wit::Part::Fact(f) => format!("fact:{f:?}"),
            })
            .collect()
    }

    #[test]
    fn placeholders_become_facts_and_the_rest_stays_text() {
        let t = Template::parse("req {request_id} via {route}{host}!").expect("valid");
        assert_eq!(
            parts(&t),
            ["text:req ", "fact:Fact::RequestId", "text: via ", "fact:Fact::Route", "fact:Fact::Authority", "text:!"]
        );
        assert!(parts(&Template::parse("").expect("empty")).is_empty());
        let bad = Template::parse("a {nope} b").expect_err("unknown");
        assert!(bad.starts_with("unknown placeholder {nope} in \"a {nope} b\""), "{bad}");
        assert_eq!(Template::parse("x{request_id").expect_err("unclosed"), "unclosed '{' in \"x{request_id\"");
    }
}
