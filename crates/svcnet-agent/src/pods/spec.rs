//! From a Pod's container spec to the process the agent starts: argv, environment, directory.
//!
//! Pure: the pod, the container and the pod's address in, a [`ProcessSpec`] or the reason it
//! cannot run out. Kubernetes' `$(VAR)` expansion rules apply to `command`, `args` and env values
//! (`$$` escapes, unknown references stay as written). `valueFrom` supports `fieldRef` for
//! `metadata.name`, `metadata.namespace`, `metadata.uid`, `spec.nodeName`, `spec.serviceAccountName`,
//! `status.podIP` and `status.hostIP`; Secrets, ConfigMaps, resourceFieldRef and `envFrom` are left
//! out (such variables are skipped with a warning in the result).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// What to execute for one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    /// The full environment, in order (the process inherits nothing else).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// Variables that could not be resolved and were left out.
    pub warnings: Vec<String>,
}

/// Why a container cannot be started at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// A CamelCase reason for the Event and the status.
    pub reason: &'static str,
    pub message: String,
}

/// Address facts the environment needs.
#[derive(Clone, Debug, Default)]
pub struct PodAddresses {
    pub pod_ip: String,
    pub host_ip: String,
    /// The `PATH` the process gets (images carry their own; the agent uses the host's).
    pub path: String,
}

/// Builds the process spec of `container` in `pod`.
pub fn process_spec(
    pod: &Pod,
    container: &Container,
    addresses: &PodAddresses,
) -> Result<ProcessSpec, SpecError> {
    let command = container.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(SpecError {
            reason: "NoCommand",
            message: format!(
                "container {:?} has no command: svcnet runs processes, not images (image {:?} is not pulled); set `command`",
                container.name,
                container.image.clone().unwrap_or_default()
            ),
        });
    }
    let mut warnings = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(existing) = env.iter_mut().find(|(existing, _)| *existing == name) {
            existing.1 = value;
        } else {
            env.push((name, value));
        }
    };
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".to_string());
    set(&mut env, "PATH".into(), addresses.path.clone());
    set(&mut env, "HOSTNAME".into(), name.clone());
    set(&mut env, "POD_NAME".into(), name.clone());
    set(&mut env, "POD_NAMESPACE".into(), namespace.clone());
    set(&mut env, "POD_IP".into(), addresses.pod_ip.clone());
    for var in container.env.iter().flatten() {
        let value = if let Some(value_from) = &var.value_from {
            match value_from.field_ref.as_ref().map(|field| field.field_path.as_str()) {
                Some(path) => match field_value(pod, path, addresses) {
                    Some(value) => value,
                    None => {
                        warnings.push(format!("env {}: unsupported fieldRef {path}", var.name));
                        continue;
                    }
                },
                None => {
                    warnings
                        .push(format!("env {}: only fieldRef is supported in valueFrom", var.name));
                    continue;
                }
            }
        } else {
            expand(var.value.as_deref().unwrap_or(""), &lookup(&env))
        };
        set(&mut env, var.name.clone(), value);
    }
    let vars = lookup(&env);
    let mut argv =
        command.iter().chain(container.args.iter().flatten()).map(|arg| expand(arg, &vars));
    let program = argv.next().unwrap_or_default();
    Ok(ProcessSpec {
        program,
        args: argv.collect(),
        env,
        working_dir: container.working_dir.clone().filter(|dir| !dir.is_empty()),
        warnings,
    })
}

fn lookup(env: &[(String, String)]) -> BTreeMap<String, String> {
    env.iter().cloned().collect()
}

/// The value of a downward-API field path, or `None` when unsupported.
pub fn field_value(pod: &Pod, path: &str, addresses: &PodAddresses) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => Some(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => {
            Some(meta.namespace.clone().unwrap_or_else(|| "default".to_string()))
        }
        "metadata.uid" => Some(meta.uid.clone().unwrap_or_default()),
        "spec.nodeName" => Some(spec.and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "spec.serviceAccountName" => {
            Some(spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default())
        }
        "status.podIP" => Some(addresses.pod_ip.clone()),
        "status.hostIP" => Some(addresses.host_ip.clone()),
        _ => {
            let rest = path
                .strip_prefix("metadata.labels['")
                .or_else(|| path.strip_prefix("metadata.labels[\""))?;
            let key = rest.strip_suffix("']").or_else(|| rest.strip_suffix("\"]"))?;
            Some(
                meta.labels
                    .as_ref()
                    .and_then(|labels| labels.get(key).cloned())
                    .unwrap_or_default(),
            )
        }
    }
}

/// Kubernetes `$(VAR)` expansion: `$$` is a literal `$`, unknown or unterminated references stay.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(idx) = rest.find('$') {
        out.push_str(&rest[..idx]);
        let after = &rest[idx + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_expand(input: &str, expected: &str) {
        let vars: BTreeMap<String, String> =
            [("POD_IP".to_string(), "127.1.0.2".to_string()), ("A".to_string(), "x".to_string())]
                .into();
        assert_eq!(expand(input, &vars), expected, "input {input:?}");
    }

    #[test]
    fn expands_like_kubernetes() {
        check_expand("$(POD_IP):8080", "127.1.0.2:8080");
        check_expand("$$(POD_IP)", "$(POD_IP)");
        check_expand("$(MISSING)-$(A)", "$(MISSING)-x");
        check_expand("cost $5 $(A", "cost $5 $(A");
        check_expand("plain", "plain");
    }

    fn pod(yaml: serde_json::Value) -> Pod {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn builds_argv_and_env() {
        let pod = pod(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "demo", "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "echo", "image": "svcnet",
                "command": ["svcnet", "echo"], "args": ["--listen", "$(MY_IP):8080"],
                "env": [
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "GREETING", "value": "hi $(POD_NAME)"},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                ],
                "workingDir": "/tmp"
            }]}
        }));
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let addresses = PodAddresses {
            pod_ip: "127.1.0.2".into(),
            host_ip: "127.0.0.1".into(),
            path: "/bin".into(),
        };
        let spec = process_spec(&pod, container, &addresses).unwrap();
        assert_eq!(spec.program, "svcnet");
        assert_eq!(spec.args, ["echo", "--listen", "127.1.0.2:8080"]);
        let env: BTreeMap<_, _> = spec.env.iter().cloned().collect();
        assert_eq!(env["POD_NAMESPACE"], "demo");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["GREETING"], "hi web-1");
        assert!(!env.contains_key("SECRET"));
        assert_eq!(spec.warnings.len(), 1);
        assert_eq!(spec.working_dir.as_deref(), Some("/tmp"));
    }

    #[test]
    fn no_command_is_an_error() {
        let pod = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
        }));
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let err = process_spec(&pod, container, &PodAddresses::default()).unwrap_err();
        assert_eq!(err.reason, "NoCommand");
        assert!(err.message.contains("nginx"));
    }
}
