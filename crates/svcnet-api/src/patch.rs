//! The three PATCH flavours kube-apiserver accepts, applied to plain JSON values: JSON merge
//! patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch (apimachinery
//! `strategicpatch`), plus the per-kind patch metadata (`patchStrategy`/`patchMergeKey` struct
//! tags, `x-kubernetes-list-type` and friends) that SMP and server-side apply need.
//!
//! Leaves out SMP's client-side half (computing patches); only the server side (applying them)
//! is needed. Directives are applied and never left in a result.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::PatchError;

/// How strategic merge patch treats a list (`patchStrategy` / `patchMergeKey`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SmpList {
    /// The patch replaces the whole list (no `patchStrategy`).
    #[default]
    Replace,
    /// `patchStrategy:"merge"` on a list of primitives: union.
    MergeSet,
    /// `patchStrategy:"merge"` with `patchMergeKey`: elements match by that key.
    MergeByKey(String),
}

/// How server-side apply treats a list (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SsaList {
    /// `atomic`: the list is one value.
    #[default]
    Atomic,
    /// `set`: a list of unique primitives.
    Set,
    /// `map` with `x-kubernetes-list-map-keys`.
    Map(Vec<String>),
}

/// Patch metadata for one node of an object's schema. The root describes the whole object;
/// `fields` describe struct fields, `elem` list elements and map values. Nodes not described
/// fall back to the defaults: maps merge, lists replace (SMP) and are atomic (SSA).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchMeta {
    pub fields: BTreeMap<String, PatchMeta>,
    pub elem: Option<Box<PatchMeta>>,
    pub smp_list: SmpList,
    pub ssa_list: SsaList,
    /// `x-kubernetes-map-type: atomic` (or `structType=atomic`): SSA owns the map as one value.
    pub atomic_map: bool,
    /// `patchStrategy:"retainKeys"` on a struct (Pod volumes).
    pub retain_keys: bool,
    /// A non-pointer Go struct: present (possibly empty) in every object, which matters for the
    /// `.` markers of `Update` managed fields.
    pub always_present: bool,
}

impl PatchMeta {
    /// The metadata of field `name`, or the default node.
    pub fn field(&self, name: &str) -> PatchMeta {
        self.fields.get(name).cloned().unwrap_or_default()
    }

    /// A borrowed child, if described.
    pub fn field_ref(&self, name: &str) -> Option<&PatchMeta> {
        self.fields.get(name)
    }

    /// The metadata of list elements or map values.
    pub fn elem_ref(&self) -> Option<&PatchMeta> {
        self.elem.as_deref()
    }

    fn with(mut self, name: &str, child: PatchMeta) -> Self {
        self.fields.insert(name.to_string(), child);
        self
    }

    fn present(mut self) -> Self {
        self.always_present = true;
        self
    }
}

fn node() -> PatchMeta {
    PatchMeta::default()
}

/// A list of primitives merged as a set by both SMP and SSA (`finalizers`).
fn set_list() -> PatchMeta {
    PatchMeta { smp_list: SmpList::MergeSet, ssa_list: SsaList::Set, ..PatchMeta::default() }
}

/// A list SMP merges by `smp_key` and SSA treats as a map keyed by `ssa_keys`.
fn keyed_list(smp_key: &str, ssa_keys: &[&str], elem: PatchMeta) -> PatchMeta {
    PatchMeta {
        smp_list: SmpList::MergeByKey(smp_key.to_string()),
        ssa_list: SsaList::Map(ssa_keys.iter().map(|s| s.to_string()).collect()),
        elem: Some(Box::new(elem)),
        ..PatchMeta::default()
    }
}

/// A list SMP replaces but SSA treats as a map.
fn replace_map_list(ssa_keys: &[&str], elem: PatchMeta) -> PatchMeta {
    PatchMeta {
        smp_list: SmpList::Replace,
        ssa_list: SsaList::Map(ssa_keys.iter().map(|s| s.to_string()).collect()),
        elem: Some(Box::new(elem)),
        ..PatchMeta::default()
    }
}

/// An atomic list (replace / atomic); the default, spelled out for documentation.
fn atomic_list() -> PatchMeta {
    node()
}

fn atomic_map() -> PatchMeta {
    PatchMeta { atomic_map: true, ..PatchMeta::default() }
}

fn conditions() -> PatchMeta {
    keyed_list("type", &["type"], node())
}

fn object_meta() -> PatchMeta {
    node()
        .with("ownerReferences", keyed_list("uid", &["uid"], node()))
        .with("finalizers", set_list())
        .with("managedFields", atomic_list())
}

fn root(spec: Option<PatchMeta>, status: Option<PatchMeta>) -> PatchMeta {
    let mut meta = node().with("metadata", object_meta().present());
    if let Some(spec) = spec {
        meta = meta.with("spec", spec.present());
    }
    if let Some(status) = status {
        meta = meta.with("status", status.present());
    }
    meta
}

fn container() -> PatchMeta {
    node()
        .with("ports", keyed_list("containerPort", &["containerPort", "protocol"], node()))
        .with("env", keyed_list("name", &["name"], node()))
        .with("volumeMounts", keyed_list("mountPath", &["mountPath"], node()))
        .with("volumeDevices", keyed_list("devicePath", &["devicePath"], node()))
        .with("resources", node().present().with("claims", replace_map_list(&["name"], node())))
}

fn pod_spec() -> PatchMeta {
    let volume = PatchMeta { retain_keys: true, ..PatchMeta::default() };
    node()
        .with("containers", keyed_list("name", &["name"], container()))
        .with("initContainers", keyed_list("name", &["name"], container()))
        .with("ephemeralContainers", keyed_list("name", &["name"], container()))
        .with("volumes", keyed_list("name", &["name"], volume))
        .with("imagePullSecrets", keyed_list("name", &["name"], node()))
        .with("hostAliases", keyed_list("ip", &["ip"], node()))
        .with(
            "topologySpreadConstraints",
            keyed_list("topologyKey", &["topologyKey", "whenUnsatisfiable"], node()),
        )
        .with("resourceClaims", keyed_list("name", &["name"], node()))
        .with("schedulingGates", keyed_list("name", &["name"], node()))
        .with("nodeSelector", atomic_map())
}

fn pod_status() -> PatchMeta {
    node()
        .with("conditions", conditions())
        .with("podIPs", keyed_list("ip", &["ip"], node()))
        .with("hostIPs", keyed_list("ip", &["ip"], node()))
}

fn pod_template() -> PatchMeta {
    node().with("metadata", object_meta().present()).with("spec", pod_spec().present())
}

fn workload_spec() -> PatchMeta {
    // metav1.LabelSelector is `structType=atomic`.
    node()
        .with("selector", atomic_map())
        .with("template", pod_template().present())
        .with("strategy", node().present())
}

fn workload_status() -> PatchMeta {
    node().with("conditions", conditions())
}

fn service_spec() -> PatchMeta {
    // SMP keys Service ports on `port` only, SSA on (port, protocol): kube-apiserver's quirk.
    node()
        .with("ports", keyed_list("port", &["port", "protocol"], node()))
        .with("selector", atomic_map())
}

fn service_status() -> PatchMeta {
    node().with("conditions", conditions()).with("loadBalancer", node().present())
}

fn node_spec() -> PatchMeta {
    node()
        .with(
            "taints",
            PatchMeta { smp_list: SmpList::MergeByKey("key".to_string()), ..PatchMeta::default() },
        )
        .with("podCIDRs", set_list())
}

fn node_status() -> PatchMeta {
    node()
        .with("conditions", conditions())
        .with("addresses", keyed_list("type", &["type"], node()))
        .with("daemonEndpoints", node().present().with("kubeletEndpoint", node().present()))
        .with("nodeInfo", node().present())
}

/// Patch metadata for a kind; unknown kinds get the defaults (maps merge, lists replace).
pub fn patch_meta(group: &str, kind: &str) -> PatchMeta {
    match (group, kind) {
        ("", "Service") => root(Some(service_spec()), Some(service_status())),
        ("", "Pod") => root(Some(pod_spec()), Some(pod_status())),
        ("", "PodTemplate") => root(None, None).with("template", pod_template()),
        ("", "Node") => root(Some(node_spec()), Some(node_status())),
        ("", "Namespace") => root(
            Some(node().with("finalizers", atomic_list())),
            Some(node().with("conditions", conditions())),
        ),
        // Endpoints subsets are atomic (replace) in both SMP and SSA.
        ("", "Endpoints") => root(None, None),
        ("", "Event") | ("events.k8s.io", "Event") => root(None, None)
            .with("involvedObject", node().present())
            .with("source", node().present()),
        ("", "ConfigMap") | ("", "Secret") => root(None, None),
        ("apps", "Deployment")
        | ("apps", "ReplicaSet")
        | ("apps", "StatefulSet")
        | ("apps", "DaemonSet") => root(Some(workload_spec()), Some(workload_status())),
        // EndpointSlice `endpoints` and `ports` are atomic; addresses inside are a set for SSA.
        ("discovery.k8s.io", "EndpointSlice") => root(None, None).with(
            "endpoints",
            PatchMeta {
                elem: Some(Box::new(node().with(
                    "addresses",
                    PatchMeta { ssa_list: SsaList::Set, ..PatchMeta::default() },
                ))),
                ..PatchMeta::default()
            },
        ),
        ("coordination.k8s.io", "Lease") => root(Some(node()), None),
        _ => root(None, None),
    }
}

/// RFC 7386 JSON merge patch: maps merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else { return };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test). On error `target` is unchanged.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Invalid(format!("invalid JSON patch: {e}")))?;
    let mut work = target.clone();
    json_patch::patch(&mut work, &operations).map_err(|e| match e.kind {
        json_patch::PatchErrorKind::TestFailed => PatchError::Test(e.to_string()),
        _ => PatchError::Apply(e.to_string()),
    })?;
    *target = work;
    Ok(())
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `target` (kubectl-api.md §8.3, apimachinery
/// `StrategicMergeMapPatch`). `meta` is the kind's [`patch_meta`].
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    meta: &PatchMeta,
) -> Result<Value, PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::Invalid("strategic merge patch must be a JSON object".to_string()));
    };
    let original = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    Ok(Value::Object(merge_map(original, patch_map, meta)?))
}

/// Removes every directive from a value that is being inserted as is.
fn clean(value: &Value, meta: &PatchMeta) -> Result<Value, PatchError> {
    match value {
        Value::Object(m) => Ok(Value::Object(merge_map(Map::new(), m, meta)?)),
        Value::Array(items) => merge_list(&[], items, meta),
        other => Ok(other.clone()),
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    meta: &PatchMeta,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                return merge_map(Map::new(), &rest, meta);
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => return Err(PatchError::Invalid(format!("Unknown patch directive: {directive}"))),
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(keys) = retain else {
            return Err(PatchError::Invalid(
                "invalid patch: the $retainKeys directive must be a list of strings".to_string(),
            ));
        };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        for (k, v) in patch {
            if v.is_null() || k.starts_with('$') {
                continue;
            }
            if !keys.contains(&k.as_str()) {
                return Err(PatchError::Invalid("doesn't match the $retainKeys directive: every key in the patch must be listed in $retainKeys".to_string()));
            }
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
    }

    let mut ordered: Vec<&str> = Vec::new();
    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else { continue };
        let Value::Array(order) = order else {
            return Err(PatchError::Invalid(format!("invalid patch: {key} must be a list")));
        };
        let field_meta = meta.field(field);
        let original_list = match original.get(field) {
            Some(Value::Array(items)) => Some(items.clone()),
            _ => None,
        };
        let merged = match (original_list, patch.get(field)) {
            (None, None) => continue,
            (Some(orig), None) => orig,
            (None, Some(Value::Array(p))) => match merge_list(&[], p, &field_meta)? {
                Value::Array(items) => items,
                _ => Vec::new(),
            },
            (Some(orig), Some(Value::Array(p))) => match merge_list(&orig, p, &field_meta)? {
                Value::Array(items) => items,
                _ => Vec::new(),
            },
            (_, Some(Value::Null)) => {
                original.remove(field);
                ordered.push(field);
                continue;
            }
            (_, Some(other)) => {
                return Err(PatchError::Invalid(format!(
                    "invalid patch: {field} must be a list, got {other}"
                )));
            }
        };
        let server = match original.get(field) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let key = match &field_meta.smp_list {
            SmpList::MergeByKey(k) => Some(k.as_str()),
            _ => None,
        };
        let (in_order, server_only): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|item| index_of(order, item, key).is_some());
        original.insert(
            field.to_string(),
            Value::Array(normalize_order(in_order, server_only, order, &server, key)),
        );
        ordered.push(field);
    }

    for (key, value) in patch {
        if key == DIRECTIVE || key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if ordered.contains(&key.as_str()) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(remove) = value else {
                return Err(PatchError::Invalid(format!("invalid patch: {key} must be a list")));
            };
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(PatchError::Invalid(format!(
                "unknown strategic merge patch directive: {key}"
            )));
        }
        let field_meta = meta.field(key);
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let merged = match (original.remove(key), value) {
            (Some(Value::Object(orig)), Value::Object(p)) => {
                Value::Object(merge_map(orig, p, &field_meta)?)
            }
            (Some(Value::Array(orig)), Value::Array(p)) => merge_list(&orig, p, &field_meta)?,
            (_, p) => clean(p, &field_meta)?,
        };
        original.insert(key.clone(), merged);
    }
    Ok(original)
}

/// The position of `item` in `order`, matching maps by merge key and primitives by value.
fn index_of(order: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(k) => {
            let wanted = item.get(k)?;
            order.iter().position(|o| o.get(k) == Some(wanted))
        }
        None => order.iter().position(|o| o == item),
    }
}

/// `normalizeElementOrder` + `mergeSortedSlice`: patch items in patch order, server-only items in
/// server order, interleaved by their position in the live list.
fn normalize_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    patch_items.sort_by_key(|item| index_of(patch_order, item, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| index_of(server_order, item, key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let (mut left, mut right) =
        (server_only.into_iter().peekable(), patch_items.into_iter().peekable());
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (Some(l), Some(r)) => {
                let take_left = matches!(
                    (index_of(server_order, l, key), index_of(server_order, r, key)),
                    (Some(li), Some(ri)) if li < ri
                );
                if take_left { out.extend(left.next()) } else { out.extend(right.next()) }
            }
        }
    }
    out
}

fn merge_list(original: &[Value], patch: &[Value], meta: &PatchMeta) -> Result<Value, PatchError> {
    let elem_meta = meta.elem_ref().cloned().unwrap_or_default();
    match &meta.smp_list {
        SmpList::Replace => {
            // A `{"$patch":"replace"}` marker is harmless here; drop it.
            let mut out = Vec::with_capacity(patch.len());
            for item in patch {
                if is_directive_only(item) {
                    continue;
                }
                out.push(clean(item, &elem_meta)?);
            }
            Ok(Value::Array(out))
        }
        SmpList::MergeSet => {
            if patch.iter().any(|p| p.get(DIRECTIVE).and_then(Value::as_str) == Some("replace")) {
                return Ok(Value::Array(
                    patch.iter().filter(|p| !is_directive_only(p)).cloned().collect(),
                ));
            }
            let mut merged: Vec<Value> = Vec::new();
            for item in original.iter().chain(patch) {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            let (patch_items, server_only): (Vec<Value>, Vec<Value>) =
                merged.into_iter().partition(|v| patch.contains(v));
            Ok(Value::Array(normalize_order(patch_items, server_only, patch, original, None)))
        }
        SmpList::MergeByKey(key) => {
            let mut merged: Vec<Value> = original.to_vec();
            // `{"$patch":"replace"}` as an element: the patch list replaces the live list.
            if patch.iter().any(|p| {
                is_directive_only(p) && p.get(DIRECTIVE).and_then(Value::as_str) == Some("replace")
            }) {
                merged.clear();
            }
            let mut patch_without_deletes = Vec::new();
            for item in patch {
                if is_directive_only(item) {
                    continue;
                }
                let Value::Object(item_map) = item else {
                    return Err(PatchError::Invalid(format!(
                        "invalid patch: list element {item} is not an object"
                    )));
                };
                let Some(key_value) = item_map.get(key) else {
                    return Err(PatchError::Invalid(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let position = merged.iter().position(|m| m.get(key) == Some(key_value));
                match item_map.get(DIRECTIVE).and_then(Value::as_str) {
                    Some("delete") => {
                        merged.retain(|m| m.get(key) != Some(key_value));
                        continue;
                    }
                    Some("replace") => {
                        let mut rest = item_map.clone();
                        rest.remove(DIRECTIVE);
                        let replacement = Value::Object(merge_map(Map::new(), &rest, &elem_meta)?);
                        match position {
                            Some(i) => merged[i] = replacement,
                            None => merged.push(replacement),
                        }
                    }
                    Some("merge") | None => match position {
                        Some(i) => {
                            let orig = match merged[i].take() {
                                Value::Object(m) => m,
                                _ => Map::new(),
                            };
                            merged[i] = Value::Object(merge_map(orig, item_map, &elem_meta)?);
                        }
                        None => {
                            merged.push(Value::Object(merge_map(Map::new(), item_map, &elem_meta)?))
                        }
                    },
                    Some(other) => {
                        return Err(PatchError::Invalid(format!(
                            "Unknown patch directive: {other}"
                        )));
                    }
                }
                patch_without_deletes.push(item.clone());
            }
            let (patch_items, server_only): (Vec<Value>, Vec<Value>) = merged
                .into_iter()
                .partition(|m| index_of(&patch_without_deletes, m, Some(key)).is_some());
            Ok(Value::Array(normalize_order(
                patch_items,
                server_only,
                &patch_without_deletes,
                original,
                Some(key),
            )))
        }
    }
}

/// An element that is only a directive (`{"$patch":"replace"}`).
fn is_directive_only(item: &Value) -> bool {
    matches!(item, Value::Object(m) if m.len() == 1 && m.contains_key(DIRECTIVE))
}

#[cfg(test)]
mod tests;
