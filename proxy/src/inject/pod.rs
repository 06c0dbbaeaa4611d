//! Injecting one pod template (a Pod, or a workload's `spec.template`):
//! whatever an earlier injection added is taken out first, then added
//! again the same way, so injecting injected output changes nothing.

use super::Options;
use super::annotations::{self, CONFIG, INJECTED, Settings, kind_of};
use super::sidecar::{self, CACHE_VOLUME, CONFIG_VOLUME, INIT_NAME, LOCK_VOLUME, SIDECAR_NAME};
use serde_yaml_ng::{Mapping, Value};

/// The annotations of `metadata` (a pod template's or a workload's), if any.
pub fn annotations_of(object: &Mapping) -> Result<Option<&Mapping>, String> {
    let metadata = match object.get("metadata") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Mapping(m)) => m,
        Some(other) => return Err(format!("metadata: expected a mapping, found {}", kind_of(other))),
    };
    match metadata.get("annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(a)) => Ok(Some(a)),
        Some(other) => Err(format!("metadata.annotations: expected a mapping, found {}", kind_of(other))),
    }
}

/// Reads the template's settings (the workload's annotations fill in what
/// the template's do not say); `None` when it opted out.
pub fn settings(template: &Mapping, workload: Option<&Mapping>, prefix: &str) -> Result<Option<Settings>, Vec<String>> {
    let own = annotations_of(template).map_err(|e| vec![format!("{prefix}{e}")])?;
    let settings = annotations::read(own, workload)?;
    Ok((!settings.disabled).then_some(settings))
}

/// Injects `template` (`prefix` is its path in the object, for messages).
pub fn inject(template: &mut Mapping, settings: &Settings, opts: &Options, prefix: &str) -> Result<(), Vec<String>> {
    let spec = match template.get_mut("spec") {
        Some(Value::Mapping(spec)) => spec,
        Some(other) => {
            return Err(vec![format!("{prefix}spec: expected a mapping (a pod spec), found {}", kind_of(other))]);
        }
        None => return Err(vec![format!("{prefix}spec: missing; expected a pod spec")]),
    };
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        return Err(vec![format!(
            "{prefix}spec.hostNetwork: the pod shares the node's network, where interception would capture the \
             node's traffic; annotate it {}: disabled",
            annotations::INJECT
        )]);
    }
    let grace = match spec.get("terminationGracePeriodSeconds") {
        None | Some(Value::Null) => sidecar::DEFAULT_GRACE_SECONDS,
        Some(v) => v.as_u64().ok_or_else(|| {
            vec![format!(
                "{prefix}spec.terminationGracePeriodSeconds: expected a whole number of seconds, found {}",
                kind_of(v)
            )]
        })?,
    };
    let init = sequence(spec, "initContainers", prefix)?;
    init.retain(|c| !matches!(c.get("name").and_then(Value::as_str), Some(INIT_NAME | SIDECAR_NAME)));
    init.insert(0, sidecar::init_container(&opts.image, settings));
    init.insert(1, sidecar::sidecar_container(&opts.image));
    let volumes = sequence(spec, "volumes", prefix)?;
    volumes
        .retain(|v| !matches!(v.get("name").and_then(Value::as_str), Some(CONFIG_VOLUME | CACHE_VOLUME | LOCK_VOLUME)));
    volumes.extend(sidecar::volumes(opts.config_map.as_deref()));

    let metadata = mapping(template, "metadata", prefix)?;
    let notes = mapping(metadata, "annotations", &format!("{prefix}metadata."))?;
    notes.shift_remove(CONFIG);
    notes.shift_remove(INJECTED);
    if opts.config_map.is_none() {
        let drain = sidecar::drain_seconds(grace);
        notes.insert(CONFIG.into(), sidecar::config(drain, settings.outbound_http).into());
    }
    notes.insert(INJECTED.into(), env!("CARGO_PKG_VERSION").into());
    Ok(())
}

/// The mapping at `object[key]`, created when absent.
fn mapping<'a>(object: &'a mut Mapping, key: &str, prefix: &str) -> Result<&'a mut Mapping, Vec<String>> {
    let value = object.entry(key.into()).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Mapping(Mapping::new());
    }
    match value {
        Value::Mapping(m) => Ok(m),
        other => Err(vec![format!("{prefix}{key}: expected a mapping, found {}", kind_of(other))]),
    }
}

/// The sequence at `spec[key]`, created when absent.
fn sequence<'a>(spec: &'a mut Mapping, key: &str, prefix: &str) -> Result<&'a mut Vec<Value>, Vec<String>> {
    let value = spec.entry(key.into()).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Sequence(Vec::new());
    }
    match value {
        Value::Sequence(items) => Ok(items),
        other => Err(vec![format!("{prefix}spec.{key}: expected a sequence, found {}", kind_of(other))]),
    }
}
