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
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

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
#[derive(Clone, Debug, Default)]
struct Node {
    rrsets: Vec<(RecordType, Vec<Record>)>,
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

/// An immutable snapshot of the cluster zone.
#[derive(Clone, Debug)]
pub struct Zone {
    origin: Name,
    ttl: u32,
    pods: PodMode,
    autopath: bool,
    soa: Record,
    reverse_v4_soa: Record,
    reverse_v6_soa: Record,
    nodes: HashMap<Name, Node>,
    /// Namespaces that exist (Namespace objects, plus those holding a Service).
    namespaces: HashSet<String>,
    /// Pod IP → namespaces of the pods with that IP (verified pod mode and autopath).
    pod_namespaces: HashMap<IpAddr, Vec<Arc<str>>>,
    n_services: usize,
    warnings: Vec<String>,
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
            // About four owner names per Service (name, PTR, SRV, `_proto` non-terminal) and two
            // per endpoint: sized once, so the build never rehashes (hashing a name is costly).
            nodes: HashMap::with_capacity(
                64 + 4 * services.len()
                    + 2 * endpoint_slices
                        .iter()
                        .map(|slice| slice.borrow().endpoints.len())
                        .sum::<usize>(),
            ),
            namespaces: HashSet::new(),
            pod_namespaces: HashMap::new(),
            n_services: 0,
            warnings,
        };

        // The apex, the schema version and the fixed empty non-terminals.
        zone.insert(soa);
        if let Some(ns_target) = child("ns.dns", &origin) {
            zone.insert(Record::from_rdata(origin.clone(), ttl, RData::NS(NS(ns_target))));
        }
        if let Some(version) = child("dns-version", &origin) {
            zone.insert(Record::from_rdata(
                version,
                ttl,
                RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
            ));
        }
        let svc_apex = child("svc", &origin);
        let pod_apex = child("pod", &origin);
        for apex in [&svc_apex, &pod_apex].into_iter().flatten() {
            zone.nodes.entry(apex.clone()).or_default();
        }

        for namespace in namespaces {
            let namespace = namespace.borrow();
            if let Some(ns) = &namespace.metadata.name {
                zone.namespaces.insert(ns.to_ascii_lowercase());
            }
        }
        for service in services {
            let service = service.borrow();
            if let Some(ns) = &service.metadata.namespace {
                zone.namespaces.insert(ns.to_ascii_lowercase());
            }
        }
        if let Some(svc_apex) = &svc_apex {
            let namespaces: Vec<String> = zone.namespaces.iter().cloned().collect();
            for ns in namespaces {
                match child(&ns, svc_apex) {
                    Some(ns_name) => zone.ensure_node(ns_name),
                    None => zone.warnings.push(format!("namespace {ns:?} is not a DNS label")),
                }
            }
        }

        if config.pods == PodMode::Verified || config.autopath {
            // One shared string per namespace, not one per pod.
            let mut interned: HashMap<String, Arc<str>> = HashMap::new();
            zone.pod_namespaces.reserve(pods.len());
            for pod in pods {
                let Some(ns) = pod.namespace() else {
                    continue;
                };
                let ns = match interned.get(ns) {
                    Some(ns) => ns.clone(),
                    None => {
                        let lower: Arc<str> = ns.to_ascii_lowercase().into();
                        interned.insert(ns.to_string(), lower.clone());
                        lower
                    }
                };
                for ip in pod.ips() {
                    let entry = zone.pod_namespaces.entry(ip).or_default();
                    if !entry.contains(&ns) {
                        entry.push(ns.clone());
                    }
                }
            }
        }

        // EndpointSlices grouped by (namespace, service name).
        let mut slices_by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in endpoint_slices {
            let slice = slice.borrow();
            let (Some(ns), Some(service_name)) = (
                &slice.metadata.namespace,
                slice.metadata.labels.as_ref().and_then(|labels| labels.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            slices_by_service
                .entry((ns.to_ascii_lowercase(), service_name.to_ascii_lowercase()))
                .or_default()
                .push(slice);
        }

        if let Some(svc_apex) = &svc_apex {
            for service in services {
                let service = service.borrow();
                let (Some(ns), Some(service_name)) =
                    (&service.metadata.namespace, &service.metadata.name)
                else {
                    continue;
                };
                let key = (ns.to_ascii_lowercase(), service_name.to_ascii_lowercase());
                let slices = slices_by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
                let Some(service_owner) =
                    child(&key.0, svc_apex).and_then(|ns_name| child(&key.1, &ns_name))
                else {
                    zone.warnings.push(format!("service {ns}/{service_name} is not a DNS name"));
                    continue;
                };
                zone.n_services += 1;
                zone.add_service(service, service_owner, slices);
            }
        }
        zone
    }

    /// A zone with no objects: the apex, `dns-version` and nothing else.
    pub fn empty(config: &ZoneConfig) -> Zone {
        Zone::build::<Service, EndpointSlice, Pod, Namespace>(&[], &[], &[], &[], config)
    }

    fn ensure_node(&mut self, owner: Name) {
        self.nodes.entry(owner).or_default();
    }

    /// Inserts a record and the empty non-terminals between it and the origin.
    fn insert(&mut self, record: Record) {
        let mut parent = record.name.base_name();
        while parent.num_labels() > self.origin.num_labels() && !self.nodes.contains_key(&parent) {
            self.nodes.insert(parent.clone(), Node::default());
            parent = parent.base_name();
        }
        self.nodes.entry(record.name.clone()).or_default().push(record);
    }

    /// Inserts a reverse (PTR) record; its owner is outside the origin, so no non-terminals.
    fn insert_ptr(&mut self, ip: IpAddr, target: &Name) {
        let owner = Name::from(ip);
        self.nodes.entry(owner.clone()).or_default().push(Record::from_rdata(
            owner,
            self.ttl,
            RData::PTR(PTR(target.clone())),
        ));
    }

    fn add_service(&mut self, service: &Service, owner: Name, slices: &[&EndpointSlice]) {
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
                    self.insert(Record::from_rdata(owner, ttl, RData::CNAME(CNAME(target))))
                }
                None => self.warnings.push(format!(
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
                self.ensure_node(owner);
                return;
            }
            for ip in &ips {
                self.insert(address_record(owner.clone(), ttl, *ip));
                self.insert_ptr(*ip, &owner);
            }
            for port in spec.ports.iter().flatten() {
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let Ok(port_number) = u16::try_from(port.port) else {
                    continue;
                };
                self.add_srv(&owner, port_name, protocol, port_number, owner.clone(), 100);
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
                self.insert(address_record(owner.clone(), ttl, endpoint.ip));
            }
            let Some(host_owner) = child(&endpoint.hostname, &owner) else {
                self.warnings.push(format!(
                    "endpoint hostname {:?} of {owner} is not a DNS label",
                    endpoint.hostname
                ));
                continue;
            };
            self.insert(address_record(host_owner.clone(), ttl, endpoint.ip));
            self.insert_ptr(endpoint.ip, &host_owner);
            for port in endpoint.ports.iter() {
                let n_records = srv_counts
                    .get(&(port.name.clone(), port.protocol.clone()))
                    .copied()
                    .unwrap_or(1)
                    .max(1);
                let weight = u16::try_from((100 / n_records).max(1)).unwrap_or(1);
                self.add_srv(
                    &owner,
                    &port.name,
                    &port.protocol,
                    port.port,
                    host_owner.clone(),
                    weight,
                );
            }
        }
    }

    fn add_srv(
        &mut self,
        service_owner: &Name,
        port_name: &str,
        protocol: &str,
        port: u16,
        target: Name,
        weight: u16,
    ) {
        let owner = child(
            &format!("_{}._{}", port_name.to_ascii_lowercase(), protocol.to_ascii_lowercase()),
            service_owner,
        );
        match owner {
            Some(owner) => self.insert(Record::from_rdata(
                owner,
                self.ttl,
                RData::SRV(SRV::new(0, weight, port, target)),
            )),
            None => self
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
