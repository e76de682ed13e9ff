//! From the runner's [`PodRuntime`] to a Kubernetes `PodStatus` (pure).
//!
//! Phase rules follow the kubelet's `getPhase`: Pending until a container has started,
//! Running while any container runs or will be restarted, Succeeded when every container ended
//! with 0 and none will restart, Failed otherwise; a container that cannot run at all (no
//! command) fails the pod at once with its reason. Condition transition times are kept from the
//! previous status when the condition did not change, so an unchanged pod renders the same status.

use k8s_openapi::api::core::v1::{ContainerStatus, HostIP, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::runner::PodRuntime;

/// The pod phase for a runtime snapshot.
pub fn phase(runtime: &PodRuntime) -> &'static str {
    if runtime.containers.iter().any(|c| c.unrunnable) {
        return "Failed";
    }
    if !runtime.containers.is_empty() && runtime.containers.iter().all(|c| c.done) {
        let all_ok = runtime.containers.iter().all(|c| c.last_exit_code == Some(0));
        return if all_ok { "Succeeded" } else { "Failed" };
    }
    if runtime.containers.iter().any(|c| c.started) { "Running" } else { "Pending" }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    previous: Option<&PodStatus>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    PodCondition {
        type_: type_.to_string(),
        status,
        reason: reason.map(str::to_string),
        last_transition_time: Some(last_transition_time),
        ..Default::default()
    }
}

/// The status to write for `runtime`, keeping unchanged timestamps from `previous`.
pub fn pod_status(runtime: &PodRuntime, previous: Option<&PodStatus>, now: &Time) -> PodStatus {
    let phase = phase(runtime);
    let all_ready = !runtime.containers.is_empty() && runtime.containers.iter().all(|c| c.ready);
    let unready: Vec<&str> =
        runtime.containers.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let ready_reason = if all_ready { None } else { Some(not_ready_reason) };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", true, None, previous, now),
        condition("Initialized", true, None, previous, now),
        condition("Ready", all_ready, ready_reason, previous, now),
        condition("ContainersReady", all_ready, ready_reason, previous, now),
        condition("PodScheduled", true, None, previous, now),
    ];
    if !all_ready {
        let message = format!("containers with unready status: [{}]", unready.join(" "));
        for c in
            conditions.iter_mut().filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady")
        {
            c.message = Some(message.clone());
        }
    }
    let (reason, message) = match runtime.containers.iter().find(|c| c.unrunnable) {
        Some(c) => {
            let waiting = c.state.waiting.as_ref();
            (waiting.and_then(|w| w.reason.clone()), waiting.and_then(|w| w.message.clone()))
        }
        None => (None, None),
    };
    let pod_ip = runtime.pod_ip.to_string();
    let host_ip = runtime.host_ip.to_string();
    let start_time =
        previous.and_then(|p| p.start_time.clone()).unwrap_or_else(|| runtime.start_time.clone());
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        reason,
        message,
        host_ip: Some(host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: host_ip }]),
        pod_ip: Some(pod_ip.clone()),
        pod_ips: Some(vec![PodIP { ip: pod_ip }]),
        start_time: Some(start_time),
        qos_class: Some("BestEffort".to_string()),
        container_statuses: Some(
            runtime
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: String::new(),
                    state: Some(c.state.clone()),
                    last_state: c.last_state.clone(),
                    ready: c.ready,
                    restart_count: c.restart_count,
                    started: Some(c.started && c.state.running.is_some()),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::runner::ContainerRuntime;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateWaiting,
    };

    fn container(started: bool, ready: bool, done: bool, exit: Option<i32>) -> ContainerRuntime {
        ContainerRuntime {
            name: "c".into(),
            image: "img".into(),
            state: if started && !done {
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }
            } else {
                ContainerState {
                    waiting: Some(ContainerStateWaiting::default()),
                    ..Default::default()
                }
            },
            last_state: None,
            ready,
            started,
            restart_count: 0,
            done,
            unrunnable: false,
            last_exit_code: exit,
        }
    }

    fn runtime(containers: Vec<ContainerRuntime>) -> PodRuntime {
        PodRuntime {
            pod_ip: "127.1.0.2".parse().unwrap(),
            host_ip: "127.0.0.1".parse().unwrap(),
            start_time: Time(jiff::Timestamp::UNIX_EPOCH),
            containers,
            terminated: false,
        }
    }

    #[test]
    fn phases() {
        assert_eq!(phase(&runtime(vec![container(false, false, false, None)])), "Pending");
        assert_eq!(phase(&runtime(vec![container(true, false, false, None)])), "Running");
        assert_eq!(phase(&runtime(vec![container(true, false, true, Some(0))])), "Succeeded");
        assert_eq!(
            phase(&runtime(vec![
                container(true, false, true, Some(0)),
                container(true, false, true, Some(1))
            ])),
            "Failed"
        );
        let mut unrunnable = container(false, false, true, None);
        unrunnable.unrunnable = true;
        assert_eq!(phase(&runtime(vec![unrunnable, container(true, true, false, None)])), "Failed");
    }

    #[test]
    fn ready_condition_and_stable_times() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let status = pod_status(&runtime(vec![container(true, true, false, None)]), None, &now);
        let ready =
            status.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.pod_ip.as_deref(), Some("127.1.0.2"));
        let later = Time(jiff::Timestamp::now());
        let again =
            pod_status(&runtime(vec![container(true, true, false, None)]), Some(&status), &later);
        assert_eq!(again, status);
        let unready =
            pod_status(&runtime(vec![container(true, false, false, None)]), Some(&status), &later);
        let ready =
            unready.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("False", Some(later))
        );
    }
}
