//! Reading a config document: YAML (JSON is valid YAML) into the raw model,
//! collecting every unknown field rather than stopping at the first.

use super::model::RawConfig;
use super::{Config, ConfigError, ConfigErrors, validate};
use std::path::Path;

/// Parses and validates a config document; relative paths in it resolve against `base`.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let raw = parse_raw(text, &mut errors);
    match raw {
        Some(raw) => validate::validate(raw, base, errors),
        None => Err(ConfigErrors(errors)),
    }
}

fn parse_raw(text: &str, errors: &mut Vec<ConfigError>) -> Option<RawConfig> {
    if text.trim().is_empty() {
        errors.push(ConfigError { path: String::new(), message: "config is empty".into() });
        return None;
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut unknown = Vec::new();
    let mut track = |p: serde_ignored::Path<'_>| unknown.push(render_ignored(&p));
    let ignoring = serde_ignored::Deserializer::new(de, &mut track);
    let result: Result<RawConfig, _> = serde_path_to_error::deserialize(ignoring);
    for path in unknown {
        errors.push(ConfigError { path, message: "unknown field".into() });
    }
    match result {
        Ok(raw) => Some(raw),
        Err(e) => {
            let path = render_tracked(e.path());
            let message = e.into_inner().to_string();
            // serde_yaml_ng may start its message with the same path; say it once.
            let message = message.strip_prefix(&format!("{path}: ")).map(str::to_string).unwrap_or(message);
            errors.push(ConfigError { path, message });
            None
        }
    }
}

fn render_tracked(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => push_key(&mut out, key),
            Segment::Enum { variant } => push_key(&mut out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

fn render_ignored(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", render_ignored(parent)),
        P::Map { parent, key } => {
            let mut out = render_ignored(parent);
            push_key(&mut out, key);
            out
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => render_ignored(parent),
    }
}

fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        match parse(text, Path::new(".")) {
            Ok(_) => String::from("ok"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_fields_are_all_reported_with_paths() {
        let text = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    colour: red\n    routes:\n      - name: r\n        cluster: c\n        wieght: 3\nclusters:\n  - name: c\n    endpoints: [127.0.0.1:1]\n";
        assert_eq!(errors(text), "listeners[0].colour: unknown field\nlisteners[0].routes[0].wieght: unknown field");
    }

    #[test]
    fn type_errors_carry_their_path() {
        let text = "clusters:\n  - name: c\n    endpoints: [127.0.0.1:1]\n    lb: random\n";
        let e = errors(text);
        assert!(e.starts_with("clusters[0].lb: unknown variant `random`"), "{e}");
    }

    #[test]
    fn json_is_accepted() {
        let text = r#"{"listeners":[{"name":"a","address":"127.0.0.1:0","routes":[{"name":"r","cluster":"c"}]}],"clusters":[{"name":"c","endpoints":["127.0.0.1:1"]}]}"#;
        assert_eq!(errors(text), "ok");
    }
}
