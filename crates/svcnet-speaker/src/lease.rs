//! The Lease side of the election: one `coordination.k8s.io/v1` Lease per address, written
//! with optimistic concurrency (every update carries the `resourceVersion` it was based on,
//! so of two nodes racing for a free Lease exactly one wins and the other gets a Conflict).
//!
//! This module only builds objects and sends single requests; when to send them is decided by
//! `elect::decide` and the loop in `speaker`. Left out: `preferredHolder`/`strategy`
//! (coordinated leader election), which Leases of this kind do not need.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};

use crate::error::{Error, Result};

/// Label on every speaker Lease, so they can be listed and watched apart from others.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "svcnet-speaker";
/// Annotation recording the address a Lease is for (the name is a lossy encoding of it).
pub const ADDRESS_ANNOTATION: &str = "svcnet.io/load-balancer-ip";
/// Annotation with the precise Lease duration in milliseconds. `leaseDurationSeconds` is
/// whole seconds (rounded up here), too coarse for a failover target under one second;
/// speakers honour this annotation when present, other readers see the rounded-up value.
pub const DURATION_ANNOTATION: &str = "svcnet.io/lease-duration-ms";

/// The Lease name for `address`: `svcnet-lb-10-0-0-1`, or for IPv6 all eight groups
/// (`svcnet-lb-fd00-0-0-0-0-0-0-5`), which is always a valid DNS subdomain name.
pub fn lease_name(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("svcnet-lb-{a}-{b}-{c}-{d}")
        }
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("svcnet-lb-{}", groups.join("-"))
        }
    }
}

/// The address a speaker Lease is for, from its annotation.
pub fn lease_address(lease: &Lease) -> Option<IpAddr> {
    lease.metadata.annotations.as_ref()?.get(ADDRESS_ANNOTATION)?.parse().ok()
}

/// The holder of a Lease, if it names one (an empty holderIdentity means released).
pub fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// The Lease's duration, if it names a positive one: the precise annotation, else
/// `leaseDurationSeconds`.
pub fn duration(lease: &Lease) -> Option<Duration> {
    let precise = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DURATION_ANNOTATION))
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = precise.filter(|ms| *ms > 0) {
        return Some(Duration::from_millis(ms));
    }
    let seconds = lease.spec.as_ref()?.lease_duration_seconds?;
    u64::try_from(seconds).ok().filter(|s| *s > 0).map(Duration::from_secs)
}

/// Talks to the Leases of one namespace on behalf of one node.
#[derive(Clone)]
pub struct LeaseClient {
    pub api: Api<Lease>,
    pub identity: String,
    /// The Lease duration this node writes (see `DURATION_ANNOTATION`).
    pub duration: Duration,
    /// Every request gives up after this long (an unreachable API server must not block).
    pub timeout: Duration,
}

impl LeaseClient {
    /// `leaseDurationSeconds`: the duration rounded up to whole seconds, at least 1.
    pub fn duration_seconds(&self) -> i32 {
        let seconds = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
    }

    fn annotate(&self, lease: &mut Lease, address: IpAddr) {
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(ADDRESS_ANNOTATION.to_string(), address.to_string());
        annotations.insert(DURATION_ANNOTATION.to_string(), self.duration.as_millis().to_string());
    }

    /// Takes the Lease for `address`: creates it when `current` is `None`, otherwise updates
    /// `current` (keeping its resourceVersion) to name this node.
    pub async fn acquire(&self, address: IpAddr, current: Option<&Lease>) -> Result<Lease> {
        let now = MicroTime(Timestamp::now());
        let name = lease_name(address);
        match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY_LABEL.to_string(),
                            MANAGED_BY.to_string(),
                        )])),
                        annotations: Some(BTreeMap::from([
                            (ADDRESS_ANNOTATION.to_string(), address.to_string()),
                            (
                                DURATION_ANNOTATION.to_string(),
                                self.duration.as_millis().to_string(),
                            ),
                        ])),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.duration_seconds()),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.send(&name, self.api.create(&PostParams::default(), &lease)).await
            }
            Some(current) => {
                let mut lease = current.clone();
                lease.metadata.managed_fields = None;
                self.annotate(&mut lease, address);
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let changed = spec.holder_identity.as_deref() != Some(self.identity.as_str());
                if changed {
                    spec.lease_transitions =
                        Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                }
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(self.duration_seconds());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                self.send(&name, self.api.replace(&name, &PostParams::default(), &lease)).await
            }
        }
    }

    /// Renews this node's Lease, based on the copy its last write returned.
    pub async fn renew(&self, mine: &Lease) -> Result<Lease> {
        let name = mine.metadata.name.clone().unwrap_or_default();
        let mut lease = mine.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(self.duration_seconds());
        self.send(&name, self.api.replace(&name, &PostParams::default(), &lease)).await
    }

    /// Releases this node's Lease (no holder), so another node can take it at once.
    pub async fn release(&self, mine: &Lease) -> Result<Lease> {
        let name = mine.metadata.name.clone().unwrap_or_default();
        let mut lease = mine.clone();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.send(&name, self.api.replace(&name, &PostParams::default(), &lease)).await
    }

    /// Deletes this node's Lease for an address no Service uses any more; fails with a
    /// Conflict if someone changed it since `mine`.
    pub async fn delete(&self, mine: &Lease) -> Result<()> {
        let name = mine.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: mine.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        self.send(&name, async { self.api.delete(&name, &params).await.map(|_| ()) }).await
    }

    async fn send<T>(
        &self,
        name: &str,
        request: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let conflict = matches!(&err, kube::Error::Api(status) if status.code == 409 || status.is_conflict() || status.is_already_exists());
                Err(Error::Lease { name: name.to_string(), message: err.to_string(), conflict })
            }
            Err(_) => Err(Error::Lease {
                name: name.to_string(),
                message: format!("no answer within {:?}", self.timeout),
                conflict: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_dns_subdomains() {
        let check = |address: &str, expected: &str| {
            assert_eq!(lease_name(address.parse().expect("address")), expected);
        };
        check("10.200.0.200", "svcnet-lb-10-200-0-200");
        check("fd00::", "svcnet-lb-fd00-0-0-0-0-0-0-0");
        check("::1", "svcnet-lb-0-0-0-0-0-0-0-1");
    }

    #[test]
    fn precise_duration_wins_over_whole_seconds() {
        let mut lease = Lease {
            spec: Some(LeaseSpec { lease_duration_seconds: Some(1), ..LeaseSpec::default() }),
            ..Lease::default()
        };
        assert_eq!(duration(&lease), Some(Duration::from_secs(1)));
        lease.metadata.annotations =
            Some(BTreeMap::from([(DURATION_ANNOTATION.to_string(), "600".to_string())]));
        assert_eq!(duration(&lease), Some(Duration::from_millis(600)));
        // Garbage in the annotation falls back to the spec; a zero duration is no duration.
        lease.metadata.annotations =
            Some(BTreeMap::from([(DURATION_ANNOTATION.to_string(), "soon".to_string())]));
        assert_eq!(duration(&lease), Some(Duration::from_secs(1)));
        lease.metadata.annotations = None;
        lease.spec = Some(LeaseSpec { lease_duration_seconds: Some(0), ..LeaseSpec::default() });
        assert_eq!(duration(&lease), None);
    }
}
