//! The REST verbs on stored objects: get, list, create, update, patch, delete,
//! deletecollection, and the status/scale/binding subresources.
//!
//! Objects are stored as JSON without `metadata.resourceVersion`; the store's `mod_revision` is
//! injected on every read. Every write is one store transaction with a precondition (Absent on
//! create, the read `mod_revision` on update and delete), so a write is never half done and a
//! stale writer gets 409. Lists and watches are served from the watch cache; single reads and
//! the reads of a write go to the store. What is absent: admission plugins and RBAC.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use svcnet_api::{FieldError, FieldPath, FieldSelector, LabelSelector};
use svcnet_store::{KeyValue, Op, Precondition};

use crate::cache::CachedObject;
use crate::error::ApiError;
use crate::query::{Format, Query};
use crate::registry::{self, Resource, Sub};
use crate::server::State;
use crate::services::{self, Allocate};
use crate::{kinds, object, table};

/// The object or collection a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Sub>,
}

impl Target {
    pub fn key(&self) -> String {
        self.resource.key(self.namespace.as_deref(), self.name.as_deref().unwrap_or(""))
    }
}

/// A successful answer: status code, JSON body, warnings.
pub struct Reply {
    pub code: u16,
    pub body: ReplyBody,
    pub warnings: Vec<String>,
}

pub enum ReplyBody {
    Json(Value),
    Raw(Bytes),
}

impl Reply {
    pub fn ok(v: Value) -> Reply {
        Reply { code: 200, body: ReplyBody::Json(v), warnings: Vec::new() }
    }
    fn created(v: Value) -> Reply {
        Reply { code: 201, body: ReplyBody::Json(v), warnings: Vec::new() }
    }
}

/// Options shared by writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub validation: Validation,
    pub user_agent: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    Strict,
    Warn,
    Ignore,
}

impl WriteOptions {
    pub fn from_query(q: &Query, user_agent: &str) -> Result<WriteOptions, ApiError> {
        let dry_run = match q.get("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::invalid_options(
                    "CreateOptions",
                    &[FieldError::not_supported(FieldPath::new("dryRun"), other, &["All"])],
                ));
            }
        };
        let validation = match q.get("fieldValidation") {
            None | Some("") | Some("Warn") => Validation::Warn,
            Some("Strict") => Validation::Strict,
            Some("Ignore") => Validation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation parameter unsupported: {other}. Valid values are Strict, Warn, Ignore"
                )));
            }
        };
        Ok(WriteOptions {
            dry_run,
            field_manager: q.value("fieldManager").map(str::to_string),
            validation,
            user_agent: user_agent.to_string(),
        })
    }

    /// The manager recorded in managedFields: `fieldManager`, else the user agent's program.
    fn manager(&self) -> String {
        if let Some(m) = &self.field_manager {
            return m.clone();
        }
        let ua = self.user_agent.split('/').next().unwrap_or("").trim();
        if ua.is_empty() { "unknown".into() } else { ua.chars().take(128).collect() }
    }
}

fn decode_kv(resource: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    object::set_resource_version(&mut v, kv.mod_revision);
    ensure_type_meta(resource, &mut v);
    Ok(v)
}

pub fn ensure_type_meta(resource: &Resource, v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!(resource.api_version()));
        m.insert("kind".into(), json!(resource.kind));
    }
}

fn encode_stored(v: &Value) -> Result<Vec<u8>, ApiError> {
    let mut stored = v.clone();
    object::remove_resource_version(&mut stored);
    serde_json::to_vec(&stored).map_err(ApiError::internal)
}

async fn read(state: &State, target: &Target) -> Result<(Value, u64), ApiError> {
    let name = target.name.as_deref().unwrap_or("");
    match state.store.get(&target.key()).await? {
        Some(kv) => Ok((decode_kv(target.resource, &kv)?, kv.mod_revision)),
        None => Err(ApiError::not_found(target.resource, name)),
    }
}

/// Sets uid, creationTimestamp and generation on a new object and clears what a create may
/// not set.
pub fn stamp_new(obj: &mut Value, resource: &Resource) {
    let has_generation = kinds::has_generation(resource);
    let meta = object::meta_mut(obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if has_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    ensure_type_meta(resource, obj);
}

fn check_type_meta(resource: &Resource, body: &Value) -> Result<(), ApiError> {
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != resource.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            resource.api_version()
        )));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != resource.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the body is not a JSON object",
            resource.kind, resource.version, resource.kind
        )));
    }
    Ok(())
}

/// Field validation of a request body: an error for Strict, warnings for Warn.
fn field_validation(
    resource: &Resource,
    body: &Value,
    opts: &WriteOptions,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    if opts.validation == Validation::Ignore {
        return Ok(());
    }
    let unknown = kinds::unknown_fields(resource, body);
    if unknown.is_empty() {
        return Ok(());
    }
    match opts.validation {
        Validation::Strict => {
            let list = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ");
            Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {list}",
                resource.kind, resource.version, resource.kind
            )))
        }
        _ => {
            warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            Ok(())
        }
    }
}

async fn check_namespace(
    state: &State,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    if !resource.namespaced {
        return Ok(());
    }
    let Some(ns) = namespace else { return Err(ApiError::bad_request("a namespace is required")) };
    let ns_res = registry::find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces not registered"))?;
    let key = ns_res.key(None, ns);
    // The cache answers the common case; a namespace it has not seen yet (just created) is
    // looked up in the store.
    let found = match state.cache.get(&key) {
        Some(o) => Some(o.value.clone()),
        None => state
            .store
            .get(&key)
            .await?
            .map(|kv| serde_json::from_slice::<Value>(&kv.value).unwrap_or(Value::Null)),
    };
    match found {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(v) => {
            if object::deletion_timestamp(&v).is_some() {
                Err(ApiError::forbidden(format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    resource.plural
                )))
            } else {
                Ok(())
            }
        }
    }
}

fn is_service(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.kind == "Service"
}

// ---------------------------------------------------------------------------------------------
// get / list

pub async fn get(
    state: &Arc<State>,
    target: &Target,
    query: &Query,
    format: Format,
) -> Result<Reply, ApiError> {
    let (obj, _) = read(state, target).await?;
    match target.sub {
        Some(Sub::Scale) => return Ok(Reply::ok(scale_of(target.resource, &obj))),
        Some(Sub::Status) | None => {}
        Some(_) => return Err(ApiError::method_not_allowed()),
    }
    let _ = query;
    match format {
        Format::Json => Ok(Reply::ok(obj)),
        Format::Table(include) => {
            let rev = object::resource_version(&obj).unwrap_or("").to_string();
            Ok(Reply::ok(table::render(target.resource, &[&obj], include, &rev, true)))
        }
    }
}

/// Parsed list/watch filters.
pub struct Filters {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filters {
    pub fn parse(resource: &Resource, q: &Query) -> Result<Filters, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        fields.check_supported(resource.kind).map_err(ApiError::bad_request)?;
        Ok(Filters { labels, fields })
    }

    pub fn matches(&self, resource: &Resource, obj: &Value) -> bool {
        self.labels.matches_object(obj)
            && (self.fields.is_empty() || self.fields.matches(resource.kind, obj))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, start: &str) -> String {
    let t = ContinueToken { rv, start: start.to_string() };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))
}

/// Objects of a collection, fresh as of "now" (consistent read from the cache).
pub async fn collection_snapshot(
    state: &State,
    prefix: &str,
    rv_param: Option<&str>,
) -> Result<(Vec<Arc<CachedObject>>, u64), ApiError> {
    let want_fresh = !matches!(rv_param, Some("0"));
    if want_fresh {
        let current = state.store.current_revision().await?;
        if !state.cache.wait_for(current, Duration::from_secs(1)).await {
            // The cache is behind (or the store revision moved for keys it does not follow):
            // read the store directly.
            let (kvs, rev) = state.store.list(prefix).await?;
            let objs = kvs
                .iter()
                .filter_map(|kv| crate::cache::decode(&kv.key, &kv.value, kv.mod_revision))
                .collect();
            return Ok((objs, rev));
        }
    }
    Ok(state.cache.snapshot(prefix))
}

pub async fn list(
    state: &Arc<State>,
    target: &Target,
    query: &Query,
    format: Format,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let filters = Filters::parse(resource, query)?;
    let prefix = resource.collection_prefix(target.namespace.as_deref());
    let limit: usize = query
        .value("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map(|l| l as usize)
        .unwrap_or(0);
    let cont = query.value("continue").map(decode_continue).transpose()?;
    if query.get("resourceVersionMatch") == Some("Exact") {
        let want: u64 = query.value("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
        if want != state.cache.rev() {
            return Err(ApiError::gone(format!(
                "resourceVersion {want} is not available for an exact list; use NotOlderThan"
            )));
        }
    }
    let (objs, rev) = collection_snapshot(state, &prefix, query.get("resourceVersion")).await?;
    let list_rev = cont.as_ref().map(|c| c.rv).unwrap_or(rev);
    let mut matched: Vec<&Arc<CachedObject>> = objs
        .iter()
        .filter(|o| cont.as_ref().is_none_or(|c| o.key.as_str() > c.start.as_str()))
        .filter(|o| filters.matches(resource, &o.value))
        .collect();
    let mut next = None;
    let mut remaining = 0usize;
    if limit > 0 && matched.len() > limit {
        remaining = matched.len() - limit;
        matched.truncate(limit);
        next = matched.last().map(|o| encode_continue(list_rev, &o.key));
    }
    match format {
        Format::Json => {
            let mut meta = json!({"resourceVersion": list_rev.to_string()});
            if let Some(n) = &next {
                meta["continue"] = json!(n);
                meta["remainingItemCount"] = json!(remaining);
            }
            let head = json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(), "metadata": meta});
            let head = serde_json::to_vec(&head).map_err(ApiError::internal)?;
            // `{...,"metadata":{…}}` → `{...,"metadata":{…},"items":[` + items + `]}`.
            let mut out = Vec::with_capacity(
                head.len() + matched.iter().map(|o| o.json.len() + 1).sum::<usize>() + 16,
            );
            out.extend_from_slice(&head[..head.len() - 1]);
            out.extend_from_slice(b",\"items\":[");
            for (i, o) in matched.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&o.json);
            }
            out.extend_from_slice(b"]}");
            Ok(Reply { code: 200, body: ReplyBody::Raw(Bytes::from(out)), warnings: Vec::new() })
        }
        Format::Table(include) => {
            let values: Vec<&Value> = matched.iter().map(|o| &o.value).collect();
            let mut t = table::render(resource, &values, include, &list_rev.to_string(), true);
            if let Some(n) = next {
                t["metadata"]["continue"] = json!(n);
                t["metadata"]["remainingItemCount"] = json!(remaining);
            }
            Ok(Reply::ok(t))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// create

pub async fn create(
    state: &Arc<State>,
    target: &Target,
    mut body: Value,
    opts: &WriteOptions,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    if target.sub == Some(Sub::Binding) {
        return bind(state, target, body, opts).await;
    }
    if target.sub.is_some() || target.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    check_type_meta(resource, &body)?;
    let mut warnings = Vec::new();
    field_validation(resource, &body, opts, &mut warnings)?;
    // The namespace comes from the URL; a different one in the body is an error.
    if resource.namespaced {
        let url_ns = target.namespace.clone().unwrap_or_default();
        match object::namespace(&body) {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                object::meta_mut(&mut body).insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        object::meta_mut(&mut body).remove("namespace");
    }
    if object::name(&body).is_empty() {
        let generate_name = object::meta_str(&body, "generateName").unwrap_or("").to_string();
        if generate_name.is_empty() {
            return Err(ApiError::invalid(
                resource,
                "",
                &[FieldError::required(
                    FieldPath::new("metadata.name"),
                    "name or generateName is required",
                )],
            ));
        }
        let suffix: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(5)
            .collect();
        object::meta_mut(&mut body)
            .insert("name".into(), json!(format!("{generate_name}{suffix}")));
    }
    let mut obj = kinds::normalize(resource, body)?;
    stamp_new(&mut obj, resource);
    kinds::prepare_create(resource, &mut obj);
    kinds::apply_defaults(resource, &mut obj)?;
    let name = object::name(&obj).to_string();
    check_namespace(state, resource, target.namespace.as_deref()).await?;
    let now = object::now_rfc3339();
    obj = svcnet_api::record_update(None, &obj, &opts.manager(), "Update", &now);
    let key = resource.key(target.namespace.as_deref(), &name);
    let mut reply = write_new(state, resource, &key, obj, opts.dry_run).await?;
    reply.warnings = warnings;
    Ok(reply)
}

/// Writes a new object (with IPAM for Services); 409 AlreadyExists if the key exists.
async fn write_new(
    state: &Arc<State>,
    resource: &'static Resource,
    key: &str,
    obj: Value,
    dry_run: bool,
) -> Result<Reply, ApiError> {
    let name = object::name(&obj).to_string();
    // Services are validated after allocation (as kube-apiserver's `beginCreate` runs first),
    // so `clusterIPs` and node ports are filled in when validation sees them.
    let validate = |v: &Value| {
        let errors = kinds::validate(resource, v, None);
        if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(resource, &name, &errors)) }
    };
    let result = if is_service(resource) {
        let k = key.to_string();
        services::write_service(state, resource, &obj, Allocate::Create, dry_run, |v| {
            validate(v)?;
            Ok(vec![Op::Put {
                key: k.clone(),
                value: encode_stored(v)?,
                precondition: Precondition::Absent,
            }])
        })
        .await
    } else if let Err(e) = validate(&obj) {
        Err(e)
    } else if dry_run {
        Ok((obj, None))
    } else {
        let ops = vec![Op::Put {
            key: key.to_string(),
            value: encode_stored(&obj)?,
            precondition: Precondition::Absent,
        }];
        state.store.txn(ops).await.map(|r| (obj, Some(r))).map_err(ApiError::from)
    };
    match result {
        Ok((mut v, resp)) => {
            if let Some(resp) = resp {
                object::set_resource_version(&mut v, resp.revision);
            }
            ensure_type_meta(resource, &mut v);
            Ok(Reply::created(v))
        }
        Err(e) if e.is_precondition() => Err(ApiError::already_exists(resource, &name)),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// update (PUT) and the shared write path of update and patch

/// How the body of a write relates to the stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Main,
    Status,
}

/// Combines the stored object `old` with the requested object `req` into the new object, as
/// the real `PrepareForUpdate` functions do: identity metadata stays, status writes touch only
/// status, main writes keep status (for kinds with a status subresource).
fn merge_for_update(resource: &Resource, old: &Value, req: &Value, part: Part) -> Value {
    let mut new = match part {
        Part::Main => {
            let mut n = req.clone();
            if resource.has_status {
                match old.get("status") {
                    Some(s) => {
                        n["status"] = s.clone();
                    }
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        }
        Part::Status => {
            let mut n = old.clone();
            match req.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            // Status writes may also carry metadata changes the real server keeps (none here
            // beyond what the object already had).
            n
        }
    };
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let meta = object::meta_mut(&mut new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    if part == Part::Status {
        // A status write never changes labels, annotations, finalizers or owners.
        for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
            match old_meta.get(field) {
                Some(v) => {
                    meta.insert(field.into(), v.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
    }
    new
}

/// Compares two objects ignoring resourceVersion and managedFields timestamps.
fn same_object(a: &Value, b: &Value) -> bool {
    let norm = |v: &Value| {
        let mut v = v.clone();
        object::strip_nulls(&mut v);
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
            if m.get("labels").and_then(Value::as_object).is_some_and(|l| l.is_empty()) {
                m.remove("labels");
            }
            if m.get("annotations").and_then(Value::as_object).is_some_and(|l| l.is_empty()) {
                m.remove("annotations");
            }
        }
        v
    };
    norm(a) == norm(b)
}

/// The shared tail of update and patch: defaults, validation, generation, managedFields,
/// no-op detection, finalizer-driven deletion, IPAM, and the conditional write.
/// `Err(None)` means the store precondition failed (the caller retries or reports 409).
async fn finish_update(
    state: &Arc<State>,
    target: &Target,
    old: &Value,
    old_rev: u64,
    mut new: Value,
    opts: &WriteOptions,
    managed_fields_from_request: bool,
) -> Result<Option<Reply>, ApiError> {
    let resource = target.resource;
    let name = target.name.clone().unwrap_or_default();
    kinds::apply_defaults(resource, &mut new)?;
    ensure_type_meta(resource, &mut new);
    let validate = |v: &Value| {
        let errors = kinds::validate(resource, v, Some(old));
        if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(resource, &name, &errors)) }
    };
    if !is_service(resource) {
        validate(&new)?;
    }
    if kinds::has_generation(resource) && kinds::spec_changed(old, &new) {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        object::meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    if same_object(old, &new) && !managed_fields_from_request {
        return Ok(Some(Reply::ok(old.clone())));
    }
    if !managed_fields_from_request {
        let now = object::now_rfc3339();
        new = svcnet_api::record_update(Some(old), &new, &opts.manager(), "Update", &now);
    }
    // The last finalizer removed from an object being deleted: delete it now.
    if object::deletion_timestamp(&new).is_some()
        && object::finalizers(&new).is_empty()
        && resource.kind != "Pod"
    {
        if opts.dry_run {
            return Ok(Some(Reply::ok(new)));
        }
        return delete_now(state, target, &new, old_rev).await.map(Some);
    }
    let key = target.key();
    let result = if is_service(resource) {
        let k = key.clone();
        services::write_service(
            state,
            resource,
            &new,
            Allocate::Update { old },
            opts.dry_run,
            |v| {
                validate(v)?;
                Ok(vec![Op::Put {
                    key: k.clone(),
                    value: encode_stored(v)?,
                    precondition: Precondition::ModRevision(old_rev),
                }])
            },
        )
        .await
    } else if opts.dry_run {
        Ok((new, None))
    } else {
        let ops = vec![Op::Put {
            key: key.clone(),
            value: encode_stored(&new)?,
            precondition: Precondition::ModRevision(old_rev),
        }];
        match state.store.txn(ops).await {
            Ok(r) => Ok((new, Some(r))),
            Err(svcnet_store::Error::PreconditionFailed { .. }) => return Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    match result {
        Ok((mut v, resp)) => {
            if let Some(resp) = resp {
                object::set_resource_version(&mut v, resp.revision);
            }
            ensure_type_meta(resource, &mut v);
            Ok(Some(Reply::ok(v)))
        }
        Err(e) if e.is_precondition() => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn update(
    state: &Arc<State>,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let name = target.name.clone().unwrap_or_default();
    let part = match target.sub {
        None => Part::Main,
        Some(Sub::Status) => Part::Status,
        Some(Sub::Scale) => return update_scale(state, target, body, opts).await,
        Some(Sub::Finalize) => Part::Main,
        Some(_) => return Err(ApiError::method_not_allowed()),
    };
    check_type_meta(resource, &body)?;
    let mut warnings = Vec::new();
    field_validation(resource, &body, opts, &mut warnings)?;
    let body_name = object::name(&body).to_string();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(ns), Some(body_ns)) = (target.namespace.as_deref(), object::namespace(&body))
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let wanted_rv = object::resource_version(&body).map(str::to_string);
    let wanted_uid = object::uid(&body).map(str::to_string);
    let req = kinds::normalize(resource, body)?;
    for _ in 0..16 {
        let (old, old_rev) = read(state, target).await?;
        if let Some(rv) = &wanted_rv
            && rv.parse::<u64>().ok() != Some(old_rev)
        {
            return Err(ApiError::conflict(resource, &name));
        }
        check_uid(resource, &name, wanted_uid.as_deref(), &old)?;
        let mut new = merge_for_update(resource, &old, &req, part);
        if target.sub == Some(Sub::Finalize) {
            new = old.clone();
            new["spec"] = req.get("spec").cloned().unwrap_or(json!({}));
        }
        let mf = req
            .pointer("/metadata/managedFields")
            .is_some_and(|m| m != old.pointer("/metadata/managedFields").unwrap_or(&Value::Null));
        match finish_update(state, target, &old, old_rev, new, opts, mf).await? {
            Some(mut reply) => {
                reply.warnings = warnings;
                return Ok(reply);
            }
            None if wanted_rv.is_some() => return Err(ApiError::conflict(resource, &name)),
            None => continue,
        }
    }
    Err(ApiError::conflict(resource, &name))
}

// ---------------------------------------------------------------------------------------------
// patch

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct.split(';').next().unwrap_or("").trim();
        Some(match media {
            "application/json-patch+json" => PatchType::Json,
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
            _ => return None,
        })
    }
}

pub async fn patch(
    state: &Arc<State>,
    target: &Target,
    patch_type: PatchType,
    body: &[u8],
    query: &Query,
    opts: &WriteOptions,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let name = target.name.clone().unwrap_or_default();
    let part = match target.sub {
        None => Part::Main,
        Some(Sub::Status) => Part::Status,
        Some(Sub::Scale) => return patch_scale(state, target, patch_type, body, opts).await,
        Some(_) => return Err(ApiError::method_not_allowed()),
    };
    let force = query.get("force");
    if patch_type != PatchType::Apply && force.is_some() {
        return Err(ApiError::invalid_options(
            "PatchOptions",
            &[FieldError::forbidden(
                FieldPath::new("force"),
                "may not be specified for non-apply patch",
            )],
        ));
    }
    if patch_type == PatchType::Apply && opts.field_manager.is_none() {
        return Err(ApiError::invalid_options(
            "PatchOptions",
            &[FieldError::required(FieldPath::new("fieldManager"), "is required for apply patch")],
        ));
    }
    let force = matches!(force, Some("true" | "1"));
    let patch_doc = object::parse_body(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let meta = svcnet_api::patch_meta(resource.group, resource.kind);
    let mut warnings = Vec::new();
    for _ in 0..16 {
        let current = read(state, target).await;
        let (old, old_rev) = match current {
            Ok(x) => x,
            Err(e) if e.code == 404 && patch_type == PatchType::Apply && target.sub.is_none() => {
                return apply_create(state, target, &patch_doc, opts, force).await;
            }
            Err(e) => return Err(e),
        };
        let old_rv = old_rev.to_string();
        let now = object::now_rfc3339();
        let patched = match patch_type {
            PatchType::Merge => {
                let mut v = old.clone();
                if !patch_doc.is_object() {
                    return Err(ApiError::bad_request("merge patch must be a JSON object"));
                }
                svcnet_api::merge_patch(&mut v, &patch_doc);
                v
            }
            PatchType::Json => {
                let mut v = old.clone();
                svcnet_api::json_patch(&mut v, &patch_doc)
                    .map_err(|e| patch_error(resource, &name, e))?;
                v
            }
            PatchType::Strategic => svcnet_api::strategic_merge_patch(&old, &patch_doc, &meta)
                .map_err(|e| patch_error(resource, &name, e))?,
            PatchType::Apply => {
                check_type_meta(resource, &patch_doc)?;
                let unknown = kinds::unknown_fields(resource, &patch_doc);
                if !unknown.is_empty() && opts.validation != Validation::Ignore {
                    let ns = target.namespace.as_deref().unwrap_or("");
                    let gv = if resource.group.is_empty() {
                        format!("/{}", resource.version)
                    } else {
                        format!("{}/{}", resource.group, resource.version)
                    };
                    return Err(ApiError::bad_request(format!(
                        "failed to create typed patch object ({ns}/{name}; {gv}, Kind={}): .{}: field not declared in schema",
                        resource.kind, unknown[0]
                    )));
                }
                let manager = opts.field_manager.clone().unwrap_or_default();
                svcnet_api::server_side_apply(Some(&old), &patch_doc, &manager, force, &meta, &now)
                    .map_err(|e| apply_error(resource, &name, e))?
            }
        };
        // A resourceVersion in the patched result is a precondition (kubectl's CSA→SSA
        // migration patch replaces it explicitly).
        if let Some(rv) = object::resource_version(&patched)
            && rv != old_rv
        {
            return Err(ApiError::conflict(resource, &name));
        }
        if patch_type != PatchType::Apply {
            field_validation(resource, &patched, opts, &mut warnings).map_err(|e| {
                ApiError::new(422, "Invalid", e.message.clone()).tap_details(json!({"name": name, "kind": resource.kind, "causes": [{"reason": "FieldValueInvalid", "message": e.message, "field": "patch"}]}))
            })?;
        }
        let name_after = object::name(&patched).to_string();
        if name_after != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name_after}) does not match the name on the URL ({name})"
            )));
        }
        let normalized = kinds::normalize(resource, patched)?;
        let new = merge_for_update(resource, &old, &normalized, part);
        let mf_from_request = patch_type != PatchType::Apply
            && normalized.pointer("/metadata/managedFields")
                != old.pointer("/metadata/managedFields");
        match finish_update(
            state,
            target,
            &old,
            old_rev,
            new,
            opts,
            mf_from_request || patch_type == PatchType::Apply,
        )
        .await?
        {
            Some(mut reply) => {
                reply.warnings = warnings;
                return Ok(reply);
            }
            None => {
                warnings.clear();
                continue;
            }
        }
    }
    Err(ApiError::conflict(resource, &name))
}

impl ApiError {
    fn tap_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }
}

fn patch_error(resource: &Resource, name: &str, e: svcnet_api::PatchError) -> ApiError {
    match e {
        svcnet_api::PatchError::Invalid(m) => ApiError::bad_request(m),
        svcnet_api::PatchError::Apply(m) | svcnet_api::PatchError::Test(m) => ApiError::new(422, "Invalid", m)
            .tap_details(json!({"name": name, "kind": resource.kind, "causes": [{"reason": "FieldValueInvalid", "message": "", "field": "patch"}]})),
    }
}

fn apply_error(resource: &Resource, name: &str, e: svcnet_api::ApplyError) -> ApiError {
    match &e {
        svcnet_api::ApplyError::Conflict(conflicts) => {
            let causes: Vec<Value> = conflicts.iter().map(|c| json!({"reason": "FieldManagerConflict", "message": c.cause_message(), "field": c.field})).collect();
            let mut d = json!({"name": name, "kind": resource.plural, "causes": causes});
            if !resource.group.is_empty() {
                d["group"] = json!(resource.group);
            }
            ApiError::new(409, "Conflict", e.to_string()).tap_details(d)
        }
        svcnet_api::ApplyError::Invalid(m) => ApiError::bad_request(m.clone()),
    }
}

async fn apply_create(
    state: &Arc<State>,
    target: &Target,
    applied: &Value,
    opts: &WriteOptions,
    force: bool,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let name = target.name.clone().unwrap_or_default();
    check_type_meta(resource, applied)?;
    if object::uid(applied).is_some() {
        return Err(ApiError::conflict_msg(
            resource,
            &name,
            "uid mismatch: the provided object specified uid but no object exists",
        ));
    }
    let unknown = kinds::unknown_fields(resource, applied);
    if !unknown.is_empty() && opts.validation != Validation::Ignore {
        let ns = target.namespace.as_deref().unwrap_or("");
        let gv = if resource.group.is_empty() {
            format!("/{}", resource.version)
        } else {
            format!("{}/{}", resource.group, resource.version)
        };
        return Err(ApiError::bad_request(format!(
            "failed to create typed patch object ({ns}/{name}; {gv}, Kind={}): .{}: field not declared in schema",
            resource.kind, unknown[0]
        )));
    }
    let now = object::now_rfc3339();
    let meta = svcnet_api::patch_meta(resource.group, resource.kind);
    let manager = opts.field_manager.clone().unwrap_or_default();
    let mut obj = svcnet_api::server_side_apply(None, applied, &manager, force, &meta, &now)
        .map_err(|e| apply_error(resource, &name, e))?;
    if object::name(&obj).is_empty() {
        object::meta_mut(&mut obj).insert("name".into(), json!(name));
    }
    if object::name(&obj) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object::name(&obj)
        )));
    }
    if resource.namespaced {
        object::meta_mut(&mut obj)
            .insert("namespace".into(), json!(target.namespace.clone().unwrap_or_default()));
    }
    let mf = obj.pointer("/metadata/managedFields").cloned();
    let mut obj = kinds::normalize(resource, obj)?;
    stamp_new(&mut obj, resource);
    if let Some(mf) = mf {
        object::meta_mut(&mut obj).insert("managedFields".into(), mf);
    }
    kinds::prepare_create(resource, &mut obj);
    kinds::apply_defaults(resource, &mut obj)?;
    check_namespace(state, resource, target.namespace.as_deref()).await?;
    let key = target.key();
    write_new(state, resource, &key, obj, opts.dry_run).await
}

// ---------------------------------------------------------------------------------------------
// scale

fn scale_of(resource: &Resource, obj: &Value) -> Value {
    let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let status_replicas = obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0);
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            let mut pairs: Vec<String> =
                m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            pairs.sort();
            pairs.join(",")
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let _ = resource;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": status_replicas, "selector": selector},
    })
}

async fn set_replicas(
    state: &Arc<State>,
    target: &Target,
    replicas: i64,
    wanted_rv: Option<String>,
    opts: &WriteOptions,
) -> Result<Reply, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let main = Target { sub: None, ..target.clone() };
    for _ in 0..16 {
        let (old, old_rev) = read(state, &main).await?;
        if let Some(rv) = &wanted_rv
            && rv.parse::<u64>().ok() != Some(old_rev)
        {
            return Err(ApiError::conflict(target.resource, &name));
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        if let Some(reply) = finish_update(state, &main, &old, old_rev, new, opts, false).await? {
            let obj = match reply.body {
                ReplyBody::Json(v) => v,
                ReplyBody::Raw(_) => old,
            };
            return Ok(Reply::ok(scale_of(target.resource, &obj)));
        }
    }
    Err(ApiError::conflict(target.resource, &name))
}

async fn update_scale(
    state: &Arc<State>,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Reply, ApiError> {
    let replicas = body.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            target.resource,
            target.name.as_deref().unwrap_or(""),
            &[FieldError::invalid(
                FieldPath::new("spec.replicas"),
                replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    set_replicas(state, target, replicas, object::resource_version(&body).map(str::to_string), opts)
        .await
}

async fn patch_scale(
    state: &Arc<State>,
    target: &Target,
    patch_type: PatchType,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<Reply, ApiError> {
    let main = Target { sub: None, ..target.clone() };
    let (old, _) = read(state, &main).await?;
    let mut scale = scale_of(target.resource, &old);
    let doc = object::parse_body(body).map_err(ApiError::bad_request)?;
    match patch_type {
        PatchType::Json => svcnet_api::json_patch(&mut scale, &doc)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        _ => svcnet_api::merge_patch(&mut scale, &doc),
    }
    let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
    set_replicas(state, target, replicas, None, opts).await
}

// ---------------------------------------------------------------------------------------------
// binding

async fn bind(
    state: &Arc<State>,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Reply, ApiError> {
    let node = body.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_string();
    let name =
        target.name.clone().or_else(|| Some(object::name(&body).to_string())).unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::invalid(
            target.resource,
            &name,
            &[FieldError::required(FieldPath::new("target.name"), "")],
        ));
    }
    let pod = Target { sub: None, name: Some(name.clone()), ..target.clone() };
    for _ in 0..16 {
        let (old, old_rev) = read(state, &pod).await?;
        if object::deletion_timestamp(&old).is_some() {
            return Err(ApiError::conflict_msg(
                target.resource,
                &name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) =
            old.pointer("/spec/nodeName").and_then(Value::as_str).filter(|s| !s.is_empty())
        {
            return Err(ApiError::conflict_msg(
                target.resource,
                &name,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        if finish_update(state, &pod, &old, old_rev, new, opts, false).await?.is_some() {
            return Ok(Reply {
                code: 201,
                body: ReplyBody::Json(
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ),
                warnings: Vec::new(),
            });
        }
    }
    Err(ApiError::conflict(target.resource, &name))
}

// ---------------------------------------------------------------------------------------------
// delete

/// DeleteOptions from the body and the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(body: &[u8], q: &Query) -> Result<DeleteOptions, ApiError> {
        let mut o = DeleteOptions::default();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v = object::parse_body(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            o.grace_period = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            o.uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
            o.resource_version = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.dry_run = v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
        }
        if let Some(g) = q.value("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
            o.grace_period = Some(g);
        }
        if q.get("dryRun") == Some("All") {
            o.dry_run = true;
        }
        Ok(o)
    }
}

async fn delete_now(
    state: &Arc<State>,
    target: &Target,
    obj: &Value,
    rev: u64,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let key = target.key();
    let result = if is_service(resource) {
        let k = key.clone();
        services::write_service(state, resource, obj, Allocate::Delete, false, |_| {
            Ok(vec![Op::Delete { key: k.clone(), precondition: Precondition::ModRevision(rev) }])
        })
        .await
        .map(|(_, r)| r)
    } else {
        state
            .store
            .txn(vec![Op::Delete { key, precondition: Precondition::ModRevision(rev) }])
            .await
            .map(Some)
            .map_err(ApiError::from)
    };
    match result {
        Ok(resp) => {
            let mut v = obj.clone();
            if let Some(r) = resp {
                object::set_resource_version(&mut v, r.revision);
            }
            Ok(Reply::ok(v))
        }
        Err(e) => Err(e),
    }
}

fn node_has_agent(node: &Value) -> bool {
    node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        > 0
}

pub async fn delete(
    state: &Arc<State>,
    target: &Target,
    opts: &DeleteOptions,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let name = target.name.clone().unwrap_or_default();
    if target.sub.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    for _ in 0..16 {
        let (old, old_rev) = read(state, target).await?;
        check_uid(resource, &name, opts.uid.as_deref(), &old)?;
        if let Some(rv) = &opts.resource_version
            && rv.parse::<u64>().ok() != Some(old_rev)
        {
            return Err(ApiError::conflict_msg(
                resource,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rev}"
                ),
            ));
        }
        if opts.dry_run {
            return Ok(Reply::ok(old));
        }
        // Namespaces: Terminating first, the deleter removes the contents and then the object.
        if resource.kind == "Namespace" && resource.group.is_empty() {
            if matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
                return Err(ApiError::forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            if object::deletion_timestamp(&old).is_some() {
                let _ = state.namespace_deleter.send(name.clone());
                return Ok(Reply::ok(old));
            }
            let mut new = old.clone();
            object::meta_mut(&mut new)
                .insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
            object::meta_mut(&mut new).insert("deletionGracePeriodSeconds".into(), json!(0));
            new["status"] = json!({"phase": "Terminating"});
            match write_marked(state, target, new, old_rev).await? {
                Some(reply) => {
                    let _ = state.namespace_deleter.send(name.clone());
                    return Ok(reply);
                }
                None => continue,
            }
        }
        // Pods on a node with an agent terminate gracefully: the agent stops the containers and
        // deletes with gracePeriodSeconds=0.
        if resource.kind == "Pod" && resource.group.is_empty() {
            let grace = opts
                .grace_period
                .unwrap_or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                })
                .max(0);
            let node =
                old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
            let already = object::deletion_timestamp(&old).is_some();
            let has_agent = if grace > 0 && !node.is_empty() {
                let nodes = registry::find("", "v1", "nodes")
                    .ok_or_else(|| ApiError::internal("nodes not registered"))?;
                match state.store.get(&nodes.key(None, &node)).await? {
                    Some(kv) => serde_json::from_slice::<Value>(&kv.value)
                        .map(|n| node_has_agent(&n))
                        .unwrap_or(false),
                    None => false,
                }
            } else {
                false
            };
            let finished = matches!(
                old.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            if grace > 0 && has_agent && !finished {
                if already {
                    return Ok(Reply::ok(old));
                }
                let mut new = old.clone();
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or(jiff::Timestamp::now());
                object::meta_mut(&mut new).insert(
                    "deletionTimestamp".into(),
                    json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                object::meta_mut(&mut new)
                    .insert("deletionGracePeriodSeconds".into(), json!(grace));
                match write_marked(state, target, new, old_rev).await? {
                    Some(reply) => return Ok(reply),
                    None => continue,
                }
            }
            // Otherwise a Pod is deleted like any object (finalizers, then at once).
        }
        if !object::finalizers(&old).is_empty() {
            if object::deletion_timestamp(&old).is_some() {
                return Ok(Reply::ok(old));
            }
            let mut new = old.clone();
            object::meta_mut(&mut new)
                .insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
            object::meta_mut(&mut new).insert("deletionGracePeriodSeconds".into(), json!(0));
            match write_marked(state, target, new, old_rev).await? {
                Some(reply) => return Ok(reply),
                None => continue,
            }
        }
        match delete_now(state, target, &old, old_rev).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_precondition() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(resource, &name))
}

/// Writes an object marked for deletion; None if it changed meanwhile.
async fn write_marked(
    state: &Arc<State>,
    target: &Target,
    new: Value,
    old_rev: u64,
) -> Result<Option<Reply>, ApiError> {
    let ops = vec![Op::Put {
        key: target.key(),
        value: encode_stored(&new)?,
        precondition: Precondition::ModRevision(old_rev),
    }];
    match state.store.txn(ops).await {
        Ok(r) => {
            let mut v = new;
            object::set_resource_version(&mut v, r.revision);
            ensure_type_meta(target.resource, &mut v);
            Ok(Some(Reply::ok(v)))
        }
        Err(svcnet_store::Error::PreconditionFailed { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_collection(
    state: &Arc<State>,
    target: &Target,
    query: &Query,
    opts: &DeleteOptions,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let filters = Filters::parse(resource, query)?;
    let prefix = resource.collection_prefix(target.namespace.as_deref());
    let (objs, _) = collection_snapshot(state, &prefix, None).await?;
    let mut items = Vec::new();
    for o in objs.iter().filter(|o| filters.matches(resource, &o.value)) {
        let t = Target {
            resource,
            namespace: object::namespace(&o.value).map(str::to_string),
            name: Some(object::name(&o.value).to_string()),
            sub: None,
        };
        match delete(state, &t, opts).await {
            Ok(Reply { body: ReplyBody::Json(v), .. }) => items.push(v),
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Reply::ok(
        json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(), "metadata": {}, "items": items}),
    ))
}

/// Creates or replaces an object owned by the server itself (the `kubernetes` Endpoints).
pub async fn upsert_system_object(
    state: &Arc<State>,
    resource: &'static Resource,
    mut obj: Value,
) -> Result<(), ApiError> {
    let name = object::name(&obj).to_string();
    let ns = object::namespace(&obj).map(str::to_string);
    let key = resource.key(ns.as_deref(), &name);
    match state.store.get(&key).await? {
        None => {
            stamp_new(&mut obj, resource);
            let obj = kinds::normalize(resource, obj)?;
            match state
                .store
                .txn(vec![Op::Put {
                    key,
                    value: encode_stored(&obj)?,
                    precondition: Precondition::Absent,
                }])
                .await
            {
                Ok(_) | Err(svcnet_store::Error::PreconditionFailed { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Some(kv) => {
            let old = decode_kv(resource, &kv)?;
            let mut new = obj;
            let meta = object::meta_mut(&mut new);
            for f in ["uid", "creationTimestamp", "generation"] {
                if let Some(v) = old.get("metadata").and_then(|m| m.get(f)) {
                    meta.insert(f.into(), v.clone());
                }
            }
            ensure_type_meta(resource, &mut new);
            let new = kinds::normalize(resource, new)?;
            if same_object(&old, &new) {
                return Ok(());
            }
            match state
                .store
                .txn(vec![Op::Put {
                    key,
                    value: encode_stored(&new)?,
                    precondition: Precondition::ModRevision(kv.mod_revision),
                }])
                .await
            {
                Ok(_) | Err(svcnet_store::Error::PreconditionFailed { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The `preconditions.uid` of an update or delete: a 409 when the stored object is another one.
fn check_uid(
    resource: &Resource,
    name: &str,
    uid: Option<&str>,
    old: &Value,
) -> Result<(), ApiError> {
    match uid {
        Some(uid) if Some(uid) != object::uid(old) => Err(ApiError::conflict_msg(
            resource,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                object::uid(old).unwrap_or("")
            ),
        )),
        _ => Ok(()),
    }
}
