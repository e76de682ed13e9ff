//! Object validation as kube-apiserver does it (`pkg/apis/core/validation/validation.go`,
//! apimachinery `ValidateObjectMeta`): Services in full, the other kinds structurally. Every
//! function collects all errors, never only the first, with Kubernetes' paths and messages.
//!
//! Leaves out what the allocator checks after assigning addresses (ClusterIP ranges and
//! conflicts, NodePort ranges and conflicts, `healthCheckNodePort` presence) and validation of
//! pod fields svcnet does not run (volumes sources, security contexts, affinity).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::field::{FieldError, FieldPath};
use crate::names;

/// The annotation byte limit (`TotalAnnotationSizeLimitB`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// `MaxClientIPServiceAffinitySeconds`.
pub const MAX_CLIENT_IP_SERVICE_AFFINITY_SECONDS: i32 = 86400;
const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

fn q(s: &str) -> String {
    names::quote(s)
}

/// Go's `%#v` of a `[]string`, as field errors show list values.
fn go_string_slice(items: &[String]) -> String {
    format!("[]string{{{}}}", items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

/// Go's `%#v` of a `map[string]string`.
fn go_string_map(map: &BTreeMap<String, String>) -> String {
    format!(
        "map[string]string{{{}}}",
        map.iter().map(|(k, v)| format!("{}:{}", q(k), q(v))).collect::<Vec<_>>().join(", ")
    )
}

fn too_long(field: FieldPath, detail: String) -> FieldError {
    FieldError::too_long(field, detail)
}

/// Which name rule a kind uses (`ValidateServiceName`, `ValidateNamespaceName`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
}

impl NameRule {
    fn check(self, name: &str, prefix: bool) -> Vec<String> {
        // `maskTrailingDash`: a generateName prefix may end in '-'.
        let owned;
        let name = if prefix && name.len() > 1 && name.ends_with('-') {
            owned = format!("{}a", &name[..name.len() - 1]);
            owned.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => names::is_dns1123_subdomain(name),
            NameRule::Dns1123Label => names::is_dns1123_label(name),
            NameRule::Dns1035Label => names::is_dns1035_label(name),
        }
    }
}

/// `ValidateLabels`.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        for msg in names::is_qualified_name(k) {
            errs.push(FieldError::invalid(path.clone(), q(k), msg));
        }
        for msg in names::is_valid_label_value(v) {
            errs.push(FieldError::invalid(path.clone(), q(v), msg));
        }
    }
    errs
}

/// `ValidateAnnotations`: qualified (lower-cased) keys and a 256 KiB total.
pub fn validate_annotations(
    annotations: &BTreeMap<String, String>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0;
    for (k, v) in annotations {
        for msg in names::is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path.clone(), q(k), msg));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(
            path.clone(),
            format!("may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
        ));
    }
    errs
}

/// `ValidateObjectMeta`: name or generateName, namespace presence, labels, annotations,
/// finalizers and owner references.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    if let Some(generate_name) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        for msg in rule.check(generate_name, true) {
            errs.push(FieldError::invalid(path.child("generateName"), q(generate_name), msg));
        }
    }
    match meta.name.as_deref() {
        None | Some("") => {
            errs.push(FieldError::required(path.child("name"), "name or generateName is required"))
        }
        Some(name) => {
            for msg in rule.check(name, false) {
                errs.push(FieldError::invalid(path.child("name"), q(name), msg));
            }
        }
    }
    let namespace = meta.namespace.as_deref().unwrap_or("");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(path.child("namespace"), ""));
        } else {
            for msg in names::is_dns1123_label(namespace) {
                errs.push(FieldError::invalid(path.child("namespace"), q(namespace), msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(path.child("namespace"), "not allowed on this type"));
    }
    if let Some(generation) = meta.generation
        && generation < 0
    {
        errs.push(FieldError::invalid(
            path.child("generation"),
            generation,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(labels, &path.child("labels")));
    }
    if let Some(annotations) = &meta.annotations {
        errs.extend(validate_annotations(annotations, &path.child("annotations")));
    }
    let mut seen = BTreeSet::new();
    for (i, finalizer) in meta.finalizers.iter().flatten().enumerate() {
        let fpath = path.child("finalizers").index(i);
        for msg in names::is_qualified_name(finalizer) {
            errs.push(FieldError::invalid(fpath.clone(), q(finalizer), msg));
        }
        if !seen.insert(finalizer.as_str()) {
            errs.push(FieldError::duplicate(fpath, q(finalizer)));
        }
    }
    for (i, owner) in meta.owner_references.iter().flatten().enumerate() {
        let opath = path.child("ownerReferences").index(i);
        if owner.api_version.is_empty() {
            errs.push(FieldError::invalid(
                opath.child("apiVersion"),
                q(&owner.api_version),
                "version must not be empty",
            ));
        }
        if owner.kind.is_empty() {
            errs.push(FieldError::invalid(
                opath.child("kind"),
                q(&owner.kind),
                "kind must not be empty",
            ));
        }
        if owner.name.is_empty() {
            errs.push(FieldError::invalid(
                opath.child("name"),
                q(&owner.name),
                "name must not be empty",
            ));
        }
        if owner.uid.is_empty() {
            errs.push(FieldError::invalid(
                opath.child("uid"),
                q(&owner.uid),
                "uid must not be empty",
            ));
        }
    }
    errs
}

/// `ValidateImmutableField`.
fn immutable<T: PartialEq>(
    new: &T,
    old: &T,
    path: FieldPath,
    shown: impl std::fmt::Display,
) -> Option<FieldError> {
    (new != old).then(|| FieldError::invalid(path, shown, "field is immutable"))
}

/// `ValidateObjectMetaUpdate`: name, namespace, uid and creationTimestamp are immutable.
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let s = |v: &Option<String>| q(v.as_deref().unwrap_or(""));
    let mut errs: Vec<FieldError> = [
        immutable(&new.name, &old.name, path.child("name"), s(&new.name)),
        immutable(&new.namespace, &old.namespace, path.child("namespace"), s(&new.namespace)),
        immutable(&new.uid, &old.uid, path.child("uid"), s(&new.uid)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if old.creation_timestamp.is_some() && new.creation_timestamp != old.creation_timestamp {
        let shown = new
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "null".into());
        errs.push(FieldError::invalid(
            path.child("creationTimestamp"),
            shown,
            "field is immutable",
        ));
    }
    if let Some(generation) = new.generation
        && generation < 0
    {
        errs.push(FieldError::invalid(
            path.child("generation"),
            generation,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

fn is_headless(service: &Service) -> bool {
    let spec = service.spec.as_ref();
    let ips = spec.and_then(|s| s.cluster_ips.as_deref()).unwrap_or(&[]);
    (ips.len() == 1 && ips[0] == "None")
        || spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn port_num_errors(port: i64, path: FieldPath) -> Option<FieldError> {
    (!(1..=65535).contains(&port)).then(|| FieldError::invalid(path, port, PORT_RANGE_MSG))
}

/// `ValidatePortNumOrName`.
fn validate_port_num_or_name(port: &IntOrString, path: &FieldPath) -> Vec<FieldError> {
    match port {
        IntOrString::Int(n) => port_num_errors(i64::from(*n), path.clone()).into_iter().collect(),
        IntOrString::String(name) => names::is_valid_port_name(name)
            .into_iter()
            .map(|msg| FieldError::invalid(path.clone(), q(name), msg))
            .collect(),
    }
}

/// `%#v` of the `core.ServicePort` key used for duplicate ports.
fn service_port_key(protocol: &str, port: i32) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        q(protocol)
    )
}

fn validate_service_port(
    sp: &ServicePort,
    require_name: bool,
    names_seen: &mut BTreeSet<String>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = sp.name.as_deref().unwrap_or("");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else if !name.is_empty() {
        for msg in names::is_dns1123_label(name) {
            errs.push(FieldError::invalid(path.child("name"), q(name), msg));
        }
        if !names_seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(path.child("name"), q(name)));
        }
    }
    errs.extend(port_num_errors(i64::from(sp.port), path.child("port")));
    match sp.protocol.as_deref().unwrap_or("") {
        "" => errs.push(FieldError::required(path.child("protocol"), "")),
        "TCP" | "UDP" | "SCTP" => {}
        other => errs.push(FieldError::not_supported(
            path.child("protocol"),
            q(other),
            &["SCTP", "TCP", "UDP"],
        )),
    }
    if let Some(target) = &sp.target_port {
        errs.extend(validate_port_num_or_name(target, &path.child("targetPort")));
    }
    if let Some(app_protocol) = &sp.app_protocol {
        for msg in names::is_qualified_name(app_protocol) {
            errs.push(FieldError::invalid(path.child("appProtocol"), q(app_protocol), msg));
        }
    }
    if let Some(node_port) = sp.node_port
        && node_port != 0
    {
        errs.extend(port_num_errors(i64::from(node_port), path.child("nodePort")));
    }
    errs
}

fn is_valid_ip(ip: &str) -> bool {
    ip.parse::<IpAddr>().is_ok()
}

fn ip_errors(path: FieldPath, ip: &str) -> Option<FieldError> {
    (!is_valid_ip(ip)).then(|| {
        FieldError::invalid(
            path,
            q(ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )
    })
}

/// `ValidateNonSpecialIP`, used for externalIPs and endpoint addresses.
fn non_special_ip(path: FieldPath, ip: &str) -> Option<FieldError> {
    let parsed: IpAddr = ip.parse().ok()?;
    let msg = if parsed.is_unspecified() {
        "may not be unspecified (0.0.0.0)"
    } else if parsed.is_loopback() {
        "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    } else if matches!(parsed, IpAddr::V4(v4) if v4.is_link_local())
        || matches!(parsed, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    {
        "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    } else if parsed.is_multicast() {
        "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    } else {
        return None;
    };
    Some(FieldError::invalid(path, q(ip), msg))
}

fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// `ValidateServiceClusterIPsRelatedFields` plus the allocator's family/policy consistency.
fn validate_cluster_ips_related(service: &Service) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(spec) = service.spec.as_ref() else { return errs };
    if spec.type_.as_deref() == Some("ExternalName") {
        return errs;
    }
    let spec_path = FieldPath::new("spec");
    let ips_path = spec_path.child("clusterIPs");
    let families_path = spec_path.child("ipFamilies");
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let cluster_ips: &[String] = spec.cluster_ips.as_deref().unwrap_or(&[]);
    let families: &[String] = spec.ip_families.as_deref().unwrap_or(&[]);
    if !cluster_ip.is_empty() {
        if cluster_ips.is_empty() {
            errs.push(FieldError::required(ips_path.clone(), ""));
        } else if cluster_ips[0] != cluster_ip {
            errs.push(FieldError::invalid(
                ips_path.clone(),
                go_string_slice(cluster_ips),
                "first value must match `clusterIP`",
            ));
        }
    } else if !cluster_ips.is_empty() {
        errs.push(FieldError::invalid(
            ips_path.clone(),
            go_string_slice(cluster_ips),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, family) in families.iter().enumerate() {
        if family != "IPv4" && family != "IPv6" {
            errs.push(FieldError::not_supported(
                families_path.index(i),
                q(family),
                &["IPv4", "IPv6"],
            ));
        }
        if !seen.insert(family.as_str()) {
            errs.push(FieldError::duplicate(families_path.index(i), q(family)));
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref() {
        if !matches!(policy, "SingleStack" | "PreferDualStack" | "RequireDualStack") {
            errs.push(FieldError::not_supported(
                spec_path.child("ipFamilyPolicy"),
                q(policy),
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
        if policy == "SingleStack" && families.len() > 1 {
            errs.push(FieldError::invalid(spec_path.child("ipFamilyPolicy"), q(policy), "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"));
        }
        if policy == "SingleStack" && cluster_ips.len() > 1 {
            errs.push(FieldError::invalid(spec_path.child("ipFamilyPolicy"), q(policy), "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"));
        }
    }
    if families.len() > 2 {
        errs.push(FieldError::invalid(
            families_path.clone(),
            go_string_slice(families),
            "may only hold up to 2 values",
        ));
    }
    let mut has_invalid = false;
    for (i, ip) in cluster_ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if cluster_ips.len() > 1 {
                has_invalid = true;
                errs.push(FieldError::invalid(
                    ips_path.clone(),
                    go_string_slice(cluster_ips),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if let Some(err) = ip_errors(ips_path.index(i), ip) {
            has_invalid = true;
            errs.push(err);
        }
    }
    if cluster_ips.len() > 2 {
        errs.push(FieldError::invalid(
            ips_path.clone(),
            go_string_slice(cluster_ips),
            "may only hold up to 2 values",
        ));
    }
    if has_invalid {
        return errs;
    }
    if cluster_ips.len() > 1 {
        let n_v6 = cluster_ips.iter().filter(|ip| is_ipv6(ip)).count();
        if n_v6 != 1 || cluster_ips.len() != 2 {
            errs.push(FieldError::invalid(
                ips_path.clone(),
                go_string_slice(cluster_ips),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(service) && !cluster_ips.is_empty() && !families.is_empty() {
        for (i, ip) in cluster_ips.iter().enumerate().take(families.len()) {
            if families[i] == "IPv4" && is_ipv6(ip) {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    q(ip),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if families[i] == "IPv6" && !is_ipv6(ip) {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    q(ip),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

fn is_lb(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// `validateLoadBalancerClassField`.
fn validate_load_balancer_class(old: Option<&Service>, service: &Service) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = FieldPath::new("spec").child("loadBalancerClass");
    let class = service.spec.as_ref().and_then(|s| s.load_balancer_class.as_ref());
    if let Some(old) = old {
        let old_class = old.spec.as_ref().and_then(|s| s.load_balancer_class.as_ref());
        if is_lb(old) && is_lb(service) && old_class != class {
            let shown = class.map(|c| q(c)).unwrap_or_else(|| "null".to_string());
            errs.push(FieldError::invalid(path.clone(), shown, "may not change once set"));
        }
    }
    if let Some(class) = class {
        if is_lb(service) {
            for msg in names::is_qualified_name(class) {
                errs.push(FieldError::invalid(path.clone(), q(class), msg));
            }
        } else {
            errs.push(FieldError::forbidden(
                path,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }
    errs
}

/// `ValidateService`: every rule of kube-apiserver for the fields svcnet serves.
pub fn validate_service_create(service: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&service.metadata, true, NameRule::Dns1035Label);
    let default_spec = Default::default();
    let spec = service.spec.as_ref().unwrap_or(&default_spec);
    let spec_path = FieldPath::new("spec");
    let ports_path = spec_path.child("ports");
    let ports: &[ServicePort] = spec.ports.as_deref().unwrap_or(&[]);
    let type_ = spec.type_.as_deref().unwrap_or("");
    let headless = is_headless(service);
    let cluster_ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    let annotations = service.metadata.annotations.clone().unwrap_or_default();

    let hints = annotations.get("service.kubernetes.io/topology-aware-hints");
    let mode = annotations.get("service.kubernetes.io/topology-mode");
    if let (Some(hints), Some(mode)) = (hints, mode)
        && hints != mode
    {
        errs.push(FieldError::invalid(
                FieldPath::new("metadata").child("annotations").key("service.kubernetes.io/topology-mode"),
                q(mode),
                "must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            ));
    }

    if ports.is_empty() && !headless && type_ != "ExternalName" {
        errs.push(FieldError::required(ports_path.clone(), ""));
    }
    let first_ip = || q(cluster_ips.first().map(String::as_str).unwrap_or("None"));
    match type_ {
        "LoadBalancer" => {
            if headless {
                errs.push(FieldError::invalid(
                    spec_path.child("clusterIPs").index(0),
                    first_ip(),
                    "may not be set to 'None' for LoadBalancer services",
                ));
            }
            for (i, port) in ports.iter().enumerate() {
                if port.port == 10250 {
                    errs.push(FieldError::invalid(
                        ports_path.index(i),
                        port.port,
                        "may not expose port 10250 externally since it is used by kubelet",
                    ));
                }
            }
        }
        "NodePort" if headless => {
            errs.push(FieldError::invalid(
                spec_path.child("clusterIPs").index(0),
                first_ip(),
                "may not be set to 'None' for NodePort services",
            ));
        }
        "ExternalName" => {
            if !cluster_ips.is_empty() || !spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
                errs.push(FieldError::forbidden(
                    spec_path.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
                errs.push(FieldError::forbidden(
                    spec_path.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden(
                    spec_path.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let external_name = spec.external_name.as_deref().unwrap_or("");
            let cname = external_name.strip_suffix('.').unwrap_or(external_name);
            if cname.is_empty() {
                errs.push(FieldError::required(spec_path.child("externalName"), ""));
            } else {
                for msg in names::is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(spec_path.child("externalName"), q(cname), msg));
                }
            }
        }
        _ => {}
    }

    let mut names_seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            port,
            ports.len() > 1,
            &mut names_seen,
            &ports_path.index(i),
        ));
    }

    if let Some(selector) = &spec.selector {
        errs.extend(validate_labels(selector, &spec_path.child("selector")));
    }

    match spec.session_affinity.as_deref().unwrap_or("") {
        "" => errs.push(FieldError::required(spec_path.child("sessionAffinity"), "")),
        "ClientIP" => {
            let config_path = spec_path.child("sessionAffinityConfig");
            let detail = "when session affinity type is ClientIP";
            match &spec.session_affinity_config {
                None => errs.push(FieldError::required(config_path, detail)),
                Some(config) => match &config.client_ip {
                    None => errs.push(FieldError::required(config_path.child("clientIP"), detail)),
                    Some(client_ip) => match client_ip.timeout_seconds {
                        None => errs.push(FieldError::required(config_path.child("clientIP").child("timeoutSeconds"), detail)),
                        Some(t) if t <= 0 || t > MAX_CLIENT_IP_SERVICE_AFFINITY_SECONDS => errs.push(FieldError::invalid(
                            config_path.child("clientIP").child("timeoutSeconds"),
                            t,
                            format!("must be greater than 0 and less than {MAX_CLIENT_IP_SERVICE_AFFINITY_SECONDS}"),
                        )),
                        Some(_) => {}
                    },
                },
            }
        }
        "None" => {
            if spec.session_affinity_config.is_some() {
                errs.push(FieldError::forbidden(
                    spec_path.child("sessionAffinityConfig"),
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            spec_path.child("sessionAffinity"),
            q(other),
            &["ClientIP", "None"],
        )),
    }

    errs.extend(validate_cluster_ips_related(service));

    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        let path = spec_path.child("externalIPs").index(i);
        match ip_errors(path.clone(), ip) {
            Some(err) => errs.push(err),
            None => errs.extend(non_special_ip(path, ip)),
        }
    }

    match type_ {
        "" => errs.push(FieldError::required(spec_path.child("type"), "")),
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort" => {}
        other => errs.push(FieldError::not_supported(
            spec_path.child("type"),
            q(other),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }

    if type_ == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if port.node_port.unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    ports_path.index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let node_port = port.node_port.unwrap_or(0);
        if node_port == 0 {
            continue;
        }
        if !node_ports.insert((port.protocol.clone().unwrap_or_default(), node_port)) {
            errs.push(FieldError::duplicate(ports_path.index(i).child("nodePort"), node_port));
        }
    }
    let mut port_keys = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.clone().unwrap_or_default();
        if !port_keys.insert((protocol.clone(), port.port)) {
            errs.push(FieldError::duplicate(
                ports_path.index(i),
                service_port_key(&protocol, port.port),
            ));
        }
    }

    let source_ranges = spec.load_balancer_source_ranges.as_deref().unwrap_or(&[]);
    if !source_ranges.is_empty() {
        // Upstream's path really is capitalised here.
        let path = spec_path.child("LoadBalancerSourceRanges");
        if type_ != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                path.clone(),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, range) in source_ranges.iter().enumerate() {
            let range = range.trim();
            if range.parse::<ipnet::IpNet>().is_err() {
                errs.push(FieldError::invalid(
                    path.index(i),
                    q(range),
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
    } else if let Some(value) =
        annotations.get("service.beta.kubernetes.io/load-balancer-source-ranges")
    {
        let path = FieldPath::new("metadata")
            .child("annotations")
            .key("service.beta.kubernetes.io/load-balancer-source-ranges");
        if type_ != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                path.clone(),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        let value = value.trim();
        if !value.is_empty() {
            for range in value.split(',').map(str::trim) {
                if range.parse::<ipnet::IpNet>().is_err() {
                    errs.push(FieldError::invalid(
                        path.clone(),
                        q(range),
                        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                    ));
                }
            }
        }
    }

    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty()) {
        if type_ != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                spec_path.child("loadBalancerIP"),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        } else {
            errs.extend(ip_errors(spec_path.child("loadBalancerIP"), ip));
        }
    }

    if spec.allocate_load_balancer_node_ports.is_some() && type_ != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            spec_path.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if type_ == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        errs.push(FieldError::required(FieldPath::new("allocateLoadBalancerNodePorts"), ""));
    }

    errs.extend(validate_load_balancer_class(None, service));

    // validateServiceExternalTrafficPolicy.
    let externally_accessible = type_ == "LoadBalancer"
        || type_ == "NodePort"
        || (type_ == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()));
    let etp = spec.external_traffic_policy.as_deref().unwrap_or("");
    if !externally_accessible {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                spec_path.child("externalTrafficPolicy"),
                q(etp),
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(spec_path.child("externalTrafficPolicy"), ""));
    } else if etp != "Cluster" && etp != "Local" {
        errs.push(FieldError::not_supported(
            spec_path.child("externalTrafficPolicy"),
            q(etp),
            &["Cluster", "Local"],
        ));
    }
    let health_check_node_port = spec.health_check_node_port.unwrap_or(0);
    if health_check_node_port != 0 {
        if !(type_ == "LoadBalancer" && etp == "Local") {
            errs.push(FieldError::invalid(
                spec_path.child("healthCheckNodePort"),
                health_check_node_port,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        } else {
            errs.extend(port_num_errors(
                i64::from(health_check_node_port),
                spec_path.child("healthCheckNodePort"),
            ));
        }
    }

    // validateServiceInternalTrafficFieldsValue.
    match spec.internal_traffic_policy.as_deref() {
        None if matches!(type_, "ClusterIP" | "NodePort" | "LoadBalancer") => {
            errs.push(FieldError::required(spec_path.child("internalTrafficPolicy"), ""));
        }
        Some(itp) if itp != "Cluster" && itp != "Local" => {
            errs.push(FieldError::not_supported(
                spec_path.child("internalTrafficPolicy"),
                q(itp),
                &["Cluster", "Local"],
            ));
        }
        _ => {}
    }

    if let Some(distribution) = spec.traffic_distribution.as_deref()
        && distribution != "PreferClose"
    {
        errs.push(FieldError::not_supported(
            spec_path.child("trafficDistribution"),
            q(distribution),
            &["PreferClose"],
        ));
    }
    errs
}

fn service_list(
    service: &Service,
    f: fn(&k8s_openapi::api::core::v1::ServiceSpec) -> Option<&Vec<String>>,
) -> Vec<String> {
    service.spec.as_ref().and_then(f).cloned().unwrap_or_default()
}

fn service_type(service: &Service) -> &str {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("")
}

fn is_single_stack(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.ip_family_policy.as_deref()) == Some("SingleStack")
}

/// `validateUpgradeDowngradeClusterIPs` and `validateUpgradeDowngradeIPFamilies`.
fn validate_upgrade_downgrade(old: &Service, new: &Service) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if service_type(new) == "ExternalName" || service_type(old) == "ExternalName" {
        return errs;
    }
    if is_headless(old) && is_headless(new) {
        return errs;
    }
    let ips_path = FieldPath::new("spec").child("clusterIPs");
    let families_path = FieldPath::new("spec").child("ipFamilies");
    let (old_ips, new_ips) = (
        service_list(old, |s| s.cluster_ips.as_ref()),
        service_list(new, |s| s.cluster_ips.as_ref()),
    );
    let shown_ips = go_string_slice(&new_ips);
    match old_ips.len().cmp(&new_ips.len()) {
        std::cmp::Ordering::Equal => {
            for (i, ip) in old_ips.iter().enumerate() {
                if *ip != new_ips[i] {
                    errs.push(FieldError::invalid(
                        ips_path.index(i),
                        shown_ips.clone(),
                        "may not change once set",
                    ));
                }
            }
        }
        std::cmp::Ordering::Greater => {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    ips_path.index(0),
                    shown_ips.clone(),
                    "primary clusterIP can not be unset",
                ));
            }
            if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid(
                    ips_path.index(0),
                    shown_ips.clone(),
                    "may not change once set",
                ));
            }
            if new_ips.len() == 1 && !is_single_stack(new) {
                errs.push(FieldError::invalid(ips_path.index(0), shown_ips.clone(), "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP"));
            }
        }
        std::cmp::Ordering::Less => {
            if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(FieldError::invalid(
                    ips_path.index(0),
                    shown_ips.clone(),
                    "may not change once set",
                ));
            }
        }
    }
    let (old_families, new_families) = (
        service_list(old, |s| s.ip_families.as_ref()),
        service_list(new, |s| s.ip_families.as_ref()),
    );
    let shown_families = go_string_slice(&new_families);
    match old_families.len().cmp(&new_families.len()) {
        std::cmp::Ordering::Equal => {
            for (i, family) in old_families.iter().enumerate() {
                if *family != new_families[i] {
                    errs.push(FieldError::invalid(
                        families_path.index(0),
                        shown_families.clone(),
                        "may not change once set",
                    ));
                }
            }
        }
        std::cmp::Ordering::Greater => {
            if new_ips.is_empty() {
                errs.push(FieldError::invalid(
                    families_path.index(0),
                    shown_families.clone(),
                    "primary ipFamily can not be unset",
                ));
            }
            if !new_families.is_empty() && new_families[0] != old_families[0] {
                errs.push(FieldError::invalid(
                    families_path.index(0),
                    shown_ips.clone(),
                    "may not change once set",
                ));
            }
            if new_families.len() == 1 && !is_single_stack(new) {
                errs.push(FieldError::invalid(ips_path.index(0), shown_ips.clone(), "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary ipFamily"));
            }
        }
        std::cmp::Ordering::Less => {
            if !old_families.is_empty()
                && !new_families.is_empty()
                && new_families[0] != old_families[0]
            {
                errs.push(FieldError::invalid(
                    families_path.index(0),
                    shown_ips.clone(),
                    "may not change once set",
                ));
            }
        }
    }
    errs
}

/// `ValidateServiceUpdate`: immutable metadata, clusterIPs/ipFamilies (unless the type changes
/// to or from ExternalName), loadBalancerClass once set, then every create rule.
pub fn validate_service_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    errs.extend(validate_upgrade_downgrade(old, new));
    let class_errs = validate_load_balancer_class(Some(old), new);
    errs.extend(class_errs.into_iter().filter(|e| e.detail == "may not change once set"));
    errs.extend(validate_service_create(new));
    errs
}

/// `ValidateServiceStatusUpdate`: metadata plus `status.loadBalancer.ingress` (IPs, ipMode,
/// ports) and conditions.
pub fn validate_service_status_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    let Some(status) = new.status.as_ref() else { return errs };
    let ingress_path = FieldPath::new("status").child("loadBalancer").child("ingress");
    for (i, ingress) in
        status.load_balancer.iter().flat_map(|lb| lb.ingress.iter().flatten()).enumerate()
    {
        let path = ingress_path.index(i);
        if let Some(ip) = ingress.ip.as_deref().filter(|ip| !ip.is_empty()) {
            errs.extend(ip_errors(path.child("ip"), ip));
        }
        if let Some(hostname) = ingress.hostname.as_deref().filter(|h| !h.is_empty()) {
            for msg in names::is_dns1123_subdomain(hostname) {
                errs.push(FieldError::invalid(path.child("hostname"), q(hostname), msg));
            }
            if is_valid_ip(hostname) {
                errs.push(FieldError::invalid(
                    path.child("hostname"),
                    q(hostname),
                    "must be a DNS name, not an IP address",
                ));
            }
        }
        match ingress.ip_mode.as_deref() {
            None => {
                if ingress.ip.as_deref().is_some_and(|ip| !ip.is_empty()) && is_lb(new) {
                    errs.push(FieldError::required(
                        path.child("ipMode"),
                        "must be specified when `ip` is set",
                    ));
                }
            }
            Some("VIP") | Some("Proxy") => {
                if ingress.ip.as_deref().unwrap_or("").is_empty() {
                    errs.push(FieldError::forbidden(
                        path.child("ipMode"),
                        "may not be specified when `ip` is not set",
                    ));
                }
            }
            Some(other) => errs.push(FieldError::not_supported(
                path.child("ipMode"),
                q(other),
                &["Proxy", "VIP"],
            )),
        }
        for (j, port) in ingress.ports.iter().flatten().enumerate() {
            let port_path = path.child("ports").index(j);
            errs.extend(port_num_errors(i64::from(port.port), port_path.child("port")));
            if !matches!(port.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                errs.push(FieldError::not_supported(
                    port_path.child("protocol"),
                    q(&port.protocol),
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    errs
}

fn decode<T: DeserializeOwned>(obj: &Value) -> Result<T, Vec<FieldError>> {
    serde_json::from_value(obj.clone()).map_err(|e| {
        vec![FieldError::invalid(FieldPath::new(""), "object", format!("does not decode: {e}"))]
    })
}

fn meta_of(obj: &Value) -> ObjectMeta {
    obj.get("metadata").and_then(|m| serde_json::from_value(m.clone()).ok()).unwrap_or_default()
}

/// The name rule and scope of a served kind.
pub fn name_rule(group: &str, kind: &str) -> (NameRule, bool) {
    match (group, kind) {
        ("", "Service") => (NameRule::Dns1035Label, true),
        ("", "Namespace") => (NameRule::Dns1123Label, false),
        ("", "Node") => (NameRule::Dns1123Subdomain, false),
        _ => (NameRule::Dns1123Subdomain, true),
    }
}

/// Validates any served kind given as JSON (`old` for updates): metadata rules per kind, required
/// fields, and for Services the full rules above. Namespaced kinds must carry their namespace
/// (the API server fills it from the URL before validating).
pub fn validate_object(
    group: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    if (group, kind) == ("", "Service") {
        let new: Service = match decode(obj) {
            Ok(s) => s,
            Err(e) => return e,
        };
        return match old.map(decode::<Service>) {
            Some(Ok(old)) => validate_service_update(&new, &old),
            _ => validate_service_create(&new),
        };
    }
    let (rule, namespaced) = name_rule(group, kind);
    let meta = meta_of(obj);
    let mut errs = validate_object_meta(&meta, namespaced, rule);
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(&meta, &meta_of(old)));
    }
    errs.extend(match (group, kind) {
        ("", "Pod") => validate_pod(obj),
        ("apps", "Deployment") => {
            let mut errs = validate_workload(obj);
            errs.extend(validate_deployment_strategy(obj));
            errs
        }
        ("apps", "ReplicaSet") => validate_workload(obj),
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(obj, old),
        ("", "Endpoints") => validate_endpoints(obj),
        ("coordination.k8s.io", "Lease") => validate_lease(obj),
        ("", "ConfigMap") => validate_config_map(obj, old),
        ("", "Namespace") => validate_namespace(obj),
        ("", "Event") | ("events.k8s.io", "Event") => validate_event(group, obj),
        _ => Vec::new(),
    });
    errs
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

fn validate_containers(
    containers: Option<&Value>,
    path: &FieldPath,
    required: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let items = containers.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() && required {
        errs.push(FieldError::required(path.clone(), ""));
    }
    let mut names_seen = BTreeSet::new();
    for (i, container) in items.iter().enumerate() {
        let cpath = path.index(i);
        match container.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldError::required(cpath.child("name"), "")),
            name => {
                for msg in names::is_dns1123_label(name) {
                    errs.push(FieldError::invalid(cpath.child("name"), q(name), msg));
                }
                if !names_seen.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(cpath.child("name"), q(name)));
                }
            }
        }
        if container.get("image").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
            errs.push(FieldError::required(cpath.child("image"), ""));
        }
        let mut port_names = BTreeSet::new();
        for (j, port) in
            container.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let ppath = cpath.child("ports").index(j);
            if let Some(name) = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                for msg in names::is_valid_port_name(name) {
                    errs.push(FieldError::invalid(ppath.child("name"), q(name), msg));
                }
                if !port_names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(ppath.child("name"), q(name)));
                }
            }
            match port.get("containerPort").and_then(Value::as_i64) {
                None | Some(0) => errs.push(FieldError::required(ppath.child("containerPort"), "")),
                Some(p) => errs.extend(port_num_errors(p, ppath.child("containerPort"))),
            }
            if let Some(host_port) =
                port.get("hostPort").and_then(Value::as_i64).filter(|p| *p != 0)
            {
                errs.extend(port_num_errors(host_port, ppath.child("hostPort")));
            }
            match port.get("protocol").and_then(Value::as_str) {
                None | Some("TCP" | "UDP" | "SCTP") => {}
                Some(other) => errs.push(FieldError::not_supported(
                    ppath.child("protocol"),
                    q(other),
                    &["SCTP", "TCP", "UDP"],
                )),
            }
        }
        for (j, env) in
            container.get("env").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            if env.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.push(FieldError::required(cpath.child("env").index(j).child("name"), ""));
            }
        }
    }
    errs
}

fn validate_pod_spec(spec: Option<&Value>, path: &FieldPath) -> Vec<FieldError> {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        return vec![FieldError::required(path.clone(), "")];
    };
    let mut errs = validate_containers(spec.get("containers"), &path.child("containers"), true);
    errs.extend(validate_containers(
        spec.get("initContainers"),
        &path.child("initContainers"),
        false,
    ));
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        errs.push(FieldError::not_supported(
            path.child("restartPolicy"),
            q(policy),
            &["Always", "Never", "OnFailure"],
        ));
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str)
        && !matches!(policy, "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None")
    {
        errs.push(FieldError::not_supported(
            path.child("dnsPolicy"),
            q(policy),
            &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        ));
    }
    let mut volume_names = BTreeSet::new();
    for (i, volume) in
        spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let vpath = path.child("volumes").index(i);
        match volume.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldError::required(vpath.child("name"), "")),
            name => {
                for msg in names::is_dns1123_label(name) {
                    errs.push(FieldError::invalid(vpath.child("name"), q(name), msg));
                }
                if !volume_names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(vpath.child("name"), q(name)));
                }
            }
        }
    }
    if let Some(node_name) = spec.get("nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
    {
        for msg in names::is_dns1123_subdomain(node_name) {
            errs.push(FieldError::invalid(path.child("nodeName"), q(node_name), msg));
        }
    }
    if let Some(hostname) = spec.get("hostname").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        for msg in names::is_dns1123_label(hostname) {
            errs.push(FieldError::invalid(path.child("hostname"), q(hostname), msg));
        }
    }
    if let Some(subdomain) = spec.get("subdomain").and_then(Value::as_str).filter(|n| !n.is_empty())
    {
        for msg in names::is_dns1123_label(subdomain) {
            errs.push(FieldError::invalid(path.child("subdomain"), q(subdomain), msg));
        }
    }
    errs
}

fn validate_pod(obj: &Value) -> Vec<FieldError> {
    validate_pod_spec(obj.get("spec"), &FieldPath::new("spec"))
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn validate_workload(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec_path = FieldPath::new("spec");
    let Some(spec) = obj.get("spec").filter(|s| s.is_object()) else {
        return vec![FieldError::required(spec_path, "")];
    };
    if let Some(replicas) = spec.get("replicas").and_then(Value::as_i64)
        && replicas < 0
    {
        errs.push(FieldError::invalid(
            spec_path.child("replicas"),
            replicas,
            "must be greater than or equal to 0",
        ));
    }
    let selector_value = spec.get("selector");
    let selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> =
        selector_value.and_then(|s| serde_json::from_value(s.clone()).ok());
    let template_labels = string_map(spec.pointer("/template/metadata/labels"));
    match selector {
        None => errs.push(FieldError::required(spec_path.child("selector"), "")),
        Some(selector) => {
            let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty());
            match crate::selector::LabelSelector::from_k8s(&selector) {
                Err(msg) => errs.push(FieldError::invalid(spec_path.child("selector"), "selector", msg)),
                Ok(_) if empty => errs.push(FieldError::invalid(
                    spec_path.child("selector"),
                    "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                    "empty selector is invalid for deployment",
                )),
                Ok(parsed) => {
                    if !parsed.matches(&template_labels) {
                        errs.push(FieldError::invalid(
                            spec_path.child("template").child("metadata").child("labels"),
                            go_string_map(&template_labels),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
        }
    }
    let template_path = spec_path.child("template");
    match spec.get("template") {
        None => errs.push(FieldError::required(template_path, "")),
        Some(template) => {
            errs.extend(validate_labels(
                &template_labels,
                &template_path.child("metadata").child("labels"),
            ));
            errs.extend(validate_pod_spec(template.get("spec"), &template_path.child("spec")));
            if let Some(policy) = str_at(template, "/spec/restartPolicy")
                && policy != "Always"
            {
                errs.push(FieldError::not_supported(
                    template_path.child("spec").child("restartPolicy"),
                    q(policy),
                    &["Always"],
                ));
            }
        }
    }
    errs
}

/// An `IntOrString` as an integer, or a percentage's number (`getIntOrPercentValue`).
fn int_or_percent(value: Option<&Value>) -> Option<(i64, bool)> {
    match value? {
        Value::Number(n) => n.as_i64().map(|n| (n, false)),
        Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse().ok()).map(|n| (n, true)),
        _ => None,
    }
}

/// `ValidateDeploymentStrategy` and `ValidateRollingUpdateDeployment`.
fn validate_deployment_strategy(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = FieldPath::new("spec").child("strategy");
    let Some(strategy) = obj.pointer("/spec/strategy") else { return errs };
    let type_ = strategy.get("type").and_then(Value::as_str).unwrap_or("");
    let rolling = strategy.get("rollingUpdate").filter(|v| !v.is_null());
    match type_ {
        "Recreate" => {
            if rolling.is_some() {
                errs.push(FieldError::forbidden(
                    path.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let rolling_path = path.child("rollingUpdate");
            let max_unavailable = rolling.and_then(|r| r.get("maxUnavailable"));
            let max_surge = rolling.and_then(|r| r.get("maxSurge"));
            for (name, value) in [("maxUnavailable", max_unavailable), ("maxSurge", max_surge)] {
                match (value, int_or_percent(value)) {
                    (None, _) => {}
                    (Some(v), None) => errs.push(FieldError::invalid(
                        rolling_path.child(name),
                        v,
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    )),
                    (Some(v), Some((n, _))) if n < 0 => errs.push(FieldError::invalid(
                        rolling_path.child(name),
                        v,
                        "must be greater than or equal to 0",
                    )),
                    _ => {}
                }
            }
            if int_or_percent(max_unavailable).is_some_and(|(n, _)| n == 0)
                && int_or_percent(max_surge).is_some_and(|(n, _)| n == 0)
            {
                let shown = max_unavailable.map(|v| v.to_string()).unwrap_or_default();
                errs.push(FieldError::invalid(
                    rolling_path.child("maxUnavailable"),
                    shown,
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if let Some((n, true)) = int_or_percent(max_unavailable)
                && n > 100
            {
                errs.push(FieldError::invalid(
                    rolling_path.child("maxUnavailable"),
                    format!("{n}%"),
                    "must not be greater than 100%",
                ));
            }
        }
        "" => errs.push(FieldError::required(path.child("type"), "")),
        other => errs.push(FieldError::not_supported(
            path.child("type"),
            q(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
    errs
}

fn validate_address(path: FieldPath, address: &str, family: Option<&str>) -> Vec<FieldError> {
    match family {
        Some("FQDN") => names::is_dns1123_subdomain(address)
            .into_iter()
            .map(|m| FieldError::invalid(path.clone(), q(address), m))
            .collect(),
        Some(family) => match address.parse::<IpAddr>() {
            Err(_) => ip_errors(path, address).into_iter().collect(),
            Ok(ip) => {
                let ok = (family == "IPv4" && ip.is_ipv4()) || (family == "IPv6" && ip.is_ipv6());
                if ok {
                    Vec::new()
                } else {
                    let msg = if family == "IPv4" {
                        "must be a valid IPv4 address"
                    } else {
                        "must be a valid IPv6 address"
                    };
                    vec![FieldError::invalid(path, q(address), msg)]
                }
            }
        },
        None => ip_errors(path, address).into_iter().collect(),
    }
}

fn validate_endpoint_slice(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let address_type = obj.get("addressType").and_then(Value::as_str).unwrap_or("");
    match address_type {
        "" => errs.push(FieldError::required(FieldPath::new("addressType"), "")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => errs.push(FieldError::not_supported(
            FieldPath::new("addressType"),
            q(other),
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    if let Some(old_type) = old.and_then(|o| o.get("addressType")).and_then(Value::as_str)
        && old_type != address_type
    {
        errs.push(FieldError::invalid(
            FieldPath::new("addressType"),
            q(address_type),
            "field is immutable",
        ));
    }
    let endpoints =
        obj.get("endpoints").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many(FieldPath::new("endpoints"), endpoints.len(), 1000));
    }
    let family = (!address_type.is_empty()).then_some(address_type);
    for (i, endpoint) in endpoints.iter().enumerate() {
        let epath = FieldPath::new("endpoints").index(i);
        let addresses =
            endpoint.get("addresses").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        if addresses.is_empty() {
            errs.push(FieldError::required(
                epath.child("addresses"),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > 100 {
            errs.push(FieldError::too_many(epath.child("addresses"), addresses.len(), 100));
        }
        for (j, address) in addresses.iter().enumerate() {
            let address = address.as_str().unwrap_or("");
            errs.extend(validate_address(epath.child("addresses").index(j), address, family));
        }
        if let Some(node_name) = endpoint.get("nodeName").and_then(Value::as_str) {
            for msg in names::is_dns1123_subdomain(node_name) {
                errs.push(FieldError::invalid(epath.child("nodeName"), q(node_name), msg));
            }
        }
        if let Some(hostname) = endpoint.get("hostname").and_then(Value::as_str) {
            for msg in names::is_dns1123_label(hostname) {
                errs.push(FieldError::invalid(epath.child("hostname"), q(hostname), msg));
            }
        }
    }
    let ports = obj.get("ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if ports.len() > 100 {
        errs.push(FieldError::too_many(FieldPath::new("ports"), ports.len(), 100));
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let ppath = FieldPath::new("ports").index(i);
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() {
            for msg in names::is_dns1123_label(name) {
                errs.push(FieldError::invalid(ppath.child("name"), q(name), msg));
            }
        }
        if !port_names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(ppath.child("name"), q(name)));
        }
        if let Some(p) = port.get("port").and_then(Value::as_i64)
            && !(0..=65535).contains(&p)
        {
            errs.push(FieldError::invalid(
                ppath.child("port"),
                p,
                "must be between 0 and 65535, inclusive",
            ));
        }
        match port.get("protocol").and_then(Value::as_str) {
            None | Some("TCP" | "UDP" | "SCTP") => {}
            Some(other) => errs.push(FieldError::not_supported(
                ppath.child("protocol"),
                q(other),
                &["SCTP", "TCP", "UDP"],
            )),
        }
    }
    errs
}

fn validate_endpoints(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, subset) in
        obj.get("subsets").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let spath = FieldPath::new("subsets").index(i);
        let n_addresses = ["addresses", "notReadyAddresses"]
            .iter()
            .map(|k| subset.get(*k).and_then(Value::as_array).map(Vec::len).unwrap_or(0))
            .sum::<usize>();
        let n_ports = subset.get("ports").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        if n_addresses == 0 {
            errs.push(FieldError::required(
                spath.clone(),
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for key in ["addresses", "notReadyAddresses"] {
            for (j, address) in
                subset.get(key).and_then(Value::as_array).into_iter().flatten().enumerate()
            {
                let ip = address.get("ip").and_then(Value::as_str).unwrap_or("");
                errs.extend(ip_errors(spath.child(key).index(j).child("ip"), ip));
            }
        }
        for (j, port) in
            subset.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let ppath = spath.child("ports").index(j);
            if n_ports > 1 && port.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.push(FieldError::required(ppath.child("name"), ""));
            }
            match port.get("port").and_then(Value::as_i64) {
                Some(p) => errs.extend(port_num_errors(p, ppath.child("port"))),
                None => errs.push(FieldError::invalid(ppath.child("port"), 0, PORT_RANGE_MSG)),
            }
        }
    }
    errs
}

fn validate_lease(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec_path = FieldPath::new("spec");
    if let Some(duration) = obj.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64)
        && duration <= 0
    {
        errs.push(FieldError::invalid(
            spec_path.child("leaseDurationSeconds"),
            duration,
            "must be greater than 0",
        ));
    }
    if let Some(transitions) = obj.pointer("/spec/leaseTransitions").and_then(Value::as_i64)
        && transitions < 0
    {
        errs.push(FieldError::invalid(
            spec_path.child("leaseTransitions"),
            transitions,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(strategy) = obj.pointer("/spec/strategy").and_then(Value::as_str)
        && strategy != "OldestEmulationVersion"
    {
        errs.push(FieldError::not_supported(
            spec_path.child("strategy"),
            q(strategy),
            &["OldestEmulationVersion"],
        ));
    }
    errs
}

fn validate_config_map(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    let data = obj.get("data").and_then(Value::as_object);
    let binary = obj.get("binaryData").and_then(Value::as_object);
    for (key, value) in data.into_iter().flatten() {
        for msg in names::is_config_map_key(key) {
            errs.push(FieldError::invalid(FieldPath::new("data").key(key), q(key), msg));
        }
        total += key.len() + value.as_str().map(str::len).unwrap_or(0);
    }
    for (key, value) in binary.into_iter().flatten() {
        for msg in names::is_config_map_key(key) {
            errs.push(FieldError::invalid(FieldPath::new("binaryData").key(key), q(key), msg));
        }
        if data.is_some_and(|d| d.contains_key(key)) {
            errs.push(FieldError::invalid(
                FieldPath::new("data").key(key),
                q(key),
                "duplicate of key present in binaryData",
            ));
        }
        total += key.len() + value.as_str().map(|s| s.len() * 3 / 4).unwrap_or(0);
    }
    if total > 1024 * 1024 {
        errs.push(too_long(FieldPath::new(""), "may not be more than 1048576 bytes".to_string()));
    }
    if let Some(old) = old
        && old.get("immutable").and_then(Value::as_bool) == Some(true)
    {
        if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
            errs.push(FieldError::forbidden(
                FieldPath::new("immutable"),
                "field is immutable when `immutable` is set",
            ));
        }
        if old.get("data") != obj.get("data") {
            errs.push(FieldError::forbidden(
                FieldPath::new("data"),
                "field is immutable when `immutable` is set",
            ));
        }
        if old.get("binaryData") != obj.get("binaryData") {
            errs.push(FieldError::forbidden(
                FieldPath::new("binaryData"),
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

fn validate_namespace(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, finalizer) in
        obj.pointer("/spec/finalizers").and_then(Value::as_array).into_iter().flatten().enumerate()
    {
        let finalizer = finalizer.as_str().unwrap_or("");
        let path = FieldPath::new("spec").child("finalizers").index(i);
        let errors = names::is_qualified_name(finalizer);
        if !errors.is_empty() {
            errs.extend(
                errors.into_iter().map(|m| FieldError::invalid(path.clone(), q(finalizer), m)),
            );
        } else if !finalizer.contains('/') && finalizer != "kubernetes" {
            errs.push(FieldError::invalid(
                path,
                q(finalizer),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

fn validate_event(group: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (object_key, object_path) = if group.is_empty() {
        ("involvedObject", "involvedObject")
    } else {
        ("regarding", "regarding")
    };
    let namespace = str_at(obj, "/metadata/namespace").unwrap_or("");
    if let Some(reference) = obj.get(object_key) {
        let ref_namespace = reference.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !ref_namespace.is_empty()
            && !namespace.is_empty()
            && ref_namespace != namespace
            && namespace != "default"
        {
            errs.push(FieldError::invalid(
                FieldPath::new(object_path).child("namespace"),
                q(ref_namespace),
                "does not match event.namespace",
            ));
        }
    }
    if let Some(type_) = obj.get("type").and_then(Value::as_str)
        && !group.is_empty()
        && type_ != "Normal"
        && type_ != "Warning"
    {
        errs.push(FieldError::invalid(
            FieldPath::new("type"),
            q(type_),
            "has invalid value: must be Normal or Warning",
        ));
    }
    errs
}

#[cfg(test)]
mod tests;
