//! LoadBalancer address allocation from pools, pure: which Services are ours, which scope they
//! ask for (the cloud annotations of anchors §1H), and which address they get, with MetalLB's
//! sharing rule (`svcnet.io/allow-shared-ip`: same key, no clashing port).
//!
//! Leaves out: announcing the address (the lab and the proxy do that) and MetalLB's extra
//! sharing condition (same selector or externalTrafficPolicy Cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use super::pools::{Pool, Scope};
use crate::runtime::ObjectKey;

/// svcnet's `loadBalancerClass`.
pub const LB_CLASS: &str = "svcnet.io/lb";
/// svcnet's own scope annotation (`internal` or `external`).
pub const ANNOTATION_SCOPE: &str = "svcnet.io/load-balancer-scope";
/// Requested addresses, comma-separated (one per family).
pub const ANNOTATION_IPS: &str = "svcnet.io/load-balancer-ips";
/// The sharing key.
pub const ANNOTATION_SHARED: &str = "svcnet.io/allow-shared-ip";
/// Pick a pool by name (also pools with `autoAssign: false`).
pub const ANNOTATION_POOL: &str = "svcnet.io/address-pool";
/// Prefer pools of a zone.
pub const ANNOTATION_ZONE: &str = "svcnet.io/load-balancer-zone";

/// The annotations (key, value compared case-insensitively) that make a Service internal.
pub const INTERNAL_ANNOTATIONS: &[(&str, &str)] = &[
    ("networking.gke.io/load-balancer-type", "Internal"),
    ("cloud.google.com/load-balancer-type", "Internal"),
    ("service.beta.kubernetes.io/aws-load-balancer-internal", "true"),
    ("service.beta.kubernetes.io/aws-load-balancer-scheme", "internal"),
    ("service.beta.kubernetes.io/azure-load-balancer-internal", "true"),
    (ANNOTATION_SCOPE, "internal"),
];

/// What a Service asks of the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbRequest {
    pub service: ObjectKey,
    pub scope: Scope,
    /// Specific addresses (`spec.loadBalancerIP` or `svcnet.io/load-balancer-ips`).
    pub requested: Vec<IpAddr>,
    pub pool: Option<String>,
    pub zone: Option<String>,
    pub sharing_key: Option<String>,
    /// (protocol, port) of every Service port.
    pub ports: BTreeSet<(String, i32)>,
    /// Families to allocate, primary first; the secondary is best effort unless `require_all`.
    pub families: Vec<bool /* is IPv4 */>,
    pub require_all: bool,
}

/// Why a Service got no address; `Display` is the Event message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    #[error("no {0} address pool is configured (ConfigMap kube-system/svcnet-lb-pools)")]
    NoPool(Scope),
    #[error("address pool {0:?} does not exist or is not {1}")]
    UnknownPool(String, Scope),
    #[error("no available IPs in the {scope} pools {pools:?}")]
    Exhausted { scope: Scope, pools: Vec<String> },
    #[error("requested IP {ip} is not in any {scope} address pool")]
    NotInPool { ip: IpAddr, scope: Scope },
    #[error("requested IP {ip} is already in use by {holder}")]
    InUse { ip: IpAddr, holder: String },
    #[error("invalid {what}: {value:?}")]
    BadAnnotation { what: &'static str, value: String },
}

/// Whether the Service is a LoadBalancer this provider serves: type LoadBalancer with no class or
/// svcnet's class.
pub fn is_ours(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.load_balancer_class.as_deref().is_none_or(|c| c == LB_CLASS)
}

/// The scope the Service's annotations select.
pub fn scope_of(svc: &Service) -> Scope {
    let annotations = svc.metadata.annotations.as_ref();
    let internal = INTERNAL_ANNOTATIONS.iter().any(|(k, v)| {
        annotations.and_then(|a| a.get(*k)).is_some_and(|val| val.trim().eq_ignore_ascii_case(v))
    });
    if internal { Scope::Internal } else { Scope::External }
}

/// The request of a Service this provider serves.
pub fn request_for(svc: &Service) -> Result<LbRequest, LbError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let mut requested = Vec::new();
    if let Some(value) = annotations.get(ANNOTATION_IPS).filter(|v| !v.trim().is_empty()) {
        for part in value.split(',') {
            requested.push(part.trim().parse::<IpAddr>().map_err(|_| LbError::BadAnnotation {
                what: ANNOTATION_IPS,
                value: value.clone(),
            })?);
        }
    } else if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|v| !v.is_empty()) {
        requested.push(ip.parse::<IpAddr>().map_err(|_| LbError::BadAnnotation {
            what: "spec.loadBalancerIP",
            value: ip.to_string(),
        })?);
    }
    let mut families: Vec<bool> = spec.ip_families.iter().flatten().map(|f| f == "IPv4").collect();
    if families.is_empty() {
        families.push(
            spec.cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .is_none_or(|ip| ip.is_ipv4()),
        );
    }
    if spec.ip_family_policy.as_deref().unwrap_or("SingleStack") == "SingleStack" {
        families.truncate(1);
    }
    Ok(LbRequest {
        service: ObjectKey::of(svc),
        scope: scope_of(svc),
        requested,
        pool: annotations.get(ANNOTATION_POOL).cloned().filter(|p| !p.is_empty()),
        zone: annotations.get(ANNOTATION_ZONE).cloned().filter(|z| !z.is_empty()),
        sharing_key: annotations.get(ANNOTATION_SHARED).cloned().filter(|k| !k.is_empty()),
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
            .collect(),
        families,
        require_all: spec.ip_family_policy.as_deref() == Some("RequireDualStack"),
    })
}

#[derive(Debug, Clone)]
struct Holder {
    service: ObjectKey,
    sharing_key: Option<String>,
    ports: BTreeSet<(String, i32)>,
}

/// The allocator: pools and who holds which address.
#[derive(Debug, Clone, Default)]
pub struct LbAllocator {
    pools: Vec<Pool>,
    holders: BTreeMap<IpAddr, Vec<Holder>>,
    by_service: BTreeMap<ObjectKey, Vec<IpAddr>>,
}

impl LbAllocator {
    pub fn new(pools: Vec<Pool>) -> Self {
        LbAllocator { pools, ..Default::default() }
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Replaces the pools. Holdings stay; `assign` moves Services whose address left every pool
    /// of their scope.
    pub fn set_pools(&mut self, pools: Vec<Pool>) {
        self.pools = pools;
    }

    /// The addresses the Service holds.
    pub fn current(&self, service: &ObjectKey) -> Vec<IpAddr> {
        self.by_service.get(service).cloned().unwrap_or_default()
    }

    /// The pool holding the address.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.contains(ip))
    }

    /// Frees everything the Service holds.
    pub fn release(&mut self, service: &ObjectKey) -> Vec<IpAddr> {
        let ips = self.by_service.remove(service).unwrap_or_default();
        for ip in &ips {
            if let Some(hs) = self.holders.get_mut(ip) {
                hs.retain(|h| &h.service != service);
                if hs.is_empty() {
                    self.holders.remove(ip);
                }
            }
        }
        ips
    }

    /// Whether `ip` may be held by the request: it is free, or every holder shares the key and
    /// no port clashes.
    fn compatible(&self, ip: IpAddr, req: &LbRequest) -> Result<(), String> {
        let Some(holders) = self.holders.get(&ip) else { return Ok(()) };
        for h in holders {
            if h.service == req.service {
                continue;
            }
            let shares = req.sharing_key.is_some() && h.sharing_key == req.sharing_key;
            if !shares || !h.ports.is_disjoint(&req.ports) {
                return Err(h.service.to_string());
            }
        }
        Ok(())
    }

    fn pool_fits(&self, pool: &Pool, req: &LbRequest) -> bool {
        if pool.scope != req.scope {
            return false;
        }
        match (&req.pool, &req.zone) {
            (Some(name), _) => &pool.name == name,
            (None, Some(zone)) => pool.auto_assign && pool.zone.as_ref().is_none_or(|z| z == zone),
            (None, None) => pool.auto_assign && pool.zone.is_none(),
        }
    }

    /// Whether the addresses held now still satisfy the request.
    fn holding_ok(&self, req: &LbRequest, held: &[IpAddr]) -> bool {
        if held.is_empty() {
            return false;
        }
        if !req.requested.is_empty() {
            let mut a = held.to_vec();
            let mut b = req.requested.clone();
            a.sort();
            b.sort();
            if a != b {
                return false;
            }
        }
        let family_ok = !req.requested.is_empty()
            || req.families.first().is_none_or(|v4| held[0].is_ipv4() == *v4);
        family_ok
            && held.iter().all(|ip| {
                let pool_ok = match &req.pool {
                    Some(name) => self
                        .pools
                        .iter()
                        .any(|p| &p.name == name && p.scope == req.scope && p.contains(*ip)),
                    None => self.pools.iter().any(|p| p.scope == req.scope && p.contains(*ip)),
                };
                pool_ok && self.compatible(*ip, req).is_ok()
            })
    }

    fn take(&mut self, ip: IpAddr, req: &LbRequest) {
        self.holders.entry(ip).or_default().push(Holder {
            service: req.service.clone(),
            sharing_key: req.sharing_key.clone(),
            ports: req.ports.clone(),
        });
        self.by_service.entry(req.service.clone()).or_default().push(ip);
    }

    /// Gives the Service its addresses: keeps what it holds if that still fits, else releases it
    /// and allocates again. On error the Service holds nothing.
    pub fn assign(&mut self, req: &LbRequest) -> Result<Vec<IpAddr>, LbError> {
        let held = self.current(&req.service);
        if self.holding_ok(req, &held) {
            // Refresh the sharing data (ports may have changed).
            self.release(&req.service);
            for ip in &held {
                self.take(*ip, req);
            }
            return Ok(held);
        }
        self.release(&req.service);
        if let Some(name) = &req.pool
            && !self.pools.iter().any(|p| &p.name == name && p.scope == req.scope)
        {
            return Err(LbError::UnknownPool(name.clone(), req.scope));
        }
        if !req.requested.is_empty() {
            for ip in &req.requested {
                if !self.pools.iter().any(|p| {
                    p.scope == req.scope
                        && p.contains(*ip)
                        && req.pool.as_ref().is_none_or(|n| n == &p.name)
                }) {
                    return Err(LbError::NotInPool { ip: *ip, scope: req.scope });
                }
                if let Err(holder) = self.compatible(*ip, req) {
                    return Err(LbError::InUse { ip: *ip, holder });
                }
            }
            for ip in &req.requested {
                self.take(*ip, req);
            }
            return Ok(req.requested.clone());
        }
        let candidates: Vec<Pool> =
            self.pools.iter().filter(|p| self.pool_fits(p, req)).cloned().collect();
        if candidates.is_empty() {
            return Err(LbError::NoPool(req.scope));
        }
        let mut out = Vec::new();
        for (i, v4) in req.families.iter().enumerate() {
            match self.find_free(&candidates, req, *v4) {
                Some(ip) => {
                    self.take(ip, req);
                    out.push(ip);
                }
                None if i == 0 || req.require_all => {
                    self.release(&req.service);
                    return Err(LbError::Exhausted {
                        scope: req.scope,
                        pools: candidates.iter().map(|p| p.name.clone()).collect(),
                    });
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// A shared address with the same key first (MetalLB prefers it), then the lowest free one;
    /// zoned pools of the requested zone before zoneless ones.
    fn find_free(&self, candidates: &[Pool], req: &LbRequest, v4: bool) -> Option<IpAddr> {
        if req.sharing_key.is_some() {
            for (ip, holders) in &self.holders {
                if ip.is_ipv4() == v4
                    && holders.iter().any(|h| h.sharing_key == req.sharing_key)
                    && candidates.iter().any(|p| p.contains(*ip))
                    && self.compatible(*ip, req).is_ok()
                {
                    return Some(*ip);
                }
            }
        }
        let mut ordered: Vec<&Pool> = candidates.iter().collect();
        ordered.sort_by_key(|p| p.zone.is_none());
        for pool in ordered {
            for range in pool.ranges.iter().filter(|r| r.first.is_ipv4() == v4) {
                let len = range.len().min(1 << 20);
                for offset in 0..len {
                    let ip = range.at(offset);
                    if !self.holders.contains_key(&ip) {
                        return Some(ip);
                    }
                }
            }
        }
        None
    }

    /// Records an address found in a Service's status at start-up (no checks beyond sharing: a
    /// conflicting holder is refused and the Service will be reassigned).
    pub fn restore(&mut self, req: &LbRequest, ips: &[IpAddr]) -> bool {
        if ips.iter().any(|ip| self.compatible(*ip, req).is_err() || self.pool_of(*ip).is_none()) {
            return false;
        }
        for ip in ips {
            self.take(*ip, req);
        }
        true
    }

    /// Every (address, holder) pair, for tests and metrics.
    pub fn holdings(&self) -> Vec<(IpAddr, ObjectKey)> {
        self.holders
            .iter()
            .flat_map(|(ip, hs)| hs.iter().map(move |h| (*ip, h.service.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::pools::parse_pools;
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pools() -> Vec<Pool> {
        parse_pools("- {name: vpc, scope: internal, addresses: [\"10.200.0.10-10.200.0.11\"]}\n- {name: public, scope: external, addresses: [\"203.0.113.10-203.0.113.11\"]}\n").0
    }

    fn lb(name: &str, annotations: &[(&str, &str)], port: i32) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                annotations: Some(
                    annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ports: Some(vec![ServicePort {
                    port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn assign(a: &mut LbAllocator, svc: &Service) -> Result<Vec<String>, String> {
        a.assign(&request_for(svc).unwrap())
            .map(|ips| ips.iter().map(|ip| ip.to_string()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_cloud_annotation_selects_internal() {
        for (k, v) in INTERNAL_ANNOTATIONS {
            let mut a = LbAllocator::new(pools());
            assert_eq!(
                assign(&mut a, &lb("s", &[(k, v)], 80)),
                Ok(vec!["10.200.0.10".to_string()]),
                "{k}"
            );
        }
        let mut a = LbAllocator::new(pools());
        assert_eq!(assign(&mut a, &lb("s", &[], 80)), Ok(vec!["203.0.113.10".to_string()]));
        assert_eq!(
            scope_of(&lb(
                "s",
                &[("service.beta.kubernetes.io/aws-load-balancer-scheme", "internet-facing")],
                80
            )),
            Scope::External
        );
    }

    #[test]
    fn class_filter() {
        let mut s = lb("s", &[], 80);
        assert!(is_ours(&s));
        s.spec.as_mut().unwrap().load_balancer_class = Some(LB_CLASS.into());
        assert!(is_ours(&s));
        s.spec.as_mut().unwrap().load_balancer_class = Some("service.k8s.aws/nlb".into());
        assert!(!is_ours(&s));
    }

    #[test]
    fn exhaustion_requested_ips_sharing_and_switching() {
        let mut a = LbAllocator::new(pools());
        assert!(assign(&mut a, &lb("a", &[], 80)).is_ok());
        assert!(assign(&mut a, &lb("b", &[], 80)).is_ok());
        assert_eq!(
            assign(&mut a, &lb("c", &[], 80)),
            Err(r#"no available IPs in the external pools ["public"]"#.to_string())
        );
        assert!(a.current(&ObjectKey { namespace: "ns".into(), name: "c".into() }).is_empty());
        // Requesting a taken address.
        let mut d = lb("d", &[], 80);
        d.spec.as_mut().unwrap().load_balancer_ip = Some("203.0.113.10".into());
        assert_eq!(
            assign(&mut a, &d),
            Err("requested IP 203.0.113.10 is already in use by ns/a".to_string())
        );
        let d = lb("d", &[(ANNOTATION_IPS, "10.0.0.1")], 80);
        assert_eq!(
            assign(&mut a, &d),
            Err("requested IP 10.0.0.1 is not in any external address pool".to_string())
        );
        // Sharing: same key, different ports.
        let mut a2 = LbAllocator::new(pools());
        assert_eq!(
            assign(&mut a2, &lb("x", &[(ANNOTATION_SHARED, "k")], 80)),
            Ok(vec!["203.0.113.10".to_string()])
        );
        assert_eq!(
            assign(&mut a2, &lb("y", &[(ANNOTATION_SHARED, "k")], 443)),
            Ok(vec!["203.0.113.10".to_string()])
        );
        assert_eq!(
            assign(&mut a2, &lb("z", &[(ANNOTATION_SHARED, "k")], 443)),
            Ok(vec!["203.0.113.11".to_string()])
        );
        // Switching to internal reallocates and frees the external address.
        let x_internal = lb(
            "x",
            &[(ANNOTATION_SHARED, "k"), ("networking.gke.io/load-balancer-type", "Internal")],
            80,
        );
        assert_eq!(assign(&mut a2, &x_internal), Ok(vec!["10.200.0.10".to_string()]));
        // Keeping: a second assign returns the same address.
        assert_eq!(assign(&mut a2, &x_internal), Ok(vec!["10.200.0.10".to_string()]));
        a2.release(&ObjectKey { namespace: "ns".into(), name: "x".into() });
        assert_eq!(a2.holdings().len(), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        #[test]
        fn no_unshared_address_is_held_twice(ops in proptest::collection::vec((0u8..6, 0u8..4, proptest::bool::ANY, 0u8..3), 1..40)) {
            let mut a = LbAllocator::new(pools());
            for (svc_idx, action, internal, key) in ops {
                let name = format!("s{svc_idx}");
                let mut ann: Vec<(&str, &str)> = Vec::new();
                if internal { ann.push((ANNOTATION_SCOPE, "internal")); }
                if key > 0 { ann.push((ANNOTATION_SHARED, "k")); }
                let svc = lb(&name, &ann, 80 + i32::from(key));
                if action == 0 {
                    a.release(&ObjectKey::of(&svc));
                } else {
                    let _ = a.assign(&request_for(&svc).unwrap());
                }
                // Invariant: holders of one address all share a key and have disjoint ports.
                for (ip, hs) in &a.holders {
                    if hs.len() > 1 {
                        for (i, h) in hs.iter().enumerate() {
                            proptest::prop_assert!(h.sharing_key.is_some());
                            for g in &hs[i + 1..] {
                                proptest::prop_assert_eq!(&h.sharing_key, &g.sharing_key);
                                proptest::prop_assert!(h.ports.is_disjoint(&g.ports), "{} clash", ip);
                            }
                        }
                    }
                    // Every holding is inside a pool of the holder's scope.
                    proptest::prop_assert!(a.pool_of(*ip).is_some());
                }
                for (svc, ips) in &a.by_service {
                    for ip in ips {
                        proptest::prop_assert!(a.holders[ip].iter().any(|h| &h.service == svc));
                    }
                }
            }
        }
    }
}
