//! `wasp inject`: reads Kubernetes YAML and adds wasp to every pod it
//! describes: an init container that installs the traffic interception
//! (`wasp iptables install`), wasp itself as a native sidecar (an init
//! container with `restartPolicy: Always`), its volumes, and the
//! `wasp.io/*` annotations, with a generated config unless a ConfigMap is
//! named.
//!
//! `stream` cuts the input into documents; this module finds the pod
//! templates in each (workloads, Pods, Lists); `annotations` reads what a
//! workload asks for; `pod` edits one template with what `sidecar` builds.
//! Documents without a pod template, and opted-out ones, are written back
//! byte for byte; a changed document is re-serialised (its comments lost).

mod annotations;
mod pod;
mod sidecar;
mod stream;

use serde_yaml_ng::{Mapping, Value};
use stream::Stream;

/// What `wasp inject` is asked to add.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image of both containers (its entrypoint is `wasp`).
    pub image: String,
    /// Mount this ConfigMap at /etc/wasp instead of the generated config.
    pub config_map: Option<String>,
}

/// The image used when `--image` is not given.
pub fn default_image() -> String {
    format!("wasp:{}", env!("CARGO_PKG_VERSION"))
}

/// A document inject cannot handle, with where it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{at}: {message}")]
pub struct InjectError {
    /// e.g. `document 2 (Deployment "web")`, `document 1 (List), items[0] (Pod "a")`.
    pub at: String,
    pub message: String,
}

/// Injects every pod in `input` (one or more YAML documents); returns the
/// new text, or every problem found (and then nothing is written).
pub fn inject(input: &str, opts: &Options) -> Result<String, Vec<InjectError>> {
    let mut stream = Stream::parse(input);
    let mut errors = Vec::new();
    for i in 0..stream.documents.len() {
        let at = format!("document {}", i + 1);
        let mut value: Value = match serde_yaml_ng::from_str(&stream.yaml(i)) {
            Ok(v) => v,
            Err(e) => {
                errors.push(InjectError { at, message: format!("not valid YAML: {e}") });
                continue;
            }
        };
        if value.is_null() {
            continue; // an empty document
        }
        if object(&mut value, &at, opts, &mut errors) {
            match serde_yaml_ng::to_string(&value) {
                Ok(text) => stream.replace(i, text),
                Err(e) => errors.push(InjectError { at, message: format!("cannot write it back: {e}") }),
            }
        }
    }
    if errors.is_empty() { Ok(stream.render()) } else { Err(errors) }
}

/// Where a kind keeps its pod template: `[]` for a Pod (the object is
/// one), `None` for kinds without pods.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// The pod template at `path` in `obj`, and its path as a message prefix (`spec.template.`).
fn template_at<'a>(obj: &'a mut Mapping, path: &[&str], kind: &str) -> Result<(&'a mut Mapping, String), String> {
    let mut prefix = String::new();
    let mut template = obj;
    for key in path {
        prefix.push_str(key);
        template = match template.get_mut(*key) {
            Some(Value::Mapping(m)) => m,
            Some(other) => {
                let found = annotations::kind_of(other);
                return Err(format!("{prefix}: expected a mapping (the pod template of a {kind}), found {found}"));
            }
            None => return Err(format!("{prefix}: missing; a {kind} needs a pod template at {}", path.join("."))),
        };
        prefix.push('.');
    }
    Ok((template, prefix))
}

fn report(errors: &mut Vec<InjectError>, at: &str, messages: Vec<String>) {
    errors.extend(messages.into_iter().map(|message| InjectError { at: at.to_string(), message }));
}

/// Injects one Kubernetes object; `true` if it changed. Problems go to `errors`.
fn object(value: &mut Value, at: &str, opts: &Options, errors: &mut Vec<InjectError>) -> bool {
    let Value::Mapping(obj) = value else {
        let found = annotations::kind_of(value);
        let message = format!("expected a Kubernetes object (a mapping with apiVersion and kind), found {found}");
        report(errors, at, vec![message]);
        return false;
    };
    let kind = match obj.get("kind") {
        Some(Value::String(k)) => k.clone(),
        Some(other) => {
            report(errors, at, vec![format!("kind: expected a string, found {}", annotations::kind_of(other))]);
            return false;
        }
        None => {
            report(errors, at, vec!["no kind; expected a Kubernetes object with apiVersion and kind".into()]);
            return false;
        }
    };
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .map(|n| format!(" {n:?}"))
        .unwrap_or_default();
    let at = format!("{at} ({kind}{name})");
    if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
        return list(obj, &at, opts, errors);
    }
    let Some(path) = template_path(&kind) else { return false };
    // A workload's own annotations count too (a Pod's are its template's).
    let workload_notes =
        if path.is_empty() { Ok(None) } else { pod::annotations_of(obj).map(Option::<&Mapping>::cloned) };
    let found = workload_notes.and_then(|notes| Ok((template_at(obj, path, &kind)?, notes)));
    let ((template, prefix), workload_notes) = match found {
        Ok(found) => found,
        Err(message) => {
            report(errors, &at, vec![message]);
            return false;
        }
    };
    let settings = match pod::settings(template, workload_notes.as_ref(), &prefix) {
        Ok(Some(s)) => s,
        Ok(None) => return false,
        Err(messages) => {
            report(errors, &at, messages);
            return false;
        }
    };
    match pod::inject(template, &settings, opts, &prefix) {
        Ok(()) => true,
        Err(messages) => {
            report(errors, &at, messages);
            false
        }
    }
}

/// A `kind: List`: each of its `items` in turn.
fn list(obj: &mut Mapping, at: &str, opts: &Options, errors: &mut Vec<InjectError>) -> bool {
    let items = match obj.get_mut("items") {
        Some(Value::Sequence(items)) => items,
        Some(Value::Null) | None => return false,
        Some(other) => {
            report(
                errors,
                at,
                vec![format!("items: expected a sequence of objects, found {}", annotations::kind_of(other))],
            );
            return false;
        }
    };
    let mut changed = false;
    for (i, item) in items.iter_mut().enumerate() {
        changed |= object(item, &format!("{at}, items[{i}]"), opts, errors);
    }
    changed
}
