//! Service addresses in the write path (ClusterIP and NodePort allocation) and the
//! `kubernetes` Service.
//!
//! The allocator (`svcnet_controllers::ipam`, pure) reserves in memory; this module persists
//! the reservations in the *same* store transaction as the Service, under
//! `/registry/svcnet.io/allocations/<key>` with precondition Absent, so two servers sharing
//! one etcd never hand out one address twice. The lock on the allocator is never held across
//! an `.await`. At start-up `bootstrap` repairs the reservations from the stored Services.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};
use svcnet_controllers::ipam::{Allocation, Ipam, IpamConfig, Reservation};
use svcnet_store::{Op, Precondition};

use crate::error::{ApiError, Error};
use crate::server::State;
use crate::{Config, object, registry};

pub const ALLOCATIONS: &str = "/registry/svcnet.io/allocations/";

/// The server's one allocator.
pub struct IpamHandle {
    ipam: Mutex<Ipam>,
    kubernetes_ip: IpAddr,
}

impl IpamHandle {
    pub fn new(config: &Config) -> crate::Result<IpamHandle> {
        let ipam = Ipam::new(IpamConfig {
            service_cluster_ip_ranges: config.service_cluster_ip_ranges.clone(),
            service_node_port_range: config.service_node_port_range.clone(),
        })
        .map_err(|e| Error::Config(e.to_string()))?;
        let kubernetes_ip = ipam.kubernetes_service_ip();
        Ok(IpamHandle { ipam: Mutex::new(ipam), kubernetes_ip })
    }

    pub fn kubernetes_service_ip(&self) -> IpAddr {
        self.kubernetes_ip
    }

    fn lock(&self) -> MutexGuard<'_, Ipam> {
        // Every allocator method leaves it consistent, so a poisoned lock is still usable.
        self.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The store ops that persist a reservation for `owner`.
pub fn reservation_ops(r: &Reservation, owner: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for a in &r.allocate {
        ops.push(Op::Put {
            key: format!("{ALLOCATIONS}{}", a.key()),
            value: owner.as_bytes().to_vec(),
            precondition: Precondition::Absent,
        });
    }
    for a in &r.release {
        // A released key may be re-taken by the same request (a type change re-allocating a
        // port); never delete what this transaction also creates.
        if !r.allocate.contains(a) {
            ops.push(Op::Delete {
                key: format!("{ALLOCATIONS}{}", a.key()),
                precondition: Precondition::None,
            });
        }
    }
    ops
}

fn to_service(v: &Value) -> Result<Service, ApiError> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// What the write of a Service needs: the allocation step and, after the transaction, the
/// commit or rollback.
pub enum Allocate<'a> {
    Create,
    Update { old: &'a Value },
    Delete,
}

/// Runs `allocate` on a copy of `obj` (filling addresses), builds the ops via `main_ops`, and
/// writes them in one transaction, retrying when another server took an address first.
/// Returns the final object and the transaction revision.
pub async fn write_service(
    state: &Arc<State>,
    resource: &registry::Resource,
    obj: &Value,
    mode: Allocate<'_>,
    dry_run: bool,
    main_ops: impl Fn(&Value) -> Result<Vec<Op>, ApiError>,
) -> Result<(Value, Option<svcnet_store::TxnResponse>), ApiError> {
    let name = object::name(obj).to_string();
    for _attempt in 0..8 {
        let mut svc = to_service(obj)?;
        let reservation = {
            let mut ipam = state.ipam.lock();
            match &mode {
                Allocate::Create => ipam.allocate_create(&mut svc),
                Allocate::Update { old } => {
                    let old = to_service(old)?;
                    ipam.allocate_update(&old, &mut svc)
                }
                Allocate::Delete => Ok(ipam.release_delete(&svc)),
            }
        };
        let reservation = match reservation {
            Ok(r) => r,
            Err(errors) => return Err(ApiError::invalid(resource, &name, &errors)),
        };
        let new_value = match &mode {
            Allocate::Delete => obj.clone(),
            _ => {
                let mut v = serde_json::to_value(&svc).map_err(ApiError::internal)?;
                object::strip_nulls(&mut v);
                v
            }
        };
        let mut ops = match main_ops(&new_value) {
            Ok(ops) => ops,
            Err(e) => {
                state.ipam.lock().rollback(&reservation);
                return Err(e);
            }
        };
        if dry_run {
            state.ipam.lock().rollback(&reservation);
            return Ok((new_value, None));
        }
        let n_main = ops.len();
        let owner = svcnet_controllers::ipam::owner_of(&svc);
        let alloc_ops = reservation_ops(&reservation, &owner);
        ops.extend(alloc_ops.iter().cloned());
        match state.store.txn(ops).await {
            Ok(resp) => {
                state.ipam.lock().commit(&reservation);
                return Ok((new_value, Some(resp)));
            }
            Err(svcnet_store::Error::PreconditionFailed { index, key, .. }) if index >= n_main => {
                let mut ipam = state.ipam.lock();
                ipam.rollback(&reservation);
                if let Some(a) = key.strip_prefix(ALLOCATIONS).and_then(Allocation::parse_key) {
                    ipam.mark_allocated(&a);
                }
                tracing::debug!(key, "allocation taken by another server; retrying");
                continue;
            }
            Err(e) => {
                state.ipam.lock().rollback(&reservation);
                return Err(e.into());
            }
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        "Internal error occurred: failed to allocate a service address: too many conflicts",
    ))
}

/// Start-up: load reservations and Services, repair, and create the `kubernetes` Service.
pub async fn bootstrap(state: &Arc<State>) -> crate::Result<()> {
    let svc_resource = registry::find("", "v1", "services")
        .ok_or_else(|| Error::Bootstrap("services not registered".into()))?;
    let (svc_kvs, _) = state.store.list(&svc_resource.prefix()).await?;
    let services: Vec<Service> =
        svc_kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    let (alloc_kvs, _) = state.store.list(ALLOCATIONS).await?;
    let stored: Vec<(Allocation, String)> = alloc_kvs
        .iter()
        .filter_map(|kv| {
            let a = Allocation::parse_key(kv.key.strip_prefix(ALLOCATIONS)?)?;
            Some((a, String::from_utf8_lossy(&kv.value).into_owned()))
        })
        .collect();
    let plan = state.ipam.lock().repair(&services, &stored);
    for p in &plan.problems {
        tracing::warn!(problem = %p, "IPAM repair");
    }
    let mut ops = Vec::new();
    for (a, owner) in &plan.create {
        ops.push(Op::Put {
            key: format!("{ALLOCATIONS}{}", a.key()),
            value: owner.as_bytes().to_vec(),
            precondition: Precondition::None,
        });
    }
    for a in &plan.delete {
        ops.push(Op::Delete {
            key: format!("{ALLOCATIONS}{}", a.key()),
            precondition: Precondition::None,
        });
    }
    if !ops.is_empty() {
        tracing::info!(
            created = plan.create.len(),
            deleted = plan.delete.len(),
            "IPAM repair applied"
        );
        for chunk in ops.chunks(500) {
            state.store.txn(chunk.to_vec()).await?;
        }
    }
    ensure_kubernetes_service(state).await.map_err(|e| Error::Bootstrap(e.message))?;
    Ok(())
}

async fn ensure_kubernetes_service(state: &Arc<State>) -> Result<(), ApiError> {
    let svc_resource = registry::find("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services not registered"))?;
    let key = svc_resource.key(Some("default"), "kubernetes");
    if state.store.get(&key).await?.is_none() {
        let ip = state.ipam.kubernetes_service_ip().to_string();
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": state.port}], "sessionAffinity": "None"},
        });
        crate::rest::stamp_new(&mut svc, svc_resource);
        crate::kinds::apply_defaults(svc_resource, &mut svc)?;
        crate::kinds::prepare_create(svc_resource, &mut svc);
        let k2 = key.clone();
        let res = write_service(state, svc_resource, &svc, Allocate::Create, false, |v| {
            let mut stored = v.clone();
            object::remove_resource_version(&mut stored);
            Ok(vec![Op::Put {
                key: k2.clone(),
                value: serde_json::to_vec(&stored).map_err(ApiError::internal)?,
                precondition: Precondition::Absent,
            }])
        })
        .await;
        match res {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    if !state.config.advertise_kubernetes_endpoints {
        return Ok(());
    }
    let addr = state.advertise.to_string();
    let port = state.port;
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": addr}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let family = if state.advertise.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": family,
        "endpoints": [{"addresses": [addr], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    for (plural, group, obj) in
        [("endpoints", "", endpoints), ("endpointslices", "discovery.k8s.io", slice)]
    {
        let r = registry::find(group, "v1", plural)
            .ok_or_else(|| ApiError::internal("resource not registered"))?;
        crate::rest::upsert_system_object(state, r, obj).await?;
    }
    Ok(())
}
