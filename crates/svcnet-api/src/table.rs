//! `meta.k8s.io/v1` Table output for `kubectl get`, with the columns and cells of
//! kube-apiserver's printers (`pkg/printers/internalversion/printers.go`) and its server-side
//! ages (`apimachinery/pkg/util/duration.HumanDuration`).
//!
//! The server always prints the wide form; kubectl hides `priority > 0` columns unless `-o wide`.
//! Leaves out the Table's `metadata` (resourceVersion, continue): the API server fills it.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// The `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No `rows[].object`.
    None,
    /// `rows[].object` is a `PartialObjectMetadata` with the full metadata (the default).
    #[default]
    Metadata,
    /// `rows[].object` is the full object.
    Object,
}

impl IncludeObject {
    /// Parses the query value (`None`, `Metadata`, `Object`); absent or unknown → `Metadata`.
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// apimachinery `duration.HumanDuration` for a non-negative duration.
pub fn human_duration(d: std::time::Duration) -> String {
    human_duration_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `HumanDuration` on whole seconds, including its tolerance for clocks slightly ahead.
pub fn human_duration_secs(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: `<unknown>` for an absent or unparsable timestamp.
pub fn age(timestamp: Option<&str>, now: jiff::Timestamp) -> String {
    match timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => human_duration_secs(now.as_second() - t.as_second()),
        None => "<unknown>".to_string(),
    }
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn column(name: &str, priority: i64, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
}

/// The column definitions for `kind` (watch events after the first omit them).
pub fn table_column_definitions(kind: &str) -> Value {
    let columns: Vec<(&str, i64, &str)> = match kind {
        "Service" => vec![
            ("Name", 0, NAME_DOC),
            ("Type", 0, "type determines how the Service is exposed."),
            (
                "Cluster-IP",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            (
                "External-IP",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            ("Port(s)", 0, "The list of ports that are exposed by this service."),
            ("Age", 0, AGE_DOC),
            (
                "Selector",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "Pod" => vec![
            ("Name", 0, NAME_DOC),
            ("Ready", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", 0, "The aggregate status of the containers in this pod."),
            (
                "Restarts",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            ("Age", 0, AGE_DOC),
            (
                "IP",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            ("Node", 1, "NodeName indicates in which node this pod is scheduled."),
            (
                "Nominated Node",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            (
                "Readiness Gates",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        "Namespace" => vec![
            ("Name", 0, NAME_DOC),
            ("Status", 0, "The status of the namespace"),
            ("Age", 0, AGE_DOC),
        ],
        "Node" => vec![
            ("Name", 0, NAME_DOC),
            ("Status", 0, "The status of the node"),
            ("Roles", 0, "The roles of the node"),
            ("Age", 0, AGE_DOC),
            ("Version", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", 1, "List of addresses reachable to the node."),
            ("External-IP", 1, "List of addresses reachable to the node."),
            (
                "OS-Image",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            (
                "Kernel-Version",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            (
                "Container-Runtime",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        "Endpoints" => vec![
            ("Name", 0, NAME_DOC),
            ("Endpoints", 0, "Endpoints of the service"),
            ("Age", 0, AGE_DOC),
        ],
        "EndpointSlice" => vec![
            ("Name", 0, NAME_DOC),
            (
                "AddressType",
                0,
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            (
                "Ports",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            ("Endpoints", 0, "endpoints is a list of unique endpoints in this slice."),
            ("Age", 0, AGE_DOC),
        ],
        "Event" => vec![
            (
                "Last Seen",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            (
                "Type",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            (
                "Reason",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            ("Object", 0, "The object that this event is about."),
            (
                "Subobject",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            (
                "Source",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            ("Message", 0, "A human-readable description of the status of this operation."),
            (
                "First Seen",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            ("Count", 1, "The number of times this event has occurred."),
            ("Name", 1, NAME_DOC),
        ],
        "ConfigMap" => vec![
            ("Name", 0, NAME_DOC),
            ("Data", 0, "Data contains the configuration data."),
            ("Age", 0, AGE_DOC),
        ],
        "Lease" => vec![
            ("Name", 0, NAME_DOC),
            ("Holder", 0, "holderIdentity contains the identity of the holder of a current lease."),
            ("Age", 0, AGE_DOC),
        ],
        "Deployment" => vec![
            ("Name", 0, NAME_DOC),
            ("Ready", 0, "Number of the pod with ready state"),
            (
                "Up-to-date",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            (
                "Available",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            ("Age", 0, AGE_DOC),
            ("Containers", 1, "Names of each container in the template."),
            ("Images", 1, "Images referenced by each container in the template."),
            (
                "Selector",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        "ReplicaSet" => vec![
            ("Name", 0, NAME_DOC),
            ("Desired", 0, "Replicas is the number of desired replicas."),
            ("Current", 0, "Replicas is the most recently observed number of replicas."),
            ("Ready", 0, "The number of ready replicas for this replica set."),
            ("Age", 0, AGE_DOC),
            ("Containers", 1, "Names of each container in the template."),
            ("Images", 1, "Images referenced by each container in the template."),
            (
                "Selector",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        _ => vec![("Name", 0, NAME_DOC), ("Age", 0, AGE_DOC)],
    };
    Value::Array(
        columns.into_iter().map(|(name, priority, doc)| column(name, priority, doc)).collect(),
    )
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn i(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn or_none(value: &str) -> String {
    if value.is_empty() { "<none>".to_string() } else { value.to_string() }
}

/// `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            let mut pairs: Vec<String> =
                m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            pairs.sort();
            pairs
        })
        .unwrap_or_default();
    if pairs.is_empty() { "<none>".to_string() } else { pairs.join(",") }
}

/// `metav1.LabelSelectorAsSelector(...).String()`.
fn format_label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else { return "<none>".to_string() };
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or("").to_string();
        let mut values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort();
        let rendered = match expr.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        };
        parts.push((key, rendered));
    }
    parts.sort();
    if parts.is_empty() {
        "<none>".to_string()
    } else {
        parts.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(",")
    }
}

fn service_cells(obj: &Value) -> Vec<Value> {
    let type_ = s(obj, "/spec/type");
    let cluster_ip = arr(obj, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("<none>")
        .to_string();
    let external_ips: Vec<&str> =
        arr(obj, "/spec/externalIPs").iter().filter_map(Value::as_str).collect();
    let external_ip = match type_ {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb: BTreeSet<&str> = arr(obj, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|ing| {
                    let ip = s(ing, "/ip");
                    let hostname = s(ing, "/hostname");
                    if !ip.is_empty() {
                        Some(ip)
                    } else if !hostname.is_empty() {
                        Some(hostname)
                    } else {
                        None
                    }
                })
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(external_ips);
            if all.is_empty() { "<pending>".to_string() } else { all.join(",") }
        }
        "ExternalName" => s(obj, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = arr(obj, "/spec/ports")
        .iter()
        .map(|p| {
            let (port, protocol, node_port) = (i(p, "/port"), s(p, "/protocol"), i(p, "/nodePort"));
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    let ports = if ports.is_empty() { "<none>".to_string() } else { ports.join(",") };
    vec![json!(type_), json!(cluster_ip), json!(external_ip), json!(ports)]
}

/// `printPod`: ready count, status reason, restarts, and the wide columns.
fn pod_cells(obj: &Value, now: jiff::Timestamp) -> (Vec<Value>, Vec<Value>, Option<Value>) {
    let n_containers = arr(obj, "/spec/containers").len();
    let phase = s(obj, "/status/phase");
    let mut reason = if s(obj, "/status/reason").is_empty() {
        phase.to_string()
    } else {
        s(obj, "/status/reason").to_string()
    };
    let conditions = arr(obj, "/status/conditions");
    if conditions
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }
    let mut initializing = false;
    let n_init = arr(obj, "/spec/initContainers").len();
    for (idx, status) in arr(obj, "/status/initContainerStatuses").iter().enumerate() {
        let terminated = status.pointer("/state/terminated");
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if let Some(t) = terminated {
            reason = if !s(t, "/reason").is_empty() {
                format!("Init:{}", s(t, "/reason"))
            } else if i(t, "/signal") != 0 {
                format!("Init:Signal:{}", i(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", i(t, "/exitCode"))
            };
        } else if let Some(w) = status
            .pointer("/state/waiting")
            .filter(|w| !s(w, "/reason").is_empty() && s(w, "/reason") != "PodInitializing")
        {
            reason = format!("Init:{}", s(w, "/reason"));
        } else {
            reason = format!("Init:{idx}/{n_init}");
        }
        initializing = true;
        break;
    }
    let mut restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<String> = None;
    if !initializing {
        let mut has_running = false;
        for status in arr(obj, "/status/containerStatuses").iter().rev() {
            restarts += i(status, "/restartCount");
            let finished = s(status, "/lastState/terminated/finishedAt");
            if !finished.is_empty() && last_restart.as_deref().is_none_or(|l| l < finished) {
                last_restart = Some(finished.to_string());
            }
            let waiting = s(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = if !s(t, "/reason").is_empty() {
                    s(t, "/reason").to_string()
                } else if i(t, "/signal") != 0 {
                    format!("Signal:{}", i(t, "/signal"))
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if status.get("ready").and_then(Value::as_bool) == Some(true)
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready =
                conditions.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        if s(obj, "/status/reason") == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }
    let restarts = match (&last_restart, restarts) {
        (Some(t), n) if n != 0 => format!("{n} ({} ago)", age(Some(t), now)),
        (_, n) => n.to_string(),
    };
    let pod_ip = arr(obj, "/status/podIPs").first().map(|p| s(p, "/ip")).unwrap_or("");
    let pod_ip = if pod_ip.is_empty() { s(obj, "/status/podIP") } else { pod_ip };
    let gates = arr(obj, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let n_true = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        format!("{n_true}/{}", gates.len())
    };
    let head = vec![json!(format!("{ready}/{n_containers}")), json!(reason), json!(restarts)];
    let wide = vec![
        json!(or_none(pod_ip)),
        json!(or_none(s(obj, "/spec/nodeName"))),
        json!(or_none(s(obj, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ];
    let row_conditions = match phase {
        "Succeeded" | "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": phase, "message": format!("The pod has completed {}", if phase == "Succeeded" { "successfully" } else { "with failure" })}]),
        ),
        _ => None,
    };
    (head, wide, row_conditions)
}

fn node_cells(obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let mut status: Vec<String> =
        arr(obj, "/status/conditions")
            .iter()
            .filter(|c| s(c, "/type") == "Ready")
            .take(1)
            .map(|c| {
                if s(c, "/status") == "True" { "Ready".to_string() } else { "NotReady".to_string() }
            })
            .collect();
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".to_string());
    }
    let mut roles = BTreeSet::new();
    for (k, v) in obj.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if k == "kubernetes.io/role"
            && let Some(role) = v.as_str().filter(|r| !r.is_empty())
        {
            roles.insert(role.to_string());
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |type_: &str| {
        arr(obj, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == type_)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let unknown = |v: &str| if v.is_empty() { "<unknown>".to_string() } else { v.to_string() };
    (
        vec![json!(status.join(",")), json!(roles)],
        vec![
            json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            json!(unknown(s(obj, "/status/nodeInfo/osImage"))),
            json!(unknown(s(obj, "/status/nodeInfo/kernelVersion"))),
            json!(unknown(s(obj, "/status/nodeInfo/containerRuntimeVersion"))),
        ],
    )
}

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

/// `formatEndpoints`: up to three `ip:port` pairs and `+ N more...`.
fn endpoints_cell(obj: &Value) -> String {
    let subsets = arr(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let (max, mut list, mut more, mut count) = (3, Vec::new(), false, 0);
    for subset in subsets {
        let addresses = arr(subset, "/addresses");
        let ports = arr(subset, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(s(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(join_host_port(s(a, "/ip"), i(port, "/port")));
            }
        }
    }
    let joined = list.join(",");
    if more { format!("{joined} + {} more...", count - max) } else { joined }
}

/// `listWithMoreString`.
fn list_with_more(items: Vec<String>) -> String {
    let count = items.len();
    let max = 3;
    let shown: Vec<String> = items.into_iter().take(max).collect();
    let joined = shown.join(",");
    if count > max {
        format!("{joined} + {} more...", count - max)
    } else if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

fn endpoint_slice_cells(obj: &Value) -> Vec<Value> {
    let ports: Vec<String> = arr(obj, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(port) => port.to_string(),
            None => p
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| "*".to_string()),
        })
        .collect();
    let addresses: Vec<String> = arr(obj, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str).map(str::to_string))
        .collect();
    vec![
        json!(s(obj, "/addressType")),
        json!(list_with_more(ports)),
        json!(list_with_more(addresses)),
    ]
}

/// `printEvent` for core/v1 and events.k8s.io/v1 Events (all cells; the Name is last).
fn event_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let first_ts =
        [s(obj, "/firstTimestamp"), s(obj, "/deprecatedFirstTimestamp"), s(obj, "/eventTime")]
            .into_iter()
            .find(|t| !t.is_empty());
    let first = age(first_ts, now);
    let last_ts = [s(obj, "/lastTimestamp"), s(obj, "/deprecatedLastTimestamp")]
        .into_iter()
        .find(|t| !t.is_empty());
    let mut last = if last_ts.is_some() { age(last_ts, now) } else { first.clone() };
    let mut count = obj
        .get("count")
        .or_else(|| obj.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = obj.get("series").filter(|v| v.is_object()) {
        last = age(Some(s(series, "/lastObservedTime")), now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let involved =
        obj.get("involvedObject").or_else(|| obj.get("regarding")).cloned().unwrap_or(Value::Null);
    let kind = s(&involved, "/kind").to_lowercase();
    let target = if s(&involved, "/name").is_empty() {
        kind
    } else {
        format!("{kind}/{}", s(&involved, "/name"))
    };
    let (component, host) = if !s(obj, "/source/component").is_empty() {
        (s(obj, "/source/component"), s(obj, "/source/host"))
    } else if !s(obj, "/deprecatedSource/component").is_empty() {
        (s(obj, "/deprecatedSource/component"), s(obj, "/deprecatedSource/host"))
    } else {
        (s(obj, "/reportingController"), s(obj, "/reportingInstance"))
    };
    let source =
        if host.is_empty() { component.to_string() } else { format!("{component}, {host}") };
    let message = if obj.get("message").is_some() { s(obj, "/message") } else { s(obj, "/note") };
    vec![
        json!(last),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(target),
        json!(s(&involved, "/fieldPath")),
        json!(source),
        json!(message.trim()),
        json!(first),
        json!(count),
        json!(s(obj, "/metadata/name")),
    ]
}

fn template_containers(obj: &Value) -> (String, String) {
    let containers = arr(obj, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// One Table row for `obj` of `kind`.
pub fn table_row(
    kind: &str,
    obj: &Value,
    now: jiff::Timestamp,
    include_object: IncludeObject,
) -> Value {
    let name = json!(s(obj, "/metadata/name"));
    let created = age(obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str), now);
    let mut conditions = None;
    let cells: Vec<Value> = match kind {
        "Service" => {
            let mut cells = vec![name];
            cells.extend(service_cells(obj));
            cells.push(json!(created));
            cells.push(json!(format_labels(obj.pointer("/spec/selector"))));
            cells
        }
        "Pod" => {
            let (head, wide, row_conditions) = pod_cells(obj, now);
            conditions = row_conditions;
            let mut cells = vec![name];
            cells.extend(head);
            cells.push(json!(created));
            cells.extend(wide);
            cells
        }
        "Namespace" => vec![name, json!(s(obj, "/status/phase")), json!(created)],
        "Node" => {
            let (head, wide) = node_cells(obj);
            let mut cells = vec![name];
            cells.extend(head);
            cells.push(json!(created));
            cells.extend(wide);
            cells
        }
        "Endpoints" => vec![name, json!(endpoints_cell(obj)), json!(created)],
        "EndpointSlice" => {
            let mut cells = vec![name];
            cells.extend(endpoint_slice_cells(obj));
            cells.push(json!(created));
            cells
        }
        "Event" => event_cells(obj, now),
        "ConfigMap" => {
            let n = ["data", "binaryData"]
                .iter()
                .map(|k| obj.get(*k).and_then(Value::as_object).map(Map::len).unwrap_or(0))
                .sum::<usize>();
            vec![name, json!(n), json!(created)]
        }
        "Lease" => vec![name, json!(or_none(s(obj, "/spec/holderIdentity"))), json!(created)],
        "Deployment" => {
            let desired = i(obj, "/spec/replicas");
            let (containers, images) = template_containers(obj);
            vec![
                name,
                json!(format!("{}/{desired}", i(obj, "/status/readyReplicas"))),
                json!(i(obj, "/status/updatedReplicas")),
                json!(i(obj, "/status/availableReplicas")),
                json!(created),
                json!(containers),
                json!(images),
                json!(format_label_selector(obj.pointer("/spec/selector"))),
            ]
        }
        "ReplicaSet" => {
            let (containers, images) = template_containers(obj);
            vec![
                name,
                json!(i(obj, "/spec/replicas")),
                json!(i(obj, "/status/replicas")),
                json!(i(obj, "/status/readyReplicas")),
                json!(created),
                json!(containers),
                json!(images),
                json!(format_label_selector(obj.pointer("/spec/selector"))),
            ]
        }
        _ => vec![name, json!(created)],
    };
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if let Some(conditions) = conditions {
        row.insert("conditions".into(), conditions);
    }
    match include_object {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
            row.insert("object".into(), json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}));
        }
        IncludeObject::Object => {
            row.insert("object".into(), obj.clone());
        }
    }
    Value::Object(row)
}

/// A whole Table for `objects` of `kind`. The API server sets `metadata.resourceVersion` (and
/// `continue`) and, for watch events after the first, may drop `columnDefinitions`.
pub fn table(
    kind: &str,
    objects: &[&Value],
    now: jiff::Timestamp,
    include_object: IncludeObject,
) -> Value {
    let rows: Vec<Value> =
        objects.iter().map(|obj| table_row(kind, obj, now, include_object)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": table_column_definitions(kind),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests;
