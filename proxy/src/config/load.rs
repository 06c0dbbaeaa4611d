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
            let inner = e.into_inner();
            let message = inner.to_string();
            // serde_yaml_ng may start its message with the same path; say it once.
            let mut message = message.strip_prefix(&format!("{path}: ")).map(str::to_string).unwrap_or(message);
            if let Some(at) = inner.location().filter(|_| !message.contains(" line ")) {
                message.push_str(&format!(" (line {}, column {})", at.line(), at.column()));
            }
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
    // An empty key (or one that is not text: a bare `?` line's null key) is
    // still named, so the error has a location.
    out.push_str(if key.is_empty() { "\"\"" } else { key });
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
    fn an_empty_or_null_key_is_named_in_the_error() {
        let clusters = "clusters:\n  - name: c\n    endpoints: [127.0.0.1:1]\n";
        for text in [format!("?\n{clusters}"), format!("\"\": 1\n{clusters}")] {
            let e = errors(&text);
            assert_eq!(e.lines().next(), Some("\"\": unknown field"), "{e}");
        }
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

    const EXAMPLE: &str = include_str!("../../../examples/sidecar.yaml");

    /// Values a hostile or careless operator might write anywhere.
    const VALUES: &[&str] = &[
        "-1",
        "0",
        "99999999999999999999",
        "1 fortnight",
        "\"\"",
        "[]",
        "{}",
        "null",
        "true",
        "http3",
        "::",
        "[::1]:99999",
        "\"/\"",
        "x\u{0}y",
        "64KiB",
        "1ms",
        "*.",
        "\"\\u00e9\"",
        "{ a: [ }",
        "&anchor",
        "*alias",
        "!!binary AA==",
    ];

    /// Every error says what is wrong, and where: a path into the document,
    /// the line (YAML that does not parse), or that it is about the whole
    /// file (empty, several documents).
    fn check(text: &str) -> Result<(), String> {
        let Err(errors) = parse(text, Path::new("/nonexistent")) else { return Ok(()) };
        for e in &errors.0 {
            let whole_file = e.message == "config is empty" || e.message.contains("more than one document");
            if e.message.is_empty() || (e.path.is_empty() && !e.message.contains("line") && !whole_file) {
                return Err(format!("error without a message or a location: {e:?}\n--- config:\n{text}"));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            ..Default::default()
        })]

        /// A value on a random line replaced by a random one.
        #[test]
        fn any_value_anywhere_is_reported_with_its_path(line in 0usize..64, value in proptest::sample::select(VALUES)) {
            let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_string).collect();
            let i = line % lines.len();
            if let Some((key, _)) = lines[i].split_once(": ") {
                lines[i] = format!("{key}: {value}");
            }
            let checked = check(&lines.join("\n"));
            proptest::prop_assert!(checked.is_ok(), "{:?}", checked);
        }

        /// Lines deleted, duplicated, swapped or cut short, bytes inserted.
        #[test]
        fn any_edit_is_refused_with_located_errors_and_never_panics(
            edits in proptest::collection::vec((0usize..4, 0usize..64, 0usize..64, "\\PC{0,8}"), 1..6),
        ) {
            let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_string).collect();
            for (op, a, b, junk) in edits {
                if lines.is_empty() {
                    break;
                }
                let (a, b) = (a % lines.len(), b % lines.len());
                match op {
                    0 => { lines.remove(a); }
                    1 => { let l = lines[a].clone(); lines.insert(b, l); }
                    2 => lines.swap(a, b),
                    _ => {
                        let cut = lines[a].char_indices().nth(b % (lines[a].chars().count() + 1)).map_or(lines[a].len(), |(i, _)| i);
                        lines[a] = format!("{}{junk}", &lines[a][..cut]);
                    }
                }
            }
            let text = lines.join("\n");
            let checked = check(&text);
            proptest::prop_assert!(checked.is_ok(), "{:?}", checked);
        }
    }
}
