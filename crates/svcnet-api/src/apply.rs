//! Server-side apply and managed-fields bookkeeping (structured-merge-diff, as kube-apiserver's
//! `fieldmanager` uses it), on plain JSON values.
//!
//! Leaves out version conversion of managed fields (every kind here has one version) and the
//! 10-entry cap on `Update` managers that the real server applies.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::patch::{PatchMeta, SsaList, patch_meta};

/// One field owned by another manager with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name (`kubectl-client-side-apply`).
    pub manager: String,
    /// The field as kube-apiserver prints it: `.spec.ports[port=80,protocol="TCP"].targetPort`.
    pub field: String,
    /// The other manager's operation (`Apply` or `Update`).
    pub operation: String,
    /// The other manager's `apiVersion` (shown for `Update` managers).
    pub api_version: String,
}

impl Conflict {
    /// The manager as kube-apiserver prints it: `"kubectl"`, or `"kubectl-edit" using v1` for an
    /// `Update` manager.
    pub fn manager_display(&self) -> String {
        if self.operation == "Update" {
            format!("{:?} using {}", self.manager, self.api_version)
        } else {
            format!("{:?}", self.manager)
        }
    }

    /// `StatusCause.message`: `conflict with "kubectl"`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_display())
    }
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change; 409 `Conflict` with one cause per field.
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<Conflict>),
    /// The applied configuration is not an object of the expected shape; 400 `BadRequest`.
    #[error("{0}")]
    Invalid(String),
}

/// The `Status.message` of an apply conflict, as `fieldmanager` words it.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager_display(),
            only.field
        );
    }
    let mut by_manager: std::collections::BTreeMap<String, Vec<&str>> =
        std::collections::BTreeMap::new();
    for conflict in conflicts {
        by_manager.entry(conflict.manager_display()).or_default().push(&conflict.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        for field in fields {
            lines.push(format!("- {field}"));
        }
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// A field path: a sequence of [`PathElement`]s from the object root.
pub type Path = Vec<PathElement>;

/// A set of field paths (`fieldpath.Set`), as stored in `fieldsV1`.
pub type FieldSet = BTreeSet<Path>;

/// One `metadata.managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_identity(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        subresource: Option<&str>,
    ) -> bool {
        // Appliers are identified without their apiVersion, as `BuildManagerIdentifier` does.
        self.manager == manager
            && self.operation == operation
            && (operation == "Apply" || self.api_version == api_version)
            && self.subresource.as_deref() == subresource
    }
}

/// Decodes `metadata.managedFields`; entries that do not decode are dropped, as the real server
/// treats undecodable managed fields as absent.
pub fn decode_managed_fields(obj: &Value) -> Vec<ManagedEntry> {
    let Some(Value::Array(entries)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let manager = e.get("manager")?.as_str()?.to_string();
            Some(ManagedEntry {
                manager,
                operation: e
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("Update")
                    .to_string(),
                api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
                time: e.get("time").and_then(Value::as_str).map(str::to_string),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                fields: e.get("fieldsV1").map(fields_from_v1).unwrap_or_default(),
            })
        })
        .collect()
}

/// Encodes entries as `metadata.managedFields`, sorted as `fieldmanager` sorts them
/// (operation, time, manager, apiVersion, subresource).
pub fn encode_managed_fields(entries: &[ManagedEntry]) -> Value {
    let mut sorted: Vec<&ManagedEntry> = entries.iter().filter(|e| !e.fields.is_empty()).collect();
    sorted.sort_by(|p, q| {
        (&p.operation, &p.time, &p.manager, &p.api_version, &p.subresource).cmp(&(
            &q.operation,
            &q.time,
            &q.manager,
            &q.api_version,
            &q.subresource,
        ))
    });
    Value::Array(
        sorted
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), Value::String(e.manager.clone()));
                m.insert("operation".into(), Value::String(e.operation.clone()));
                m.insert("apiVersion".into(), Value::String(e.api_version.clone()));
                if let Some(time) = &e.time {
                    m.insert("time".into(), Value::String(time.clone()));
                }
                m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
                m.insert("fieldsV1".into(), fields_to_v1(&e.fields));
                if let Some(sub) = &e.subresource {
                    m.insert("subresource".into(), Value::String(sub.clone()));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

fn parse_element(key: &str) -> Option<PathElement> {
    if let Some(name) = key.strip_prefix("f:") {
        return Some(PathElement::Field(name.to_string()));
    }
    if let Some(json) = key.strip_prefix("k:") {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else { return None };
        let mut keys: Vec<(String, ValueKey)> =
            map.iter().map(|(k, v)| (k.clone(), ValueKey(v.to_string()))).collect();
        keys.sort();
        return Some(PathElement::Key(keys));
    }
    if let Some(json) = key.strip_prefix("v:") {
        let value: Value = serde_json::from_str(json).ok()?;
        return Some(PathElement::Value(ValueKey(value.to_string())));
    }
    if let Some(index) = key.strip_prefix("i:") {
        return index.parse().ok().map(PathElement::Index);
    }
    None
}

fn element_key(element: &PathElement) -> String {
    match element {
        PathElement::Field(name) => format!("f:{name}"),
        PathElement::Key(keys) => {
            let parts: Vec<String> =
                keys.iter().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v.0)).collect();
            format!("k:{{{}}}", parts.join(","))
        }
        PathElement::Value(v) => format!("v:{}", v.0),
        PathElement::Index(i) => format!("i:{i}"),
    }
}

/// Decodes a `fieldsV1` document into a set of paths.
pub fn fields_from_v1(v1: &Value) -> FieldSet {
    fn walk(node: &Value, prefix: &mut Path, out: &mut FieldSet) {
        let Value::Object(map) = node else { return };
        for (key, child) in map {
            if key == "." {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
                continue;
            }
            let Some(element) = parse_element(key) else { continue };
            prefix.push(element);
            match child {
                Value::Object(m) if !m.is_empty() => walk(child, prefix, out),
                _ => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v1, &mut Vec::new(), &mut out);
    out
}

/// Encodes a set of paths as `fieldsV1`: `f:`/`k:`/`v:` keys, `.` where a member has children.
pub fn fields_to_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<PathElement, Node>,
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }
    fn render(node: &Node) -> Value {
        let mut m = Map::new();
        if node.member && !node.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &node.children {
            m.insert(element_key(element), render(child));
        }
        Value::Object(m)
    }
    render(&root)
}

/// Fields kube-apiserver never tracks (`stripmeta.go`), plus `status` on the main resource,
/// which the strategies reset.
fn strip(obj: &Value) -> Value {
    strip_for(obj, None)
}

/// [`strip`] for a subresource: the `status` subresource tracks only `status`.
fn strip_for(obj: &Value, subresource: Option<&str>) -> Value {
    if subresource == Some("status") {
        let mut out = Map::new();
        if let Some(status) = obj.get("status") {
            out.insert("status".into(), status.clone());
        }
        return Value::Object(out);
    }
    let mut out = obj.clone();
    if let Value::Object(m) = &mut out {
        m.remove("apiVersion");
        m.remove("kind");
        m.remove("status");
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            for key in [
                "name",
                "namespace",
                "generateName",
                "creationTimestamp",
                "selfLink",
                "uid",
                "generation",
                "managedFields",
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(key);
            }
        }
        if m.get("metadata").is_some_and(|v| is_empty_container(Some(v))) {
            m.remove("metadata");
        }
    }
    out
}

/// The path element of a list item under `meta`'s list type, or why it has none.
fn list_item_element(meta: &PatchMeta, item: &Value, index: usize) -> Result<PathElement, String> {
    match &meta.ssa_list {
        SsaList::Set => Ok(PathElement::Value(ValueKey(item.to_string()))),
        SsaList::Map(keys) => {
            let mut out = Vec::new();
            for key in keys {
                match item.get(key) {
                    Some(v) if !v.is_null() => out.push((key.clone(), ValueKey(v.to_string()))),
                    // `protocol` has a schema default (TCP), which structured-merge-diff uses.
                    _ if key == "protocol" => {
                        out.push((key.clone(), ValueKey("\"TCP\"".to_string())))
                    }
                    _ => {
                        return Err(format!(
                            "element {index}: associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                            key
                        ));
                    }
                }
            }
            out.sort();
            Ok(PathElement::Key(out))
        }
        SsaList::Atomic => Ok(PathElement::Index(index)),
    }
}

/// `TypedValue.ToFieldSet` for an applied configuration.
fn to_field_set(obj: &Value, meta: &PatchMeta) -> Result<FieldSet, String> {
    fn walk(
        value: &Value,
        meta: &PatchMeta,
        path: &mut Path,
        out: &mut FieldSet,
    ) -> Result<(), String> {
        match value {
            Value::Object(map) => {
                if meta.atomic_map {
                    out.insert(path.clone());
                    return Ok(());
                }
                for (key, child) in map {
                    let child_meta =
                        meta.field_ref(key).or(meta.elem_ref()).cloned().unwrap_or_default();
                    path.push(PathElement::Field(key.clone()));
                    walk(child, &child_meta, path, out)?;
                    let is_leaf_like =
                        child.is_null() || matches!(child, Value::Object(m) if m.is_empty());
                    if is_leaf_like {
                        out.insert(path.clone());
                    }
                    path.pop();
                }
                Ok(())
            }
            Value::Array(items) => {
                if meta.ssa_list == SsaList::Atomic {
                    out.insert(path.clone());
                    return Ok(());
                }
                let elem_meta = meta.elem_ref().cloned().unwrap_or_default();
                for (index, item) in items.iter().enumerate() {
                    let element = list_item_element(meta, item, index)
                        .map_err(|e| format!("{}: {e}", field_path_display(path)))?;
                    path.push(element);
                    if meta.ssa_list != SsaList::Set {
                        walk(item, &elem_meta, path, out)?;
                    }
                    out.insert(path.clone());
                    path.pop();
                }
                Ok(())
            }
            _ => {
                out.insert(path.clone());
                Ok(())
            }
        }
    }
    let mut out = FieldSet::new();
    walk(obj, meta, &mut Vec::new(), &mut out)?;
    out.remove(&Vec::new());
    Ok(out)
}

/// `typed.Comparison`: paths whose value changed, appeared or disappeared.
#[derive(Debug, Default)]
struct Comparison {
    modified: FieldSet,
    added: FieldSet,
    removed: FieldSet,
}

fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn compare(
    old: Option<&Value>,
    new: Option<&Value>,
    meta: &PatchMeta,
    path: &mut Path,
    out: &mut Comparison,
) {
    let (old, new) = (non_null(old), non_null(new));
    if old.is_none() && new.is_none() {
        return;
    }
    let leaf = |out: &mut Comparison, path: &Path| match (old, new) {
        (None, Some(_)) => {
            out.added.insert(path.clone());
        }
        (Some(_), None) => {
            out.removed.insert(path.clone());
        }
        (Some(a), Some(b)) if a != b => {
            out.modified.insert(path.clone());
        }
        _ => {}
    };
    let is_object = matches!(old, Some(Value::Object(_))) || matches!(new, Some(Value::Object(_)));
    let is_array = matches!(old, Some(Value::Array(_))) || matches!(new, Some(Value::Array(_)));
    let mixed = match (old, new) {
        (Some(a), Some(b)) => std::mem::discriminant(a) != std::mem::discriminant(b),
        _ => false,
    };
    if mixed || !(is_object || is_array) {
        leaf(out, path);
        return;
    }
    if is_empty_container(old) && is_empty_container(new) {
        return;
    }
    if is_object && meta.atomic_map || is_array && meta.ssa_list == SsaList::Atomic {
        leaf(out, path);
        return;
    }
    if is_object {
        let empty = Map::new();
        let old_map = old.and_then(Value::as_object).unwrap_or(&empty);
        let new_map = new.and_then(Value::as_object).unwrap_or(&empty);
        let mut keys: Vec<&String> = old_map.keys().collect();
        keys.extend(new_map.keys().filter(|k| !old_map.contains_key(*k)));
        for key in keys {
            let child_meta = meta.field_ref(key).or(meta.elem_ref()).cloned().unwrap_or_default();
            path.push(PathElement::Field(key.clone()));
            let (a, b) = (old_map.get(key), new_map.get(key));
            // A non-pointer Go struct is always present, so it is never "added" or "removed".
            if child_meta.always_present && matches!(a.or(b), Some(Value::Object(_))) {
                let empty_obj = Value::Object(Map::new());
                compare(
                    Some(a.unwrap_or(&empty_obj)),
                    Some(b.unwrap_or(&empty_obj)),
                    &child_meta,
                    path,
                    out,
                );
            } else {
                compare(a, b, &child_meta, path, out);
            }
            path.pop();
        }
    } else {
        let empty = Vec::new();
        let old_items = old.and_then(Value::as_array).unwrap_or(&empty);
        let new_items = new.and_then(Value::as_array).unwrap_or(&empty);
        let elem_meta = meta.elem_ref().cloned().unwrap_or_default();
        let index = |items: &[Value]| -> BTreeMap<PathElement, Value> {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    list_item_element(meta, item, i).ok().map(|e| (e, item.clone()))
                })
                .collect()
        };
        let (old_index, new_index) = (index(old_items), index(new_items));
        let mut elements: Vec<&PathElement> = old_index.keys().collect();
        elements.extend(new_index.keys().filter(|k| !old_index.contains_key(*k)));
        for element in elements {
            path.push(element.clone());
            let (a, b) = (old_index.get(element), new_index.get(element));
            if meta.ssa_list == SsaList::Set {
                leaf_presence(a, b, path, out);
            } else {
                compare(a, b, &elem_meta, path, out);
                leaf_presence(a, b, path, out);
            }
            path.pop();
        }
    }
    match (old, new) {
        (None, Some(_)) => {
            out.added.insert(path.clone());
        }
        (Some(_), None) => {
            out.removed.insert(path.clone());
        }
        _ => {}
    }
}

fn leaf_presence(a: Option<&Value>, b: Option<&Value>, path: &Path, out: &mut Comparison) {
    match (a, b) {
        (None, Some(_)) => {
            out.added.insert(path.clone());
        }
        (Some(_), None) => {
            out.removed.insert(path.clone());
        }
        _ => {}
    }
}

fn comparison(old: Option<&Value>, new: &Value, meta: &PatchMeta) -> Comparison {
    comparison_for(old, new, meta, None)
}

fn comparison_for(
    old: Option<&Value>,
    new: &Value,
    meta: &PatchMeta,
    subresource: Option<&str>,
) -> Comparison {
    let mut out = Comparison::default();
    let old = old.map(|o| strip_for(o, subresource)).unwrap_or(Value::Object(Map::new()));
    compare(Some(&old), Some(&strip_for(new, subresource)), meta, &mut Vec::new(), &mut out);
    out.added.remove(&Vec::new());
    out.modified.remove(&Vec::new());
    out.removed.remove(&Vec::new());
    out
}

/// `TypedValue.Merge`: the applied configuration merged into the live object by the schema.
fn ssa_merge(live: &Value, config: &Value, meta: &PatchMeta) -> Result<Value, String> {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !meta.atomic_map => {
            let mut out = l.clone();
            for (key, value) in c {
                if value.is_null() {
                    out.remove(key);
                    continue;
                }
                let child_meta =
                    meta.field_ref(key).or(meta.elem_ref()).cloned().unwrap_or_default();
                let merged = match out.get(key) {
                    Some(existing) => ssa_merge(existing, value, &child_meta)?,
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Value::Array(l), Value::Array(c)) if meta.ssa_list != SsaList::Atomic => {
            let elem_meta = meta.elem_ref().cloned().unwrap_or_default();
            let keyed = |items: &[Value]| -> Result<Vec<(PathElement, Value)>, String> {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Ok((list_item_element(meta, item, i)?, item.clone())))
                    .collect()
            };
            let (lk, ck) = (keyed(l)?, keyed(c)?);
            let mut out: Vec<Value> = Vec::with_capacity(l.len() + c.len());
            let mut emitted: BTreeSet<PathElement> = BTreeSet::new();
            let mut next_config = 0;
            for (element, item) in &lk {
                match ck.iter().position(|(e, _)| e == element) {
                    None => out.push(item.clone()),
                    Some(pos) => {
                        // Emit configured items up to this shared one, in configuration order.
                        while next_config <= pos {
                            let (ce, cv) = &ck[next_config];
                            if emitted.insert(ce.clone()) {
                                let merged = match lk.iter().find(|(e, _)| e == ce) {
                                    Some((_, lv)) if meta.ssa_list != SsaList::Set => {
                                        ssa_merge(lv, cv, &elem_meta)?
                                    }
                                    _ => cv.clone(),
                                };
                                out.push(merged);
                            }
                            next_config += 1;
                        }
                    }
                }
            }
            for (ce, cv) in &ck[next_config.min(ck.len())..] {
                if emitted.insert(ce.clone()) {
                    let merged = match lk.iter().find(|(e, _)| e == ce) {
                        Some((_, lv)) if meta.ssa_list != SsaList::Set => {
                            ssa_merge(lv, cv, &elem_meta)?
                        }
                        _ => cv.clone(),
                    };
                    out.push(merged);
                }
            }
            Ok(Value::Array(out))
        }
        _ => Ok(config.clone()),
    }
}

/// Removes the value at `path` from `obj`, then any container left empty on the way up
/// (omitempty drops those in the real server's typed round trip).
fn remove_path(obj: &mut Value, path: &[PathElement], meta: &PatchMeta) {
    let Some((first, rest)) = path.split_first() else { return };
    match (obj, first) {
        (Value::Object(map), PathElement::Field(name)) => {
            if rest.is_empty() {
                map.remove(name);
                return;
            }
            let child_meta = meta.field_ref(name).or(meta.elem_ref()).cloned().unwrap_or_default();
            if let Some(child) = map.get_mut(name) {
                remove_path(child, rest, &child_meta);
                if is_empty_container(Some(child)) {
                    map.remove(name);
                }
            }
        }
        (Value::Array(items), element) => {
            let position = items.iter().enumerate().position(|(i, item)| {
                list_item_element(meta, item, i).ok().as_ref() == Some(element)
            });
            let Some(position) = position else { return };
            if rest.is_empty() {
                items.remove(position);
                return;
            }
            let elem_meta = meta.elem_ref().cloned().unwrap_or_default();
            remove_path(&mut items[position], rest, &elem_meta);
        }
        _ => {}
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

fn with_managed_fields(mut obj: Value, entries: &[ManagedEntry]) -> Value {
    let encoded = encode_managed_fields(entries);
    if let Value::Object(m) = &mut obj {
        let meta = m.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            if encoded.as_array().is_some_and(|a| a.is_empty()) {
                meta.remove("managedFields");
            } else {
                meta.insert("managedFields".into(), encoded);
            }
        }
    }
    obj
}

/// Applies `applied` for `manager` onto `live` (or creates it) and returns the new object with
/// `metadata.managedFields` updated (structured-merge-diff `Updater.Apply`).
///
/// Fields this manager applied before and omits now are removed unless another manager owns
/// them; a field owned by another manager whose value would change is a conflict unless
/// `force`, which moves the ownership.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    meta: &PatchMeta,
    now: &str,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::Invalid("apply patch must be an object".to_string()));
    }
    if applied.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
        return Err(ApplyError::Invalid("metadata.managedFields must be nil".to_string()));
    }
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .or_else(|| live.and_then(|l| l.get("apiVersion")).and_then(Value::as_str))
        .unwrap_or("v1")
        .to_string();
    let mut entries = live.map(decode_managed_fields).unwrap_or_default();
    let mut live_obj = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(Value::Object(m)) = live_obj.get_mut("metadata") {
        m.remove("managedFields");
    }

    let mut merged = ssa_merge(&live_obj, applied, meta).map_err(ApplyError::Invalid)?;
    let new_set: FieldSet = to_field_set(&strip(applied), meta).map_err(ApplyError::Invalid)?;

    let own = entries.iter().position(|e| e.same_identity(manager, "Apply", &api_version, None));
    let last_set = own.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let others_owned: FieldSet = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != own)
        .flat_map(|(_, e)| e.fields.iter().cloned())
        .collect();

    // Prune what this manager stopped applying, unless someone still owns it or a child of it.
    let mut to_remove: Vec<&Path> = last_set
        .iter()
        .filter(|p| !new_set.contains(*p))
        .filter(|p| !new_set.iter().chain(others_owned.iter()).any(|q| q.starts_with(p)))
        .collect();
    // Parents first: removing a list item removes its fields with it.
    to_remove.sort_by_key(|p| p.len());
    for path in to_remove {
        remove_path(&mut merged, path, meta);
    }

    let cmp = comparison(Some(&live_obj), &merged, meta);
    let changed: FieldSet = cmp.modified.union(&cmp.added).cloned().collect();
    let mut conflicts = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if Some(i) == own {
            continue;
        }
        for path in entry.fields.intersection(&changed) {
            conflicts.push(Conflict {
                manager: entry.manager.clone(),
                field: field_path_display(path),
                operation: entry.operation.clone(),
                api_version: entry.api_version.clone(),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflict(conflicts));
    }
    for (i, entry) in entries.iter_mut().enumerate() {
        if Some(i) == own {
            continue;
        }
        entry.fields = entry
            .fields
            .difference(&changed)
            .filter(|p| !cmp.removed.contains(*p))
            .cloned()
            .collect();
    }
    let entry = ManagedEntry {
        manager: manager.to_string(),
        operation: "Apply".to_string(),
        api_version,
        time: Some(now.to_string()),
        subresource: None,
        fields: new_set,
    };
    match own {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    Ok(with_managed_fields(merged, &entries))
}

/// Records an ordinary write (create, update, patch) by `manager` in `new`'s managed fields and
/// returns the object with `metadata.managedFields` updated (`managedFieldsUpdater.Update`). The
/// kind comes from `new`. Fields this write changed move to `manager`; a write that changes
/// nothing leaves the entries (and their times) alone.
///
/// Managed fields sent in `new` win over `old`'s when they are non-empty (the CSA→SSA migration
/// writes them with a JSON patch); a single empty entry resets them.
pub fn record_update(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    operation: &str,
    now: &str,
) -> Value {
    record_update_subresource(old, new, manager, operation, None, now)
}

/// [`record_update`] for a write through a subresource (`Some("status")`): only that part of the
/// object is tracked and the entry carries `subresource: status`, as the real server records
/// status writers.
pub fn record_update_subresource(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
) -> Value {
    let api_version = new.get("apiVersion").and_then(Value::as_str).unwrap_or("v1").to_string();
    let kind = new.get("kind").and_then(Value::as_str).unwrap_or("");
    let meta = patch_meta(group_of(&api_version), kind);
    let sent = new.pointer("/metadata/managedFields").and_then(Value::as_array);
    let reset =
        sent.is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(|m| m.is_empty()));
    let new_entries = decode_managed_fields(new);
    let mut entries = if reset {
        Vec::new()
    } else if !new_entries.is_empty() {
        new_entries
    } else {
        old.map(decode_managed_fields).unwrap_or_default()
    };

    let cmp = comparison_for(old, new, &meta, subresource);
    let changed: FieldSet = cmp.modified.union(&cmp.added).cloned().collect();
    for entry in entries.iter_mut() {
        entry.fields = entry
            .fields
            .difference(&changed)
            .filter(|p| !cmp.removed.contains(*p))
            .cloned()
            .collect();
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_identity(manager, operation, &api_version, subresource))
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = Some(now.to_string());
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version,
                time: Some(now.to_string()),
                subresource: subresource.map(str::to_string),
                fields: changed,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    with_managed_fields(new.clone(), &entries)
}

/// Renders a field path as structured-merge-diff prints it (`.spec.ports[port=80,protocol="TCP"]`).
pub fn field_path_display(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(keys) => {
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push('[');
                out.push_str(&parts.join(","));
                out.push(']');
            }
            PathElement::Value(v) => {
                out.push_str("[=");
                out.push_str(&v.to_string());
                out.push(']');
            }
            PathElement::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

/// One step of a field path (`fieldpath.PathElement`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// A struct field or map key: `f:name`.
    Field(String),
    /// A list-map element by its keys, in key order: `k:{"port":80,"protocol":"TCP"}`.
    Key(Vec<(String, ValueKey)>),
    /// A set element: `v:"a"`.
    Value(ValueKey),
    /// An atomic-list index (only in paths, never in sets): `i:0`.
    Index(usize),
}

/// A JSON scalar, ordered, used in keys and set values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValueKey(pub String);

impl std::fmt::Display for ValueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
