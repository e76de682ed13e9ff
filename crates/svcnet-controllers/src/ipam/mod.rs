//! ClusterIP and NodePort allocation for the Service write path, as kube-apiserver does it
//! (`pkg/registry/core/service/storage/alloc.go`, `ipallocator`, `portallocator`).
//!
//! The API server owns one `Ipam`. On a Service create, update or delete it calls
//! `allocate_create` / `allocate_update` / `release_delete`, which fill the Service's
//! `clusterIP(s)`, `ipFamilies`, `ipFamilyPolicy`, `nodePort`s and `healthCheckNodePort` and reserve
//! them in memory at once (so two concurrent requests never get one address). It then writes the
//! Service (and the reservations, under `/registry/svcnet.io/allocations/<key>`) to the store and
//! calls `commit` (the write succeeded: free what the request gave up) or `rollback` (the write
//! failed: free what the request took). At start-up `repair` compares the stored Services with the
//! stored reservations, rebuilds the in-memory state and says which reservations to create or
//! delete, like kube-apiserver's repair controllers.
//!
//! Leaves out: all I/O (the caller persists reservations), the MultiCIDRServiceAllocator
//! (`ServiceCIDR`/`IPAddress` objects) and general Service validation (the API server's
//! `svcnet-api` does that; here only what allocation itself must check).

mod ranges;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use svcnet_api::{FieldError, FieldErrorKind, FieldPath};

pub use ranges::{IpRange, port_static_band_size};

/// The configuration of kube-apiserver's `--service-cluster-ip-range` and
/// `--service-node-port-range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// One or two CIDRs (at most one per family), primary first.
    pub service_cluster_ip_ranges: Vec<ipnet::IpNet>,
    pub service_node_port_range: RangeInclusive<u16>,
}

impl Default for IpamConfig {
    /// kube-apiserver's defaults: `10.96.0.0/12` (as kubeadm) and `30000-32767`.
    fn default() -> Self {
        IpamConfig {
            service_cluster_ip_ranges: vec![ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 12)
                    .expect("prefix 12 is valid for IPv4"),
            )],
            service_node_port_range: 30000..=32767,
        }
    }
}

/// One reserved thing: a cluster IP or a node port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Allocation {
    ClusterIp(IpAddr),
    NodePort(u16),
}

impl Allocation {
    /// The store key suffix: `clusterips/10.96.0.1`, `nodeports/30080`.
    pub fn key(&self) -> String {
        match self {
            Allocation::ClusterIp(ip) => format!("clusterips/{ip}"),
            Allocation::NodePort(port) => format!("nodeports/{port}"),
        }
    }

    /// The inverse of `key`; `None` for anything else.
    pub fn parse_key(key: &str) -> Option<Allocation> {
        let key = key.trim_start_matches('/');
        if let Some(ip) = key.strip_prefix("clusterips/") {
            return ip.parse().ok().map(Allocation::ClusterIp);
        }
        if let Some(port) = key.strip_prefix("nodeports/") {
            return port.parse().ok().filter(|p| *p != 0).map(Allocation::NodePort);
        }
        None
    }
}

impl std::fmt::Display for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// What one write request reserved and what it will give up once the write succeeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Newly reserved (already taken in memory); freed by `rollback`.
    pub allocate: Vec<Allocation>,
    /// Held by the old object and no longer needed; freed by `commit`.
    pub release: Vec<Allocation>,
}

impl Reservation {
    pub fn is_empty(&self) -> bool {
        self.allocate.is_empty() && self.release.is_empty()
    }
}

/// What the caller must change in the stored reservations after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// Reservations to write (create or overwrite) with the owner Service's uid.
    pub create: Vec<(Allocation, String)>,
    /// Reservations no Service owns (leaks); delete them.
    pub delete: Vec<Allocation>,
    /// Things repair cannot fix (duplicates, addresses outside the ranges), one sentence each, as
    /// kube-apiserver reports them in Events.
    pub problems: Vec<String>,
}

/// Why an `IpamConfig` was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("at least one service cluster IP range is required")]
    NoRange,
    #[error("at most two service cluster IP ranges are allowed, got {0}")]
    TooManyRanges(usize),
    #[error("service cluster IP ranges {0} and {1} are of the same IP family")]
    SameFamily(ipnet::IpNet, ipnet::IpNet),
    #[error("service cluster IP range {0} is too small")]
    RangeTooSmall(ipnet::IpNet),
    #[error("service node port range {0}-{1} is empty or contains port 0")]
    BadNodePortRange(u16, u16),
}

/// The ClusterIP and NodePort allocator. See the module doc for the protocol.
#[derive(Debug, Clone)]
pub struct Ipam {
    ranges: Vec<IpRange>,
    node_ports: RangeInclusive<u16>,
    ips: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
    rng: SplitMix64,
}

/// The IP families as the API spells them.
const IPV4: &str = "IPv4";
const IPV6: &str = "IPv6";
const SINGLE_STACK: &str = "SingleStack";
const PREFER_DUAL_STACK: &str = "PreferDualStack";
const REQUIRE_DUAL_STACK: &str = "RequireDualStack";
const NONE: &str = "None";

impl Ipam {
    pub fn new(config: IpamConfig) -> Result<Ipam, IpamError> {
        Self::with_seed(config, rand::random::<u64>())
    }

    /// Like `new` with a fixed seed for the random choice of free addresses (tests).
    pub fn with_seed(config: IpamConfig, seed: u64) -> Result<Ipam, IpamError> {
        let cidrs = &config.service_cluster_ip_ranges;
        if cidrs.is_empty() {
            return Err(IpamError::NoRange);
        }
        if cidrs.len() > 2 {
            return Err(IpamError::TooManyRanges(cidrs.len()));
        }
        if cidrs.len() == 2 && family_of_net(&cidrs[0]) == family_of_net(&cidrs[1]) {
            return Err(IpamError::SameFamily(cidrs[0], cidrs[1]));
        }
        let mut ranges = Vec::new();
        for cidr in cidrs {
            ranges.push(IpRange::new(*cidr).ok_or(IpamError::RangeTooSmall(*cidr))?);
        }
        let (lo, hi) =
            (*config.service_node_port_range.start(), *config.service_node_port_range.end());
        if lo == 0 || lo > hi {
            return Err(IpamError::BadNodePortRange(lo, hi));
        }
        Ok(Ipam {
            ranges,
            node_ports: config.service_node_port_range,
            ips: BTreeSet::new(),
            ports: BTreeSet::new(),
            rng: SplitMix64(seed),
        })
    }

    /// The address reserved for the `kubernetes` Service in `default`: the first usable address
    /// of the primary range (`10.96.0.1` for `10.96.0.0/12`).
    pub fn kubernetes_service_ip(&self) -> IpAddr {
        self.ranges[0].first()
    }

    /// Whether the allocation is currently taken in memory.
    pub fn is_allocated(&self, a: &Allocation) -> bool {
        match a {
            Allocation::ClusterIp(ip) => self.ips.contains(ip),
            Allocation::NodePort(port) => self.ports.contains(port),
        }
    }

    /// Everything taken in memory, sorted.
    pub fn allocated(&self) -> Vec<Allocation> {
        self.ips
            .iter()
            .map(|ip| Allocation::ClusterIp(*ip))
            .chain(self.ports.iter().map(|p| Allocation::NodePort(*p)))
            .collect()
    }

    /// Marks an allocation taken (used when loading stored reservations). Addresses outside the
    /// configured ranges are ignored: they cannot be handed out anyway.
    pub fn mark_allocated(&mut self, a: &Allocation) {
        match a {
            Allocation::ClusterIp(ip) => {
                if self.range_of(*ip).is_some() {
                    self.ips.insert(*ip);
                }
            }
            Allocation::NodePort(port) => {
                if self.node_ports.contains(port) {
                    self.ports.insert(*port);
                }
            }
        }
    }

    fn free(&mut self, a: &Allocation) {
        match a {
            Allocation::ClusterIp(ip) => {
                self.ips.remove(ip);
            }
            Allocation::NodePort(port) => {
                self.ports.remove(port);
            }
        }
    }

    /// The write succeeded: frees what the old object held and the new one does not.
    pub fn commit(&mut self, r: &Reservation) {
        for a in &r.release {
            // A released allocation that the same request also took (it moved within the
            // Service) stays taken.
            if !r.allocate.contains(a) {
                self.free(a);
            }
        }
    }

    /// The write failed: frees what the request took.
    pub fn rollback(&mut self, r: &Reservation) {
        for a in &r.allocate {
            self.free(a);
        }
    }

    /// Fills and reserves the addresses of a new Service. On error nothing stays reserved.
    pub fn allocate_create(&mut self, svc: &mut Service) -> Result<Reservation, Vec<FieldError>> {
        let mut txn = Reservation::default();
        match self.allocate_create_inner(svc, &mut txn) {
            Ok(()) => Ok(txn),
            Err(errors) => {
                self.rollback(&txn);
                Err(errors)
            }
        }
    }

    fn allocate_create_inner(
        &mut self,
        svc: &mut Service,
        txn: &mut Reservation,
    ) -> Result<(), Vec<FieldError>> {
        let is_kubernetes = is_kubernetes_service(svc);
        let spec = spec_mut(svc);
        sync_cluster_ip_fields(spec);
        if svc_type(spec) == "ExternalName" {
            return Ok(());
        }
        self.init_ip_family_fields(spec, None)?;
        let families = spec.ip_families.clone().unwrap_or_default();
        let ips = spec.cluster_ips.get_or_insert_with(Vec::new);
        if ips.first().map(String::as_str) != Some(NONE) {
            self.alloc_cluster_ips(ips, &families, 0, is_kubernetes, txn)?;
            spec.cluster_ip = spec.cluster_ips.as_ref().and_then(|ips| ips.first().cloned());
        }
        self.alloc_node_ports_create(spec, txn)?;
        if needs_health_check(spec) {
            self.alloc_health_check_node_port(spec, txn)?;
        }
        Ok(())
    }

    /// Fills and reserves what an updated Service newly needs, and lists what it gives up (freed
    /// on `commit`). Also restores allocated values a PUT left out and drops values the new type no
    /// longer uses, as kube-apiserver's `patchAllocatedValues` and `dropTypeDependentFields` do.
    pub fn allocate_update(
        &mut self,
        old: &Service,
        new: &mut Service,
    ) -> Result<Reservation, Vec<FieldError>> {
        let mut txn = Reservation::default();
        match self.allocate_update_inner(old, new, &mut txn) {
            Ok(()) => Ok(txn),
            Err(errors) => {
                self.rollback(&txn);
                Err(errors)
            }
        }
    }

    fn allocate_update_inner(
        &mut self,
        old: &Service,
        new: &mut Service,
        txn: &mut Reservation,
    ) -> Result<(), Vec<FieldError>> {
        let is_kubernetes = is_kubernetes_service(new);
        let empty = ServiceSpec::default();
        let old_spec = old.spec.as_ref().unwrap_or(&empty);
        let spec = spec_mut(new);
        sync_cluster_ip_fields(spec);
        patch_allocated_values(spec, old_spec);
        drop_type_dependent_fields(spec, old_spec);

        // Cluster IPs.
        let old_type = svc_type(old_spec);
        let new_type = svc_type(spec).to_string();
        let old_headless =
            old_spec.cluster_ips.as_ref().and_then(|ips| ips.first()).map(String::as_str)
                == Some(NONE);
        if new_type != "ExternalName" {
            self.init_ip_family_fields(spec, Some(old_spec))?;
        }
        let families = spec.ip_families.clone().unwrap_or_default();
        if old_type == "ExternalName" && new_type != "ExternalName" {
            // Case A of alloc.go: allocate everything.
            let ips = spec.cluster_ips.get_or_insert_with(Vec::new);
            if ips.first().map(String::as_str) != Some(NONE) {
                self.alloc_cluster_ips(ips, &families, 0, is_kubernetes, txn)?;
                spec.cluster_ip = spec.cluster_ips.as_ref().and_then(|ips| ips.first().cloned());
            }
        } else if old_headless || (old_type == "ExternalName" && new_type == "ExternalName") {
            // Headless Services hold no addresses.
        } else if new_type == "ExternalName" {
            // Case B: release everything.
            txn.release.extend(cluster_ip_allocations(old_spec));
        } else if !is_matching_prefer_dual_stack(spec, old_spec) {
            let old_families = old_spec.ip_families.as_ref().map(Vec::len).unwrap_or(0);
            if old_families == 1 && families.len() == 2 {
                // Case C: upgrade to dual-stack.
                let ips = spec.cluster_ips.get_or_insert_with(Vec::new);
                self.alloc_cluster_ips(ips, &families, 1, is_kubernetes, txn)?;
            } else if old_families == 2 && families.len() == 1 {
                // Case D: downgrade; release the secondary.
                if let Some(ip) = old_spec
                    .cluster_ips
                    .as_ref()
                    .and_then(|ips| ips.get(1))
                    .and_then(|ip| ip.parse().ok())
                {
                    txn.release.push(Allocation::ClusterIp(ip));
                }
            }
        }

        // Node ports.
        let old_ports = node_port_numbers(old_spec);
        if needs_node_port(old_spec) && !needs_node_port(spec) {
            txn.release.extend(old_ports.iter().map(|p| Allocation::NodePort(*p)));
        }
        if needs_node_port(spec) {
            self.update_node_ports(spec, &old_ports, txn)?;
        }

        // Health check node port.
        let needed = needs_health_check(old_spec);
        let needs = needs_health_check(spec);
        if !needed && needs {
            self.alloc_health_check_node_port(spec, txn)?;
        } else if needed && !needs {
            if let Some(port) = old_spec.health_check_node_port.and_then(port_u16) {
                txn.release.push(Allocation::NodePort(port));
            }
        } else if needed && needs {
            let old_hc = old_spec.health_check_node_port.and_then(port_u16);
            let new_hc = spec.health_check_node_port.and_then(port_u16);
            if old_hc != new_hc {
                // Validation forbids changing it; if it changed anyway, keep the books straight.
                match new_hc {
                    Some(port) => self.take_node_port(
                        port,
                        FieldPath::new("spec").child("healthCheckNodePort"),
                        txn,
                    )?,
                    None => self.alloc_health_check_node_port(spec, txn)?,
                }
                if let Some(port) = old_hc {
                    txn.release.push(Allocation::NodePort(port));
                }
            }
        }

        // Anything released that the new object still uses stays.
        let kept: BTreeSet<Allocation> = allocations_of(new).into_iter().collect();
        txn.release.retain(|a| !kept.contains(a));
        txn.release.sort();
        txn.release.dedup();
        Ok(())
    }

    /// What a deleted Service gives up; `commit` frees it once the delete is stored.
    pub fn release_delete(&self, svc: &Service) -> Reservation {
        Reservation { allocate: Vec::new(), release: allocations_of(svc) }
    }

    /// Rebuilds the in-memory state from the stored Services and says how to fix the stored
    /// reservations: missing ones are created, ones no Service owns are deleted, and duplicates
    /// or out-of-range addresses are reported (the first Service in name order keeps the address).
    pub fn repair(&mut self, services: &[Service], stored: &[(Allocation, String)]) -> RepairPlan {
        let mut plan = RepairPlan::default();
        self.ips.clear();
        self.ports.clear();

        let mut sorted: Vec<&Service> = services.iter().collect();
        sorted.sort_by_key(|svc| {
            (
                svc.metadata.namespace.clone().unwrap_or_default(),
                svc.metadata.name.clone().unwrap_or_default(),
            )
        });
        let mut owners: BTreeMap<Allocation, String> = BTreeMap::new();
        for svc in sorted {
            let owner = owner_of(svc);
            let name = format!(
                "{}/{}",
                svc.metadata.namespace.as_deref().unwrap_or(""),
                svc.metadata.name.as_deref().unwrap_or("")
            );
            for a in allocations_of(svc) {
                let in_range = match &a {
                    Allocation::ClusterIp(ip) => self.range_of(*ip).is_some(),
                    Allocation::NodePort(port) => self.node_ports.contains(port),
                };
                if !in_range {
                    plan.problems.push(match &a {
                        Allocation::ClusterIp(ip) => format!("the cluster IP {ip} for service {name} is not within any service CIDR; please recreate"),
                        Allocation::NodePort(port) => format!("the node port {port} for service {name} is not within the port range; please recreate"),
                    });
                    continue;
                }
                if owners.contains_key(&a) {
                    plan.problems.push(match &a {
                        Allocation::ClusterIp(ip) => format!("the cluster IP {ip} for service {name} was assigned to multiple services; please recreate"),
                        Allocation::NodePort(port) => format!("the node port {port} for service {name} was assigned to multiple services; please recreate"),
                    });
                    continue;
                }
                owners.insert(a.clone(), owner.clone());
                self.mark_allocated(&a);
            }
        }
        let mut stored_map: BTreeMap<&Allocation, &str> = BTreeMap::new();
        for (a, uid) in stored {
            if owners.contains_key(a) {
                stored_map.insert(a, uid);
            } else {
                plan.delete.push(a.clone());
            }
        }
        for (a, owner) in &owners {
            if stored_map.get(a).copied() != Some(owner.as_str()) {
                plan.create.push((a.clone(), owner.clone()));
            }
        }
        plan.delete.sort();
        plan.delete.dedup();
        plan
    }

    fn range_of(&self, ip: IpAddr) -> Option<usize> {
        self.ranges.iter().position(|r| r.contains(ip))
    }

    fn range_of_family(&self, family: &str) -> Option<usize> {
        self.ranges.iter().position(|r| r.family() == family)
    }

    /// kube-apiserver's `initIPFamilyFields`: defaults `ipFamilyPolicy` and `ipFamilies` and checks
    /// them against the cluster's ranges.
    fn init_ip_family_fields(
        &self,
        spec: &mut ServiceSpec,
        old: Option<&ServiceSpec>,
    ) -> Result<(), Vec<FieldError>> {
        if let Some(old) = old
            && is_matching_prefer_dual_stack(spec, old)
        {
            return Ok(());
        }
        let headless =
            spec.cluster_ips.as_ref().and_then(|ips| ips.first()).map(String::as_str) == Some(NONE);
        let selectorless = spec.selector.as_ref().is_none_or(|s| s.is_empty());
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy = Some(match old.and_then(|o| o.ip_family_policy.clone()) {
                Some(policy) => policy,
                None if headless && selectorless => REQUIRE_DUAL_STACK.to_string(),
                None => SINGLE_STACK.to_string(),
            });
        }
        let policy = spec.ip_family_policy.clone().unwrap_or_default();
        let policy_value = format!("{policy:?}");
        let policy_path = FieldPath::new("spec").child("ipFamilyPolicy");
        if ![SINGLE_STACK, PREFER_DUAL_STACK, REQUIRE_DUAL_STACK].contains(&policy.as_str()) {
            return Err(vec![FieldError::not_supported(
                policy_path,
                policy_value,
                &[PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK],
            )]);
        }
        let mut errors = Vec::new();
        let mut families = spec.ip_families.clone().unwrap_or_default();
        let mut ips = spec.cluster_ips.clone().unwrap_or_default();

        if let Some(old) = old {
            let old_ips = old.cluster_ips.clone().unwrap_or_default();
            let old_families = old.ip_families.clone().unwrap_or_default();
            if policy == SINGLE_STACK {
                if ips == old_ips && ips.len() > 1 {
                    ips.truncate(1);
                }
                if families == old_families && families.len() > 1 {
                    families.truncate(1);
                }
            } else {
                if !ips.is_empty() && ips.len() < old_ips.len() {
                    errors.push(FieldError::invalid(
                        policy_path.clone(),
                        &policy_value,
                        "must be 'SingleStack' to release the secondary cluster IP",
                    ));
                }
                if !families.is_empty() && families.len() < old_families.len() {
                    errors.push(FieldError::invalid(
                        policy_path.clone(),
                        &policy_value,
                        "must be 'SingleStack' to release the secondary IP family",
                    ));
                }
            }
        }
        if policy == SINGLE_STACK {
            if ips.len() == 2 {
                errors.push(FieldError::invalid(policy_path.clone(), &policy_value, "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"));
            }
            if families.len() == 2 {
                errors.push(FieldError::invalid(policy_path.clone(), &policy_value, "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"));
            }
        }
        for family in &families {
            if family != IPV4 && family != IPV6 {
                errors.push(FieldError::not_supported(
                    FieldPath::new("spec").child("ipFamilies"),
                    format!("{family:?}"),
                    &[IPV4, IPV6],
                ));
            }
        }
        if families.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
            errors.push(FieldError::invalid(
                FieldPath::new("spec").child("ipFamilies"),
                render_list(&families),
                "must contain at most one entry per IP family",
            ));
        }
        let ips_path = FieldPath::new("spec").child("clusterIPs");
        for (i, ip) in ips.iter().enumerate() {
            if ip == NONE || ip.is_empty() {
                if ip == NONE && i > 0 {
                    errors.push(FieldError::invalid(
                        ips_path.index(i),
                        render_list(&ips),
                        "must be empty when the first value is 'None'",
                    ));
                }
                if ip == NONE {
                    break;
                }
                continue;
            }
            let Ok(addr) = ip.parse::<IpAddr>() else {
                errors.push(FieldError::invalid(
                    ips_path.index(i),
                    render_list(&ips),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
                continue;
            };
            let family = family_of(addr);
            match families.get(i) {
                Some(f) if f != family => {
                    errors.push(FieldError::invalid(
                        ips_path.index(i),
                        render_list(&ips),
                        format!("expected an {f} value as indicated by `ipFamilies[{i}]`"),
                    ));
                }
                Some(_) => {}
                None => {
                    if self.range_of_family(family).is_none() {
                        errors.push(FieldError::invalid(
                            ips_path.index(i),
                            render_list(&ips),
                            format!("{family} is not configured on this cluster"),
                        ));
                    } else {
                        families.push(family.to_string());
                    }
                }
            }
        }
        if ips.len() == 2
            && ips[0] != NONE
            && let (Ok(a), Ok(b)) = (ips[0].parse::<IpAddr>(), ips[1].parse::<IpAddr>())
            && family_of(a) == family_of(b)
        {
            errors.push(FieldError::invalid(
                ips_path.clone(),
                render_list(&ips),
                "may specify no more than one IP for each IP family",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let default_family = self.ranges[0].family().to_string();
        if headless && selectorless {
            if families.is_empty() {
                families.push(default_family);
            }
            if families.len() < 2 && policy != SINGLE_STACK {
                families.push(other_family(&families[0]).to_string());
            }
            spec.ip_families = Some(families);
            spec.cluster_ips = Some(ips);
            return Ok(());
        }
        if policy == REQUIRE_DUAL_STACK && self.ranges.len() < 2 {
            errors.push(FieldError::invalid(
                policy_path,
                &policy_value,
                "this cluster is not configured for dual-stack services",
            ));
        }
        for (i, family) in families.iter().enumerate() {
            if self.range_of_family(family).is_none() {
                errors.push(FieldError::invalid(
                    FieldPath::new("spec").child("ipFamilies").index(i),
                    format!("{family:?}"),
                    "not configured on this cluster",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if families.is_empty() {
            families.push(default_family);
        }
        if policy != SINGLE_STACK && families.len() == 1 && self.ranges.len() == 2 {
            families.push(other_family(&families[0]).to_string());
        }
        spec.ip_families = Some(families);
        spec.cluster_ips = Some(ips);
        Ok(())
    }

    /// Allocates `ips[from..]` per family (`""` or a missing entry means "any free address").
    fn alloc_cluster_ips(
        &mut self,
        ips: &mut Vec<String>,
        families: &[String],
        from: usize,
        is_kubernetes: bool,
        txn: &mut Reservation,
    ) -> Result<(), Vec<FieldError>> {
        while ips.len() < families.len() {
            ips.push(String::new());
        }
        let requested_list = render_list(ips);
        for i in from..families.len() {
            let Some(range_idx) = self.range_of_family(&families[i]) else {
                return Err(vec![FieldError::invalid(
                    FieldPath::new("spec").child("ipFamilies").index(i),
                    format!("{:?}", families[i]),
                    "not configured on this cluster",
                )]);
            };
            if ips[i].is_empty() {
                match self.next_free_ip(range_idx) {
                    Some(ip) => {
                        self.ips.insert(ip);
                        txn.allocate.push(Allocation::ClusterIp(ip));
                        ips[i] = ip.to_string();
                    }
                    None => {
                        return Err(vec![FieldError {
                            kind: FieldErrorKind::Internal,
                            field: FieldPath::new("spec").child("clusterIPs"),
                            value: None,
                            detail: "failed to allocate a serviceIP: range is full".to_string(),
                        }]);
                    }
                }
            } else {
                let fail = |detail: String| {
                    vec![FieldError::invalid(
                        FieldPath::new("spec").child("clusterIPs"),
                        &requested_list,
                        detail,
                    )]
                };
                let ip: IpAddr = ips[i]
                    .parse()
                    .map_err(|_| fail(format!("failed to parse service IP {:?}", ips[i])))?;
                let range = &self.ranges[range_idx];
                if !range.contains(ip) {
                    return Err(fail(format!(
                        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        range.net()
                    )));
                }
                let reserved = range_idx == 0 && ip == self.ranges[0].first() && !is_kubernetes;
                if reserved || self.ips.contains(&ip) {
                    return Err(fail(format!(
                        "failed to allocate IP {ip}: provided IP is already allocated"
                    )));
                }
                self.ips.insert(ip);
                txn.allocate.push(Allocation::ClusterIp(ip));
                ips[i] = ip.to_string();
            }
        }
        Ok(())
    }

    /// A random free address, preferring the dynamic (upper) band of KEP-3070 and never the
    /// address reserved for the `kubernetes` Service.
    fn next_free_ip(&mut self, range_idx: usize) -> Option<IpAddr> {
        let range = self.ranges[range_idx].clone();
        let reserved = if range_idx == 0 { Some(range.first()) } else { None };
        let taken = |offset: u128, ips: &BTreeSet<IpAddr>| {
            let ip = range.at(offset);
            ips.contains(&ip) || Some(ip) == reserved
        };
        let size = range.size();
        let static_size = range.static_size();
        let bands = [(static_size, size), (0, static_size)];
        for (lo, hi) in bands {
            if hi <= lo {
                continue;
            }
            let len = hi - lo;
            let start = self.rng.below(len);
            // Scan from a random start, wrapping once, as the bitmap allocator's random scan does.
            let mut offset = start;
            for _ in 0..len.min(1 << 20) {
                if !taken(lo + offset, &self.ips) {
                    return Some(range.at(lo + offset));
                }
                offset = (offset + 1) % len;
            }
        }
        None
    }

    fn take_node_port(
        &mut self,
        port: u16,
        path: FieldPath,
        txn: &mut Reservation,
    ) -> Result<(), Vec<FieldError>> {
        if !self.node_ports.contains(&port) {
            return Err(vec![FieldError::invalid(
                path,
                port,
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    self.node_ports.start(),
                    self.node_ports.end()
                ),
            )]);
        }
        if self.ports.contains(&port) {
            return Err(vec![FieldError::invalid(
                path,
                port,
                "provided port is already allocated",
            )]);
        }
        self.ports.insert(port);
        txn.allocate.push(Allocation::NodePort(port));
        Ok(())
    }

    /// A random free node port, preferring the dynamic (upper) band of KEP-3668.
    fn next_free_port(&mut self) -> Option<u16> {
        let lo = u32::from(*self.node_ports.start());
        let size = u32::from(*self.node_ports.end()) - lo + 1;
        let static_size = port_static_band_size(size);
        for (band_lo, band_hi) in [(static_size, size), (0, static_size)] {
            if band_hi <= band_lo {
                continue;
            }
            let len = band_hi - band_lo;
            let mut offset = self.rng.below(u128::from(len)) as u32;
            for _ in 0..len {
                let port = (lo + band_lo + offset) as u16;
                if !self.ports.contains(&port) {
                    return Some(port);
                }
                offset = (offset + 1) % len;
            }
        }
        None
    }

    fn alloc_any_node_port(
        &mut self,
        path: FieldPath,
        txn: &mut Reservation,
    ) -> Result<u16, Vec<FieldError>> {
        match self.next_free_port() {
            Some(port) => {
                self.ports.insert(port);
                txn.allocate.push(Allocation::NodePort(port));
                Ok(port)
            }
            None => Err(vec![FieldError {
                kind: FieldErrorKind::Internal,
                field: path,
                value: None,
                detail: "failed to allocate a nodePort: range is full".to_string(),
            }]),
        }
    }

    /// kube-apiserver's `initNodePorts`: one node port per service port number, so TCP and UDP
    /// of one port share it.
    fn alloc_node_ports_create(
        &mut self,
        spec: &mut ServiceSpec,
        txn: &mut Reservation,
    ) -> Result<(), Vec<FieldError>> {
        if !needs_node_port(spec) {
            return Ok(());
        }
        let allocate_new = should_allocate_node_ports(spec);
        let mut by_port: BTreeMap<i32, u16> = BTreeMap::new();
        let mut taken_here: BTreeSet<u16> = BTreeSet::new();
        let requested: Vec<(i32, Option<u16>)> =
            spec.ports.iter().flatten().map(|p| (p.port, p.node_port.and_then(port_u16))).collect();
        let ports = spec.ports.get_or_insert_with(Vec::new);
        for (i, service_port) in ports.iter_mut().enumerate() {
            let path = FieldPath::new("spec").child("ports").index(i).child("nodePort");
            let mine = service_port.node_port.and_then(port_u16);
            if mine.is_none() && !allocate_new {
                continue;
            }
            match by_port.get(&service_port.port).copied() {
                None => {
                    let np = mine.or_else(|| {
                        requested
                            .iter()
                            .find(|(p, np)| *p == service_port.port && np.is_some())
                            .and_then(|(_, np)| *np)
                    });
                    let np = match np {
                        Some(np) => {
                            if !taken_here.contains(&np) {
                                self.take_node_port(np, path, txn)?;
                            }
                            np
                        }
                        None => self.alloc_any_node_port(path, txn)?,
                    };
                    taken_here.insert(np);
                    service_port.node_port = Some(i32::from(np));
                    by_port.insert(service_port.port, np);
                }
                Some(np) => match mine {
                    None => service_port.node_port = Some(i32::from(np)),
                    Some(m) if m == np || taken_here.contains(&m) => {}
                    Some(m) => {
                        self.take_node_port(m, path, txn)?;
                        taken_here.insert(m);
                    }
                },
            }
        }
        Ok(())
    }

    /// kube-apiserver's `updateNodePorts`.
    fn update_node_ports(
        &mut self,
        spec: &mut ServiceSpec,
        old_ports: &[u16],
        txn: &mut Reservation,
    ) -> Result<(), Vec<FieldError>> {
        let allocate_new = should_allocate_node_ports(spec);
        let mut taken_here: BTreeSet<u16> = BTreeSet::new();
        let mut by_port: BTreeMap<i32, u16> = BTreeMap::new();
        let ports = spec.ports.get_or_insert_with(Vec::new);
        for (i, service_port) in ports.iter_mut().enumerate() {
            let path = FieldPath::new("spec").child("ports").index(i).child("nodePort");
            match service_port.node_port.and_then(port_u16) {
                Some(np) => {
                    if !old_ports.contains(&np) && !taken_here.contains(&np) {
                        self.take_node_port(np, path, txn)?;
                    }
                    taken_here.insert(np);
                    by_port.entry(service_port.port).or_insert(np);
                }
                None if !allocate_new => {}
                None => {
                    // A new port number of the same service port (TCP and UDP) shares its node port.
                    let np = match by_port.get(&service_port.port) {
                        Some(np) => *np,
                        None => self.alloc_any_node_port(path, txn)?,
                    };
                    taken_here.insert(np);
                    by_port.entry(service_port.port).or_insert(np);
                    service_port.node_port = Some(i32::from(np));
                }
            }
        }
        for old in old_ports {
            if !taken_here.contains(old) {
                txn.release.push(Allocation::NodePort(*old));
            }
        }
        Ok(())
    }

    fn alloc_health_check_node_port(
        &mut self,
        spec: &mut ServiceSpec,
        txn: &mut Reservation,
    ) -> Result<(), Vec<FieldError>> {
        let path = FieldPath::new("spec").child("healthCheckNodePort");
        match spec.health_check_node_port.and_then(port_u16) {
            Some(port) => {
                // The Service's own node ports may not double as its health check port.
                if node_port_numbers(spec).contains(&port) {
                    return Err(vec![FieldError::invalid(
                        path,
                        port,
                        "provided port is already allocated",
                    )]);
                }
                self.take_node_port(port, path, txn)
            }
            None => {
                let port = self.alloc_any_node_port(path, txn)?;
                spec.health_check_node_port = Some(i32::from(port));
                Ok(())
            }
        }
    }
}

/// Everything a stored Service holds: its cluster IPs, node ports and health check node port.
pub fn allocations_of(svc: &Service) -> Vec<Allocation> {
    let Some(spec) = svc.spec.as_ref() else { return Vec::new() };
    let mut out = cluster_ip_allocations(spec);
    for port in node_port_numbers(spec) {
        out.push(Allocation::NodePort(port));
    }
    if let Some(port) = spec.health_check_node_port.and_then(port_u16) {
        out.push(Allocation::NodePort(port));
    }
    out.sort();
    out.dedup();
    out
}

/// The owner string stored with a reservation: the Service's uid, or `namespace/name` if it has
/// none.
pub fn owner_of(svc: &Service) -> String {
    match svc.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => format!(
            "{}/{}",
            svc.metadata.namespace.as_deref().unwrap_or(""),
            svc.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

fn cluster_ip_allocations(spec: &ServiceSpec) -> Vec<Allocation> {
    if svc_type(spec) == "ExternalName" {
        return Vec::new();
    }
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()).map(Allocation::ClusterIp).collect()
}

fn node_port_numbers(spec: &ServiceSpec) -> Vec<u16> {
    let mut out: Vec<u16> =
        spec.ports.iter().flatten().filter_map(|p| p.node_port.and_then(port_u16)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn port_u16(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

fn spec_mut(svc: &mut Service) -> &mut ServiceSpec {
    svc.spec.get_or_insert_with(ServiceSpec::default)
}

fn svc_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

fn is_kubernetes_service(svc: &Service) -> bool {
    svc.metadata.namespace.as_deref() == Some("default")
        && svc.metadata.name.as_deref() == Some("kubernetes")
}

fn needs_node_port(spec: &ServiceSpec) -> bool {
    matches!(svc_type(spec), "NodePort" | "LoadBalancer")
}

fn should_allocate_node_ports(spec: &ServiceSpec) -> bool {
    match svc_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec.allocate_load_balancer_node_ports.unwrap_or(true),
        _ => false,
    }
}

/// `apiservice.NeedsHealthCheck`: LoadBalancer with externalTrafficPolicy Local.
pub fn needs_health_check(spec: &ServiceSpec) -> bool {
    svc_type(spec) == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local")
}

/// The API's legacy `clusterIP` and `clusterIPs[0]` describe one thing; fill whichever is empty.
fn sync_cluster_ip_fields(spec: &mut ServiceSpec) {
    let ip = spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
    let ips_empty = spec.cluster_ips.as_ref().is_none_or(|ips| ips.is_empty());
    match (ip, ips_empty) {
        (Some(ip), true) => spec.cluster_ips = Some(vec![ip]),
        (None, false) => {
            spec.cluster_ip = spec.cluster_ips.as_ref().and_then(|ips| ips.first().cloned())
        }
        _ => {}
    }
}

/// kube-apiserver's `patchAllocatedValues`: a PUT that omits allocated values keeps them.
fn patch_allocated_values(spec: &mut ServiceSpec, old: &ServiceSpec) {
    let needs_cluster_ip = |s: &ServiceSpec| svc_type(s) != "ExternalName";
    if needs_cluster_ip(old) && needs_cluster_ip(spec) {
        if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
            spec.cluster_ip = old.cluster_ip.clone();
        }
        if spec.cluster_ips.as_ref().is_none_or(|ips| ips.is_empty())
            && old.cluster_ips.as_ref().is_some_and(|ips| !ips.is_empty())
        {
            spec.cluster_ips = old.cluster_ips.clone();
        }
    }
    if needs_node_port(old) && needs_node_port(spec) {
        let used_old: BTreeSet<u16> = node_port_numbers(old).into_iter().collect();
        let used_new: BTreeSet<u16> = node_port_numbers(spec).into_iter().collect();
        let used: BTreeSet<u16> = used_old.intersection(&used_new).copied().collect();
        let by_name: BTreeMap<String, i32> = old
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.node_port.unwrap_or(0)))
            .collect();
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.unwrap_or(0) == 0
                && let Some(np) =
                    by_name.get(p.name.as_deref().unwrap_or("")).copied().and_then(port_u16)
                && !used.contains(&np)
            {
                p.node_port = Some(i32::from(np));
            }
        }
    }
    if needs_health_check(old)
        && needs_health_check(spec)
        && spec.health_check_node_port.unwrap_or(0) == 0
    {
        spec.health_check_node_port = old.health_check_node_port;
    }
}

/// kube-apiserver's `dropTypeDependentFields`: values the new type does not use are cleared when
/// the user left them as they were.
fn drop_type_dependent_fields(spec: &mut ServiceSpec, old: &ServiceSpec) {
    if svc_type(old) != "ExternalName" && svc_type(spec) == "ExternalName" {
        if spec.cluster_ips == old.cluster_ips
            || spec.cluster_ips.as_ref().is_some_and(|ips| ips.is_empty())
        {
            spec.cluster_ip = None;
            spec.cluster_ips = None;
        }
        if spec.ip_families == old.ip_families {
            spec.ip_families = None;
        }
        if spec.ip_family_policy == old.ip_family_policy {
            spec.ip_family_policy = None;
        }
    }
    if needs_node_port(old)
        && !needs_node_port(spec)
        && node_port_numbers(spec) == node_port_numbers(old)
    {
        for p in spec.ports.iter_mut().flatten() {
            p.node_port = None;
        }
    }
    if needs_health_check(old)
        && !needs_health_check(spec)
        && spec.health_check_node_port == old.health_check_node_port
    {
        spec.health_check_node_port = None;
    }
    if svc_type(spec) != "LoadBalancer"
        && spec.allocate_load_balancer_node_ports == old.allocate_load_balancer_node_ports
    {
        spec.allocate_load_balancer_node_ports = None;
    }
}

fn is_matching_prefer_dual_stack(spec: &ServiceSpec, old: &ServiceSpec) -> bool {
    if spec.ip_family_policy.is_none()
        || svc_type(old) != svc_type(spec)
        || !matches!(svc_type(spec), "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        return false;
    }
    if spec.ip_family_policy.as_deref() != Some(PREFER_DUAL_STACK) {
        return false;
    }
    if old.ip_family_policy.is_some() && old.ip_family_policy.as_deref() != Some(PREFER_DUAL_STACK)
    {
        return false;
    }
    spec.cluster_ips.clone().unwrap_or_default() == old.cluster_ips.clone().unwrap_or_default()
        && spec.ip_families.clone().unwrap_or_default()
            == old.ip_families.clone().unwrap_or_default()
}

fn family_of(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { IPV4 } else { IPV6 }
}

fn family_of_net(net: &ipnet::IpNet) -> &'static str {
    family_of(net.addr())
}

fn other_family(family: &str) -> &'static str {
    if family == IPV4 { IPV6 } else { IPV4 }
}

/// A `[]string` value as apimachinery renders it in a field error: `[]string{"10.96.0.5"}`.
fn render_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

/// A small deterministic generator for the random start of the free-address scan; the choice
/// only spreads allocations, so cryptographic quality is not needed.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: u128) -> u128 {
        if n == 0 {
            return 0;
        }
        u128::from(self.next()) % n
    }
}
