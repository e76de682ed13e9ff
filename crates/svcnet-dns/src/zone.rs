//! The cluster zone: an immutable snapshot of every record the Kubernetes DNS specification
//! (schema 1.1.0) asks for, built from plain Kubernetes objects, and the pure lookup over it.
//!
//! `Zone::build` turns Services, EndpointSlices, Pods and Namespaces into a map from owner name
//! to record sets; `Zone::answer` turns one question into an [`Answer`] (records, rcode and
//! negative-answer SOA) or says the name is not ours. Nothing here does I/O, and nothing fails:
//! objects that cannot become records are skipped and reported in [`Zone::warnings`].
//!
//! Where the specification is silent this follows CoreDNS's `kubernetes` plugin
//! (`plugin/kubernetes/kubernetes.go`, `handler.go`): an existing name without records of the
//! asked type is NODATA, `<ns>.svc.<zone>` of an existing namespace is NODATA, a headless Service
//! without ready endpoints is NXDOMAIN, a headless endpoint without a hostname is named by its
//! dashed IP, and reverse names the cluster does not own fall through to forwarding.
//! Left out: wildcard queries, the multicluster schema, zone transfers.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

mod builder;
mod sharded;

pub use builder::{ObjectKey, ZoneBuilder};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sharded::Sharded;

/// The schema version served in `dns-version.<zone>` TXT.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The label an EndpointSlice carries to name its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How `a-b-c-d.<ns>.pod.<zone>` names are answered (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodMode {
    /// Pod names are NXDOMAIN.
    #[default]
    Disabled,
    /// Any well-formed dashed IP in an existing namespace answers with that IP.
    Insecure,
    /// Only the IP of a pod that exists in that namespace answers.
    Verified,
}

impl std::str::FromStr for PodMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "disabled" => Ok(Self::Disabled),
            "insecure" => Ok(Self::Insecure),
            "verified" => Ok(Self::Verified),
            other => Err(format!(
                "unknown pods mode {other:?} (expected disabled, insecure or verified)"
            )),
        }
    }
}

/// What the zone needs of a pod: its namespace and IPs. Implemented for `Pod` and for the
/// compact [`PodIps`] the watch keeps (a whole `Pod` is over 2 KB even when emptied).
pub trait PodAddresses {
    /// The pod's namespace.
    fn namespace(&self) -> Option<&str>;
    /// The pod's IPs (`status.podIPs`, else `status.podIP`).
    fn ips(&self) -> Vec<IpAddr>;
}

impl PodAddresses for Pod {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }

    fn ips(&self) -> Vec<IpAddr> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        let mut ips: Vec<IpAddr> =
            status.pod_ips.iter().flatten().filter_map(|pod_ip| pod_ip.ip.parse().ok()).collect();
        if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
        ips
    }
}

/// The part of a pod the zone uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIps {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's IPs.
    pub ips: Vec<IpAddr>,
}

impl PodIps {
    /// The compact form of a pod.
    pub fn of(pod: &Pod) -> PodIps {
        PodIps { namespace: pod.metadata.namespace.clone().unwrap_or_default(), ips: pod.ips() }
    }
}

impl PodAddresses for PodIps {
    fn namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn ips(&self) -> Vec<IpAddr> {
        self.ips.clone()
    }
}

impl<T: PodAddresses + ?Sized> PodAddresses for &T {
    fn namespace(&self) -> Option<&str> {
        (**self).namespace()
    }

    fn ips(&self) -> Vec<IpAddr> {
        (**self).ips()
    }
}

impl<T: PodAddresses + ?Sized> PodAddresses for std::sync::Arc<T> {
    fn namespace(&self) -> Option<&str> {
        (**self).namespace()
    }

    fn ips(&self) -> Vec<IpAddr> {
        (**self).ips()
    }
}

/// What the zone is built with.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// The cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// TTL of every record, in seconds (CoreDNS default 5).
    pub ttl: u32,
    /// Pod record mode.
    pub pods: PodMode,
    /// Server-side search path (CoreDNS `autopath @kubernetes`).
    pub autopath: bool,
    /// SOA serial.
    pub serial: u32,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_string(),
            ttl: 5,
            pods: PodMode::Disabled,
            autopath: false,
            serial: 1,
        }
    }
}

/// The result of looking a question up in the zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The zone is authoritative for the name: records and rcode.
    Zone(ZoneAnswer),
    /// The name is not in the cluster zone (forward it, or refuse it).
    OutOfZone,
    /// Autopath: answer `cname` (the asked name → `target`) followed by the upstream answer for
    /// `target`, which is outside the cluster zone.
    Autopath {
        /// The CNAME from the asked name to `target`.
        cname: Box<Record>,
        /// The name to resolve upstream.
        target: Name,
    },
}

/// An authoritative answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneAnswer {
    /// NOERROR (with answers, or NODATA without) or NXDOMAIN.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section (the SOA of negative answers).
    pub authorities: Vec<Record>,
    /// Additional section (addresses of SRV targets).
    pub additionals: Vec<Record>,
}

/// Record sets of one owner name; empty for an empty non-terminal such as `svc.<zone>`.
/// Record sets of one owner name; empty for an empty non-terminal such as `svc.<zone>`.
/// `refs` counts the contributions (the fixed apex, a namespace, a Service) that need the name,
/// as an owner of their records, an ancestor of one, or a name that must exist; the name goes
/// when the last of them does.
#[derive(Clone, Debug, Default)]
struct Node {
    rrsets: Vec<(RecordType, Vec<Record>)>,
    refs: u32,
}

impl Node {
    fn push(&mut self, record: Record) {
        let record_type = record.record_type();
        match self.rrsets.iter_mut().find(|(t, _)| *t == record_type) {
            Some((_, records)) => {
                if !records.contains(&record) {
                    records.push(record);
                }
            }
            None => self.rrsets.push((record_type, vec![record])),
        }
    }

    fn remove(&mut self, record: &Record) {
        let record_type = record.record_type();
        if let Some(index) = self.rrsets.iter().position(|(t, _)| *t == record_type) {
            let records = &mut self.rrsets[index].1;
            records.retain(|r| r != record);
            if records.is_empty() {
                self.rrsets.swap_remove(index);
            }
        }
    }

    fn get(&self, record_type: RecordType) -> &[Record] {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == record_type)
            .map_or(&[], |(_, records)| records.as_slice())
    }

    fn all(&self) -> impl Iterator<Item = &Record> {
        self.rrsets.iter().flat_map(|(_, records)| records.iter())
    }
}

/// Shards of the name map and of the pod IP map: enough that a change copies a few dozen
/// entries, few enough that the shard index costs nothing to copy.
const N_SHARDS: usize = 1024;

/// An immutable snapshot of the cluster zone. Cloning one is cheap (the maps are
/// [`Sharded`]); [`ZoneBuilder`] changes a clone and shares everything it does not touch.
#[derive(Clone, Debug)]
pub struct Zone {
    origin: Name,
    ttl: u32,
    pods: PodMode,
    autopath: bool,
    soa: Record,
    reverse_v4_soa: Record,
    reverse_v6_soa: Record,
    nodes: Sharded<Name, Node>,
    /// Namespaces that exist (Namespace objects, plus those holding a Service).
    namespaces: Arc<HashSet<String>>,
    /// Pod IP → namespace of each pod with that IP (verified pod mode and autopath); a
    /// namespace appears once per pod, so that removing one pod is exact.
    pod_namespaces: Sharded<IpAddr, Vec<Arc<str>>>,
    n_services: usize,
    warnings: Vec<String>,
}

/// What one object adds to the zone: records, names that must exist without records, and
/// complaints. A Service's contribution depends only on the Service and its EndpointSlices, so
/// it can be taken out again by recomputing it from the same objects.
#[derive(Debug, Default)]
struct Contribution {
    /// Whether the object has a DNS name (a Service that has none is not counted).
    named: bool,
    records: Vec<Record>,
    names: Vec<Name>,
    warnings: Vec<String>,
}

impl Contribution {
    /// A reverse (PTR) record; its owner is outside the origin, so it has no non-terminals.
    fn ptr(&mut self, ttl: u32, ip: IpAddr, target: &Name) {
        self.records.push(Record::from_rdata(Name::from(ip), ttl, RData::PTR(PTR(target.clone()))));
    }
}

fn name(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?.to_lowercase();
    name.set_fqdn(true);
    Some(name)
}

fn child(label: &str, parent: &Name) -> Option<Name> {
    Name::from_ascii(label).ok()?.to_lowercase().append_domain(parent).ok()
}

fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn soa_record(owner: Name, origin: &Name, ttl: u32, serial: u32) -> Record {
    let mname = child("ns.dns", origin).unwrap_or_else(|| origin.clone());
    let rname = child("hostmaster", origin).unwrap_or_else(|| origin.clone());
    Record::from_rdata(
        owner,
        ttl,
        RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, ttl)),
    )
}

fn address_record(owner: Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(owner, ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(owner, ttl, RData::AAAA(AAAA(v6))),
    }
}

/// One port of a Service or EndpointSlice, in DNS terms.
struct NamedPort {
    name: String,
    protocol: String,
    port: u16,
}

/// One endpoint address of a headless Service.
struct HeadlessEndpoint {
    hostname: String,
    ip: IpAddr,
    ports: std::rc::Rc<Vec<NamedPort>>,
}

/// The `(namespace, name)` a Service is found under, lowercased as its DNS name is.
fn service_key(service: &Service) -> Option<(String, String)> {
    let (Some(ns), Some(service_name)) = (&service.metadata.namespace, &service.metadata.name)
    else {
        return None;
    };
    Some((ns.to_ascii_lowercase(), service_name.to_ascii_lowercase()))
}

/// One shared lowercase string per namespace.
fn intern(interned: &mut HashMap<String, Arc<str>>, ns: &str) -> Arc<str> {
    match interned.get(ns) {
        Some(ns) => ns.clone(),
        None => {
            let lower: Arc<str> = ns.to_ascii_lowercase().into();
            interned.insert(ns.to_string(), lower.clone());
            lower
        }
    }
}

/// Whether a Service's records depend on its EndpointSlices (headless Services only).
fn uses_endpoint_slices(service: &Service) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    let first = spec.cluster_ips.iter().flatten().next().or(spec.cluster_ip.as_ref());
    first.is_some_and(|ip| ip == "None")
}

/// The `(namespace, service name)` an EndpointSlice belongs to, lowercased.
fn slice_service_key(slice: &EndpointSlice) -> Option<(String, String)> {
    let (Some(ns), Some(service_name)) = (
        &slice.metadata.namespace,
        slice.metadata.labels.as_ref().and_then(|labels| labels.get(SERVICE_NAME_LABEL)),
    ) else {
        return None;
    };
    Some((ns.to_ascii_lowercase(), service_name.to_ascii_lowercase()))
}

impl Zone {
    /// Builds the zone from the cluster's objects. Never fails; unusable objects are skipped
    /// and listed in [`Zone::warnings`].
    /// Generic over `Borrow` so a reflector's `Arc<K>` snapshots work without copies.
    pub fn build<S, E, P, N>(
        services: &[S],
        endpoint_slices: &[E],
        pods: &[P],
        namespaces: &[N],
        config: &ZoneConfig,
    ) -> Zone
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
        P: PodAddresses,
        N: Borrow<Namespace>,
    {
        // About four owner names per Service (name, PTR, SRV, `_proto` non-terminal) and two
        // per endpoint: sized once, so the build never rehashes (hashing a name is costly).
        let n_names = 64
            + 4 * services.len()
            + 2 * endpoint_slices.iter().map(|slice| slice.borrow().endpoints.len()).sum::<usize>();
        let n_pods =
            if config.pods == PodMode::Verified || config.autopath { pods.len() } else { 0 };
        let mut zone = Zone::base(config, n_names, n_pods);

        let mut namespace_set: HashSet<String> = HashSet::new();
        for namespace in namespaces {
            if let Some(ns) = &namespace.borrow().metadata.name {
                namespace_set.insert(ns.to_ascii_lowercase());
            }
        }
        for service in services {
            if let Some(ns) = &service.borrow().metadata.namespace {
                namespace_set.insert(ns.to_ascii_lowercase());
            }
        }
        for ns in &namespace_set {
            zone.set_namespace(ns, true);
        }

        if zone.tracks_pods() {
            // One shared string per namespace, not one per pod.
            let mut interned: HashMap<String, Arc<str>> = HashMap::new();
            for pod in pods {
                let Some(ns) = pod.namespace() else {
                    continue;
                };
                let ns = intern(&mut interned, ns);
                zone.add_pod(&ns, &pod.ips());
            }
        }

        // EndpointSlices grouped by (namespace, service name).
        let mut slices_by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in endpoint_slices {
            let slice = slice.borrow();
            if let Some(key) = slice_service_key(slice) {
                slices_by_service.entry(key).or_default().push(slice);
            }
        }
        // In name order, as `ZoneBuilder` keeps them: an endpoint in two slices takes the
        // ports of the first.
        for slices in slices_by_service.values_mut() {
            slices.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
        }
        for service in services {
            let service = service.borrow();
            let Some(key) = service_key(service) else {
                continue;
            };
            let slices = slices_by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
            zone.add_service(service, slices);
        }
        zone
    }

    /// The apex, `dns-version` and the fixed empty non-terminals, with maps sized for
    /// `n_names` owner names and `n_pods` pods.
    fn base(config: &ZoneConfig, n_names: usize, n_pods: usize) -> Zone {
        let domain = config.cluster_domain.trim_end_matches('.');
        let mut warnings = Vec::new();
        let origin = name(&format!("{domain}.")).unwrap_or_else(|| {
            warnings.push(format!("invalid cluster domain {domain:?}, using cluster.local"));
            name("cluster.local.").unwrap_or_else(Name::root)
        });
        let ttl = config.ttl;
        let soa = soa_record(origin.clone(), &origin, ttl, config.serial);
        let reverse_v4_soa = soa_record(
            name("in-addr.arpa.").unwrap_or_else(Name::root),
            &origin,
            ttl,
            config.serial,
        );
        let reverse_v6_soa =
            soa_record(name("ip6.arpa.").unwrap_or_else(Name::root), &origin, ttl, config.serial);
        let mut zone = Zone {
            origin: origin.clone(),
            ttl,
            pods: config.pods,
            autopath: config.autopath,
            soa: soa.clone(),
            reverse_v4_soa,
            reverse_v6_soa,
            nodes: Sharded::with_capacity(N_SHARDS, n_names),
            namespaces: Arc::default(),
            pod_namespaces: Sharded::with_capacity(N_SHARDS, n_pods),
            n_services: 0,
            warnings,
        };
        let mut apex = Contribution::default();
        apex.records.push(soa);
        if let Some(ns_target) = child("ns.dns", &origin) {
            apex.records.push(Record::from_rdata(origin.clone(), ttl, RData::NS(NS(ns_target))));
        }
        if let Some(version) = child("dns-version", &origin) {
            apex.records.push(Record::from_rdata(
                version,
                ttl,
                RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
            ));
        }
        apex.names.extend(child("svc", &origin));
        apex.names.extend(child("pod", &origin));
        zone.apply_contribution(&apex, true);
        zone
    }

    /// A zone with no objects: the apex, `dns-version` and nothing else.
    pub fn empty(config: &ZoneConfig) -> Zone {
        Zone::base(config, 64, 0)
    }

    /// Sets the SOA serial of the zone and of the reverse zones.
    fn set_serial(&mut self, serial: u32) {
        let with_serial = |record: &Record| {
            let mut record = record.clone();
            if let RData::SOA(soa) = &mut record.data {
                soa.serial = serial;
            }
            record
        };
        let soa = with_serial(&self.soa);
        if soa == self.soa {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&self.origin.clone()) {
            node.remove(&self.soa);
            node.push(soa.clone());
        }
        self.soa = soa;
        self.reverse_v4_soa = with_serial(&self.reverse_v4_soa);
        self.reverse_v6_soa = with_serial(&self.reverse_v6_soa);
    }

    /// Whether the zone keeps pod IPs (verified pod records or autopath).
    fn tracks_pods(&self) -> bool {
        self.pods == PodMode::Verified || self.autopath
    }

    /// The names a contribution needs: owners of its records, their ancestors inside the
    /// origin (empty non-terminals), and its bare names; each once.
    fn contribution_names(&self, contribution: &Contribution) -> Vec<Name> {
        let origin_labels = self.origin.num_labels();
        let mut names: Vec<Name> = contribution.names.clone();
        for record in &contribution.records {
            if names.last() != Some(&record.name) {
                names.push(record.name.clone());
            }
            if !self.origin.zone_of(&record.name) {
                continue;
            }
            let mut parent = record.name.base_name();
            while parent.num_labels() > origin_labels {
                let next = parent.base_name();
                names.push(parent);
                parent = next;
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Adds (`add`) or takes out a contribution. Taking one out needs the same contribution
    /// that was added (recomputed from the same objects).
    fn apply_contribution(&mut self, contribution: &Contribution, add: bool) {
        let names = self.contribution_names(contribution);
        if add {
            for owner in &names {
                self.nodes.get_or_default(owner).refs += 1;
            }
            for record in &contribution.records {
                self.nodes.get_or_default(&record.name).push(record.clone());
            }
        } else {
            for record in &contribution.records {
                if let Some(node) = self.nodes.get_mut(&record.name) {
                    node.remove(record);
                }
            }
            for owner in &names {
                let gone = match self.nodes.get_mut(owner) {
                    Some(node) => {
                        node.refs = node.refs.saturating_sub(1);
                        node.refs == 0
                    }
                    None => false,
                };
                if gone {
                    self.nodes.remove(owner);
                }
            }
        }
    }

    /// Makes namespace `ns` (lowercase) exist or not: `<ns>.svc.<zone>` and pod names in it.
    fn set_namespace(&mut self, ns: &str, exists: bool) {
        if self.namespaces.contains(ns) == exists {
            return;
        }
        let namespaces = Arc::make_mut(&mut self.namespaces);
        if exists {
            namespaces.insert(ns.to_string());
        } else {
            namespaces.remove(ns);
        }
        let mut contribution = Contribution::default();
        match child("svc", &self.origin).and_then(|svc_apex| child(ns, &svc_apex)) {
            Some(ns_name) => contribution.names.push(ns_name),
            None => contribution.warnings.push(format!("namespace {ns:?} is not a DNS label")),
        }
        self.warnings.append(&mut contribution.warnings);
        self.apply_contribution(&contribution, exists);
    }

    /// Records one pod's IPs in namespace `ns`.
    fn add_pod(&mut self, ns: &Arc<str>, ips: &[IpAddr]) {
        for ip in ips {
            self.pod_namespaces.get_or_default(ip).push(ns.clone());
        }
    }

    /// Forgets one pod's IPs in namespace `ns`.
    fn remove_pod(&mut self, ns: &str, ips: &[IpAddr]) {
        for ip in ips {
            let Some(namespaces) = self.pod_namespaces.get_mut(ip) else {
                continue;
            };
            if let Some(index) = namespaces.iter().position(|n| **n == *ns) {
                namespaces.swap_remove(index);
            }
            if namespaces.is_empty() {
                self.pod_namespaces.remove(ip);
            }
        }
    }

    /// The contribution of one Service and its EndpointSlices.
    fn service_contribution(&self, service: &Service, slices: &[&EndpointSlice]) -> Contribution {
        let mut contribution = Contribution::default();
        let (ns, service_name) = (&service.metadata.namespace, &service.metadata.name);
        let owner = service_key(service).and_then(|(ns, service_name)| {
            child("svc", &self.origin)
                .and_then(|svc_apex| child(&ns, &svc_apex))
                .and_then(|ns_name| child(&service_name, &ns_name))
        });
        let Some(owner) = owner else {
            if let (Some(ns), Some(service_name)) = (ns, service_name) {
                contribution
                    .warnings
                    .push(format!("service {ns}/{service_name} is not a DNS name"));
            }
            return contribution;
        };
        contribution.named = true;
        self.service_records(&mut contribution, service, owner, slices);
        contribution
    }

    /// Adds a Service (with its EndpointSlices) to the zone.
    fn add_service(&mut self, service: &Service, slices: &[&EndpointSlice]) {
        let mut contribution = self.service_contribution(service, slices);
        if contribution.named {
            self.n_services += 1;
        }
        self.warnings.append(&mut contribution.warnings);
        self.apply_contribution(&contribution, true);
    }

    /// Takes a Service (with the EndpointSlices it was added with) out of the zone.
    fn remove_service(&mut self, service: &Service, slices: &[&EndpointSlice]) {
        let contribution = self.service_contribution(service, slices);
        if contribution.named {
            self.n_services = self.n_services.saturating_sub(1);
        }
        self.apply_contribution(&contribution, false);
    }

    fn service_records(
        &self,
        c: &mut Contribution,
        service: &Service,
        owner: Name,
        slices: &[&EndpointSlice],
    ) {
        let Some(spec) = &service.spec else {
            return;
        };
        let ttl = self.ttl;
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec
                .external_name
                .as_deref()
                .map(|target| format!("{}.", target.trim_end_matches('.')))
                .and_then(|target| name(&target));
            match target {
                Some(target) => {
                    c.records.push(Record::from_rdata(owner, ttl, RData::CNAME(CNAME(target))))
                }
                None => c.warnings.push(format!(
                    "service {owner} has an invalid externalName {:?}",
                    spec.external_name
                )),
            }
            return;
        }

        let mut cluster_ips: Vec<&str> =
            spec.cluster_ips.iter().flatten().map(String::as_str).collect();
        if cluster_ips.is_empty()
            && let Some(cluster_ip) = &spec.cluster_ip
        {
            cluster_ips.push(cluster_ip.as_str());
        }
        let headless = cluster_ips.first().is_some_and(|ip| *ip == "None");
        if !headless {
            let ips: Vec<IpAddr> = cluster_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            if ips.is_empty() {
                // Not allocated yet: the name exists but has no addresses.
                c.names.push(owner);
                return;
            }
            for ip in &ips {
                c.records.push(address_record(owner.clone(), ttl, *ip));
                c.ptr(self.ttl, *ip, &owner);
            }
            for port in spec.ports.iter().flatten() {
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let Ok(port_number) = u16::try_from(port.port) else {
                    continue;
                };
                self.add_srv(c, &owner, (port_name, protocol, port_number), owner.clone(), 100);
            }
            return;
        }

        // Headless: ready endpoints (all of them with publishNotReadyAddresses).
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let mut endpoints: Vec<HeadlessEndpoint> = Vec::new();
        let mut seen: HashSet<(String, IpAddr)> = HashSet::new();
        for slice in slices {
            let ports: std::rc::Rc<Vec<NamedPort>> = std::rc::Rc::new(
                slice
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|port| {
                        Some(NamedPort {
                            name: port.name.clone().filter(|n| !n.is_empty())?,
                            protocol: port.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                            port: u16::try_from(port.port?).ok()?,
                        })
                    })
                    .collect(),
            );
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|conditions| conditions.ready)
                    .unwrap_or(true);
                if !ready && !publish_not_ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let hostname = endpoint
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(str::to_ascii_lowercase)
                        .unwrap_or_else(|| dashed(ip));
                    if seen.insert((hostname.clone(), ip)) {
                        endpoints.push(HeadlessEndpoint { hostname, ip, ports: ports.clone() });
                    }
                }
            }
        }
        if endpoints.is_empty() {
            // The specification: no ready endpoints → NXDOMAIN, so the name is not inserted.
            return;
        }
        let mut srv_counts: HashMap<(String, String), u32> = HashMap::new();
        for endpoint in &endpoints {
            for port in endpoint.ports.iter() {
                *srv_counts.entry((port.name.clone(), port.protocol.clone())).or_default() += 1;
            }
        }
        let mut ips_done: BTreeSet<IpAddr> = BTreeSet::new();
        for endpoint in &endpoints {
            if ips_done.insert(endpoint.ip) {
                c.records.push(address_record(owner.clone(), ttl, endpoint.ip));
            }
            let Some(host_owner) = child(&endpoint.hostname, &owner) else {
                c.warnings.push(format!(
                    "endpoint hostname {:?} of {owner} is not a DNS label",
                    endpoint.hostname
                ));
                continue;
            };
            c.records.push(address_record(host_owner.clone(), ttl, endpoint.ip));
            c.ptr(self.ttl, endpoint.ip, &host_owner);
            for port in endpoint.ports.iter() {
                let n_records = srv_counts
                    .get(&(port.name.clone(), port.protocol.clone()))
                    .copied()
                    .unwrap_or(1)
                    .max(1);
                let weight = u16::try_from((100 / n_records).max(1)).unwrap_or(1);
                self.add_srv(
                    c,
                    &owner,
                    (&port.name, &port.protocol, port.port),
                    host_owner.clone(),
                    weight,
                );
            }
        }
    }

    fn add_srv(
        &self,
        c: &mut Contribution,
        service_owner: &Name,
        (port_name, protocol, port): (&str, &str, u16),
        target: Name,
        weight: u16,
    ) {
        let owner = child(
            &format!("_{}._{}", port_name.to_ascii_lowercase(), protocol.to_ascii_lowercase()),
            service_owner,
        );
        match owner {
            Some(owner) => c.records.push(Record::from_rdata(
                owner,
                self.ttl,
                RData::SRV(SRV::new(0, weight, port, target)),
            )),
            None => c
                .warnings
                .push(format!("port name {port_name:?} of {service_owner} is not a DNS label")),
        }
    }

    /// Objects that could not become records.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The zone origin, e.g. `cluster.local.`.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Number of Services in the zone.
    pub fn n_services(&self) -> usize {
        self.n_services
    }

    /// Number of owner names (including empty non-terminals and reverse names).
    pub fn n_names(&self) -> usize {
        self.nodes.len()
    }

    /// Whether autopath is on (answers to pods then depend on the asking pod).
    pub fn autopath_enabled(&self) -> bool {
        self.autopath
    }

    /// The SOA record of the cluster zone.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Answers one question from `client`. Pure: the same zone, question and client always give
    /// the same answer.
    pub fn answer(&self, query: &Query, client: IpAddr) -> Answer {
        let qname = query.name();
        let in_zone = self.origin.zone_of(qname);
        if !in_zone {
            return self.answer_reverse(query);
        }
        let mut answer = self.lookup(qname, query.query_type());
        if answer.rcode == ResponseCode::NXDomain
            && self.autopath
            && let Some(autopath) = self.autopath(query, client)
        {
            return autopath;
        }
        if answer.answers.is_empty() {
            answer.authorities.push(self.soa.clone());
        }
        Answer::Zone(answer)
    }

    fn answer_reverse(&self, query: &Query) -> Answer {
        let qname = query.name();
        let Some(node) = self.nodes.get(qname) else {
            return Answer::OutOfZone;
        };
        let mut answer = ZoneAnswer::default();
        Self::collect(node, query.query_type(), &mut answer.answers);
        if answer.answers.is_empty() {
            let v6 = name("ip6.arpa.").is_some_and(|apex| apex.zone_of(qname));
            answer.authorities.push(if v6 {
                self.reverse_v6_soa.clone()
            } else {
                self.reverse_v4_soa.clone()
            });
        }
        Answer::Zone(answer)
    }

    fn collect(node: &Node, record_type: RecordType, out: &mut Vec<Record>) {
        if record_type == RecordType::ANY {
            out.extend(node.all().cloned());
        } else {
            out.extend_from_slice(node.get(record_type));
        }
    }

    /// Looks a name up inside the origin, following in-zone CNAMEs once. No SOA is added.
    fn lookup(&self, qname: &Name, record_type: RecordType) -> ZoneAnswer {
        let mut answer = ZoneAnswer::default();
        let Some(node) = self.nodes.get(qname) else {
            return self.lookup_pod(qname, record_type);
        };
        let cname = node.get(RecordType::CNAME);
        if let Some(cname_record) = cname.first()
            && record_type != RecordType::CNAME
            && record_type != RecordType::ANY
        {
            answer.answers.push(cname_record.clone());
            if let RData::CNAME(CNAME(target)) = &cname_record.data
                && self.origin.zone_of(target)
                && let Some(target_node) = self.nodes.get(target)
            {
                Self::collect(target_node, record_type, &mut answer.answers);
            }
            return answer;
        }
        Self::collect(node, record_type, &mut answer.answers);
        if matches!(record_type, RecordType::SRV | RecordType::ANY) {
            let mut targets: Vec<&Name> = Vec::new();
            for record in &answer.answers {
                if let RData::SRV(srv) = &record.data
                    && !targets.contains(&&srv.target)
                {
                    targets.push(&srv.target);
                }
            }
            for target in targets {
                if let Some(target_node) = self.nodes.get(target) {
                    answer.additionals.extend_from_slice(target_node.get(RecordType::A));
                    answer.additionals.extend_from_slice(target_node.get(RecordType::AAAA));
                }
            }
        }
        answer
    }

    /// `<dashed-ip>.<ns>.pod.<zone>`, and NXDOMAIN for anything else that is not in the map.
    fn lookup_pod(&self, qname: &Name, record_type: RecordType) -> ZoneAnswer {
        let nxdomain = ZoneAnswer { rcode: ResponseCode::NXDomain, ..ZoneAnswer::default() };
        let origin_labels = usize::from(self.origin.num_labels());
        let labels: Vec<&[u8]> = qname.iter().collect();
        if self.pods == PodMode::Disabled || labels.len() < origin_labels + 2 {
            return nxdomain;
        }
        let n_local = labels.len() - origin_labels;
        if !labels[n_local - 1].eq_ignore_ascii_case(b"pod") {
            return nxdomain;
        }
        let ns = String::from_utf8_lossy(labels[n_local - 2]).to_ascii_lowercase();
        if !self.namespaces.contains(&ns) {
            return nxdomain;
        }
        match n_local {
            // `<ns>.pod.<zone>` of an existing namespace is NODATA.
            2 => ZoneAnswer::default(),
            3 => {
                let Some(ip) = parse_dashed(labels[0]) else {
                    return nxdomain;
                };
                if self.pods == PodMode::Verified
                    && !self
                        .pod_namespaces
                        .get(&ip)
                        .is_some_and(|namespaces| namespaces.iter().any(|n| **n == *ns))
                {
                    return nxdomain;
                }
                let record = address_record(qname.to_lowercase(), self.ttl, ip);
                let mut answer = ZoneAnswer::default();
                if record_type == record.record_type() || record_type == RecordType::ANY {
                    answer.answers.push(record);
                }
                answer
            }
            _ => nxdomain,
        }
    }

    /// CoreDNS `autopath @kubernetes`: a question for `<name>.<ns>.svc.<zone>` from a pod in
    /// `<ns>` walks the rest of the pod's search path here instead of in the client.
    fn autopath(&self, query: &Query, client: IpAddr) -> Option<Answer> {
        let qname = query.name();
        let namespaces = self.pod_namespaces.get(&client)?;
        let svc_apex = child("svc", &self.origin)?;
        let origin_labels = usize::from(self.origin.num_labels());
        let n_labels = usize::from(qname.num_labels());
        // At least one label of `name` before `<ns>.svc.<zone>`.
        if n_labels < origin_labels + 3 {
            return None;
        }
        let suffix = qname.trim_to(origin_labels + 2);
        let ns = suffix.iter().next()?;
        let ns = String::from_utf8_lossy(ns).to_ascii_lowercase();
        if !namespaces.iter().any(|n| **n == *ns)
            || !svc_apex.zone_of(&suffix)
            || suffix.base_name() != svc_apex
        {
            return None;
        }
        let labels: Vec<&[u8]> = qname.iter().take(n_labels - origin_labels - 2).collect();
        let mut bare = Name::from_labels(labels).ok()?.to_lowercase();
        bare.set_fqdn(true);
        let cname_to = |target: &Name| {
            Record::from_rdata(qname.clone(), self.ttl, RData::CNAME(CNAME(target.clone())))
        };
        if self.origin.zone_of(&bare) {
            return None;
        }
        // The rest of the cluster search path: `<name>.svc.<zone>`, `<name>.<zone>`.
        for parent in [&svc_apex, &self.origin] {
            let Ok(candidate) = bare.clone().append_domain(parent) else {
                continue;
            };
            let found = self.lookup(&candidate, query.query_type());
            if found.rcode == ResponseCode::NoError {
                let mut answer = found;
                answer.answers.insert(0, cname_to(&candidate));
                return Some(Answer::Zone(answer));
            }
        }
        Some(Answer::Autopath { cname: Box::new(cname_to(&bare)), target: bare })
    }

    /// The namespaces of the pods with this IP (for autopath and verified pod records).
    pub fn pod_namespaces(&self, ip: IpAddr) -> &[Arc<str>] {
        self.pod_namespaces.get(&ip).map_or(&[], Vec::as_slice)
    }
}

/// `10-0-0-1` → 10.0.0.1; `fd00--1` → fd00::1.
fn parse_dashed(label: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(label).ok()?;
    let dots = text.replace('-', ".");
    if let Ok(v4) = dots.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    text.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests;
