//! The one table of served resources.
//!
//! Routing, discovery (aggregated and legacy), OpenAPI and the watch cache all read this table,
//! so a kind is added in exactly one place. It leaves out per-kind behaviour (defaulting,
//! validation), which lives in `kinds.rs`.

/// A subresource a kind serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Status,
    Scale,
    Binding,
    Log,
    Finalize,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Binding => "binding",
            Sub::Log => "log",
            Sub::Finalize => "finalize",
        }
    }

    pub fn parse(s: &str) -> Option<Sub> {
        Some(match s {
            "status" => Sub::Status,
            "scale" => Sub::Scale,
            "binding" => Sub::Binding,
            "log" => Sub::Log,
            "finalize" => Sub::Finalize,
            _ => return None,
        })
    }

    /// (group, version, kind) of the subresource's request/response, and its verbs.
    pub fn describe(
        self,
        parent: &Resource,
    ) -> ((&'static str, &'static str, &'static str), &'static [&'static str]) {
        match self {
            Sub::Status => {
                ((parent.group, parent.version, parent.kind), &["get", "patch", "update"])
            }
            Sub::Scale => (("autoscaling", "v1", "Scale"), &["get", "patch", "update"]),
            Sub::Binding => (("", "v1", "Binding"), &["create"]),
            Sub::Log => (("", "v1", "Pod"), &["get"]),
            Sub::Finalize => ((parent.group, parent.version, parent.kind), &["update"]),
        }
    }
}

/// One served resource (`services` in core/v1, …).
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Sub],
    /// Whether writes to the main resource keep `status` (true when there is a status subresource).
    pub has_status: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Store key prefix of this resource: `/registry/<group or core>/<plural>/`.
    pub fn prefix(&self) -> String {
        format!("/registry/{}/{}/", self.store_group(), self.plural)
    }

    pub fn store_group(&self) -> &'static str {
        if self.group.is_empty() { "core" } else { self.group }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/{}", self.prefix(), ns, name),
            _ => format!("{}{}", self.prefix(), name),
        }
    }

    /// The key prefix of a collection: all namespaces, or one.
    pub fn collection_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/", self.prefix(), ns),
            _ => self.prefix(),
        }
    }

    pub fn has_sub(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }

    /// The verbs of the main resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }

    /// The `group/version` path prefix: `/api/v1` or `/apis/<group>/<version>`.
    pub fn path_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// `services "web"` style qualified resource name used in messages (`services.apps` for groups).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const ALL: &[&str] = &["all"];

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &[Sub::Status, Sub::Finalize],
        has_status: true,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &[Sub::Status],
        has_status: true,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        has_status: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: &[Sub::Status, Sub::Binding, Sub::Log],
        has_status: true,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &[Sub::Status],
        has_status: true,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        has_status: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        has_status: false,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_status: false,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_status: false,
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        has_status: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &[Sub::Status, Sub::Scale],
        has_status: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &[Sub::Status, Sub::Scale],
        has_status: true,
    },
];

/// The served group-versions in discovery order (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resource named `plural` in `group/version`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource that owns a store key, with the key's namespace and name.
pub fn from_key(key: &str) -> Option<(&'static Resource, Option<&str>, &str)> {
    let rest = key.strip_prefix("/registry/")?;
    let (group, rest) = rest.split_once('/')?;
    let (plural, rest) = rest.split_once('/')?;
    let resource = RESOURCES.iter().find(|r| r.store_group() == group && r.plural == plural)?;
    if resource.namespaced {
        let (ns, name) = rest.split_once('/')?;
        Some((resource, Some(ns), name))
    } else if rest.contains('/') {
        None
    } else {
        Some((resource, None, rest))
    }
}

pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let svc = find("", "v1", "services").expect("services");
        let key = svc.key(Some("default"), "web");
        assert_eq!(key, "/registry/core/services/default/web");
        let (r, ns, name) = from_key(&key).expect("parse");
        assert_eq!((r.kind, ns, name), ("Service", Some("default"), "web"));
        let ns = find("", "v1", "namespaces").expect("namespaces");
        assert_eq!(ns.key(None, "x"), "/registry/core/namespaces/x");
        let ev = find("events.k8s.io", "v1", "events").expect("events");
        let (r, _, _) = from_key(&ev.key(Some("a"), "b")).expect("parse");
        assert_eq!(r.group, "events.k8s.io");
        assert!(from_key("/registry/svcnet.io/allocations/clusterips/10.0.0.1").is_none());
    }
}
