//! Discovery documents: aggregated (`apidiscovery.k8s.io/v2` and `v2beta1`) and legacy
//! (`APIVersions`, `APIGroupList`, `APIResourceList`), all derived from `registry::RESOURCES`.
//!
//! kubectl decodes the aggregated form only when the response Content-Type names it
//! (kubectl-api.md §2.2), so `handler` sets the Content-Type this module returns.

use serde_json::{Value, json};

use crate::registry::{self, RESOURCES, Resource};

/// Which aggregated discovery version the Accept header asks for, if any.
pub fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    let accept = accept?;
    for part in accept.split(',') {
        let compact: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        if !compact.contains("as=APIGroupDiscoveryList")
            || !compact.contains("g=apidiscovery.k8s.io")
        {
            continue;
        }
        if compact.contains("v=v2beta1") {
            return Some("v2beta1");
        }
        if compact.contains("v=v2") {
            return Some("v2");
        }
    }
    None
}

pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

fn resource_discovery(r: &Resource) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .filter(|s| **s != registry::Sub::Finalize)
        .map(|s| {
            let ((g, ver, k), verbs) = s.describe(r);
            json!({"subresource": s.name(), "responseKind": {"group": g, "version": ver, "kind": k}, "verbs": verbs})
        })
        .collect();
    if !subs.is_empty() {
        v["subresources"] = json!(subs);
    }
    v
}

/// `/api` (core = true) or `/apis` in the aggregated form.
pub fn aggregated(core: bool, version: &str) -> Value {
    let mut items = Vec::new();
    for (group, ver) in registry::group_versions() {
        if group.is_empty() != core {
            continue;
        }
        let resources: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == ver)
            .map(resource_discovery)
            .collect();
        items.push(json!({
            "metadata": {"name": group, "creationTimestamp": null},
            "versions": [{"version": ver, "freshness": "Current", "resources": resources}],
        }));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

/// Legacy `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let first = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": first}))
}

/// Legacy `/apis`.
pub fn api_group_list() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in registry::group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.into_iter().filter_map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `/apis/<group>`.
pub fn group(group: &str) -> Option<Value> {
    let mut g = api_group(group)?;
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// Legacy `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        for s in r.subresources {
            let ((g, ver, k), verbs) = s.describe(r);
            let mut sv = json!({"name": format!("{}/{}", r.plural, s.name()), "singularName": "", "namespaced": r.namespaced, "kind": k, "verbs": verbs});
            if g != group || ver != version {
                sv["group"] = json!(g);
                sv["version"] = json!(ver);
            }
            resources.push(sv);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept() {
        let a = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(Some(a)), Some("v2"));
        let b = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(Some(b)), Some("v2beta1"));
        assert_eq!(aggregated_version(Some("application/json")), None);
    }

    #[test]
    fn documents_have_short_names_and_categories() {
        let core = aggregated(true, "v2");
        let text = core.to_string();
        assert!(text.contains("\"svc\""));
        assert!(text.contains("\"all\""));
        let apis = aggregated(false, "v2");
        assert!(apis.to_string().contains("endpointslices"));
        assert!(
            resource_list("apps", "v1").expect("apps").to_string().contains("deployments/scale")
        );
        assert!(api_group_list().to_string().contains("discovery.k8s.io"));
    }
}
