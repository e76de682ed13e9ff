//! Check-style tests of `Zone::answer` over the fixture cluster (`tests/fixtures/cluster.json`).

use std::net::IpAddr;

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};

use super::*;
use crate::Objects;

const FIXTURE: &str = include_str!("../../tests/fixtures/cluster.json");

fn zone_with(config: ZoneConfig) -> Zone {
    let objects = Objects::from_list_json(FIXTURE).expect("fixture parses");
    let zone = objects.zone(&config);
    assert_eq!(zone.warnings(), &[] as &[String]);
    zone
}

fn show(answer: &Answer) -> String {
    match answer {
        Answer::OutOfZone => "out of zone".to_string(),
        Answer::Autopath { cname, target } => format!("autopath {cname} -> {target}"),
        Answer::Zone(answer) => {
            let mut lines = vec![answer.rcode.to_string()];
            let mut section = |label: &str, records: &[Record]| {
                let mut texts: Vec<String> =
                    records.iter().map(|r| format!("{label} {r}")).collect();
                texts.sort();
                lines.extend(texts);
            };
            section("an", &answer.answers);
            section("ns", &answer.authorities);
            section("ad", &answer.additionals);
            lines.join("\n")
        }
    }
}

fn ask(zone: &Zone, question: &str, client: &str) -> String {
    let (qname, qtype) = question.split_once(' ').expect("`name TYPE`");
    let qtype: RecordType = qtype.parse().expect("record type");
    let query = Query::query(Name::from_ascii(qname).expect("name"), qtype);
    show(&zone.answer(&query, client.parse::<IpAddr>().expect("ip")))
}

#[track_caller]
fn check(zone: &Zone, question: &str, expected: &str) {
    let actual = ask(zone, question, "127.0.0.1");
    assert_eq!(actual.trim(), expected.trim(), "question: {question}");
}

const SOA: &str = "ns cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5";

fn nxdomain() -> String {
    format!("Non-Existent Domain\n{SOA}")
}

fn nodata() -> String {
    format!("No Error\n{SOA}")
}

#[test]
fn schema_version() {
    let zone = zone_with(ZoneConfig::default());
    check(
        &zone,
        "dns-version.cluster.local. TXT",
        "No Error\nan dns-version.cluster.local. 5 IN TXT 1.1.0",
    );
}

#[test]
fn cluster_ip_services() {
    let zone = zone_with(ZoneConfig::default());
    check(
        &zone,
        "web.demo.svc.cluster.local. A",
        "No Error\nan web.demo.svc.cluster.local. 5 IN A 10.96.0.20",
    );
    check(
        &zone,
        "WEB.Demo.SVC.cluster.local. A",
        "No Error\nan web.demo.svc.cluster.local. 5 IN A 10.96.0.20",
    );
    check(&zone, "web.demo.svc.cluster.local. AAAA", &nodata());
    check(
        &zone,
        "np.demo.svc.cluster.local. A",
        "No Error\nan np.demo.svc.cluster.local. 5 IN A 10.96.0.30",
    );
    check(
        &zone,
        "lb.demo.svc.cluster.local. A",
        "No Error\nan lb.demo.svc.cluster.local. 5 IN A 10.96.0.31",
    );
    check(
        &zone,
        "dual.demo.svc.cluster.local. A",
        "No Error\nan dual.demo.svc.cluster.local. 5 IN A 10.96.0.21",
    );
    check(
        &zone,
        "dual.demo.svc.cluster.local. AAAA",
        "No Error\nan dual.demo.svc.cluster.local. 5 IN AAAA fd00:10:96::21",
    );
}

#[test]
fn srv_for_named_ports() {
    let zone = zone_with(ZoneConfig::default());
    check(
        &zone,
        "_http._tcp.web.demo.svc.cluster.local. SRV",
        "No Error\nan _http._tcp.web.demo.svc.cluster.local. 5 IN SRV 0 100 80 web.demo.svc.cluster.local.\nad web.demo.svc.cluster.local. 5 IN A 10.96.0.20",
    );
    check(
        &zone,
        "_dns._udp.web.demo.svc.cluster.local. SRV",
        "No Error\nan _dns._udp.web.demo.svc.cluster.local. 5 IN SRV 0 100 53 web.demo.svc.cluster.local.\nad web.demo.svc.cluster.local. 5 IN A 10.96.0.20",
    );
    // The SRV owner exists, so other types are NODATA; its parent is an empty non-terminal.
    check(&zone, "_http._tcp.web.demo.svc.cluster.local. A", &nodata());
    check(&zone, "_tcp.web.demo.svc.cluster.local. SRV", &nodata());
    check(&zone, "_http._udp.web.demo.svc.cluster.local. SRV", &nxdomain());
}

#[test]
fn headless_services() {
    let zone = zone_with(ZoneConfig::default());
    check(
        &zone,
        "db.demo.svc.cluster.local. A",
        "No Error\nan db.demo.svc.cluster.local. 5 IN A 10.244.1.5\nan db.demo.svc.cluster.local. 5 IN A 10.244.1.6\nan db.demo.svc.cluster.local. 5 IN A 10.244.1.7",
    );
    check(
        &zone,
        "db-0.db.demo.svc.cluster.local. A",
        "No Error\nan db-0.db.demo.svc.cluster.local. 5 IN A 10.244.1.5",
    );
    check(
        &zone,
        "10-244-1-7.db.demo.svc.cluster.local. A",
        "No Error\nan 10-244-1-7.db.demo.svc.cluster.local. 5 IN A 10.244.1.7",
    );
    // Not ready, and the Service does not publish not-ready addresses.
    check(&zone, "db-3.db.demo.svc.cluster.local. A", &nxdomain());
    check(
        &zone,
        "_pg._tcp.db.demo.svc.cluster.local. SRV",
        "No Error
an _pg._tcp.db.demo.svc.cluster.local. 5 IN SRV 0 33 5432 10-244-1-7.db.demo.svc.cluster.local.
an _pg._tcp.db.demo.svc.cluster.local. 5 IN SRV 0 33 5432 db-0.db.demo.svc.cluster.local.
an _pg._tcp.db.demo.svc.cluster.local. 5 IN SRV 0 33 5432 db-1.db.demo.svc.cluster.local.
ad 10-244-1-7.db.demo.svc.cluster.local. 5 IN A 10.244.1.7
ad db-0.db.demo.svc.cluster.local. 5 IN A 10.244.1.5
ad db-1.db.demo.svc.cluster.local. 5 IN A 10.244.1.6",
    );
    check(
        &zone,
        "db6.demo.svc.cluster.local. AAAA",
        "No Error\nan db6.demo.svc.cluster.local. 5 IN AAAA fd00:10:244::5",
    );
    check(&zone, "db6.demo.svc.cluster.local. A", &nodata());
    check(
        &zone,
        "fd00-10-244--5.db6.demo.svc.cluster.local. AAAA",
        "No Error\nan fd00-10-244--5.db6.demo.svc.cluster.local. 5 IN AAAA fd00:10:244::5",
    );
    check(
        &zone,
        "unready.demo.svc.cluster.local. A",
        "No Error\nan unready.demo.svc.cluster.local. 5 IN A 10.244.2.1",
    );
    check(
        &zone,
        "u-0.unready.demo.svc.cluster.local. A",
        "No Error\nan u-0.unready.demo.svc.cluster.local. 5 IN A 10.244.2.1",
    );
    // The specification: a headless Service without ready endpoints is NXDOMAIN.
    check(&zone, "lonely.demo.svc.cluster.local. A", &nxdomain());
}

#[test]
fn reverse_records() {
    let zone = zone_with(ZoneConfig::default());
    check(
        &zone,
        "20.0.96.10.in-addr.arpa. PTR",
        "No Error\nan 20.0.96.10.in-addr.arpa. 5 IN PTR web.demo.svc.cluster.local.",
    );
    check(
        &zone,
        "5.1.244.10.in-addr.arpa. PTR",
        "No Error\nan 5.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.demo.svc.cluster.local.",
    );
    check(
        &zone,
        "7.1.244.10.in-addr.arpa. PTR",
        "No Error\nan 7.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-7.db.demo.svc.cluster.local.",
    );
    check(
        &zone,
        "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. PTR",
        "No Error\nan 1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dual.demo.svc.cluster.local.",
    );
    check(
        &zone,
        "20.0.96.10.in-addr.arpa. A",
        "No Error\nns in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5",
    );
    // Addresses the cluster does not own fall through (to forwarding, or a refusal).
    check(&zone, "99.0.96.10.in-addr.arpa. PTR", "out of zone");
}

#[test]
fn external_name() {
    let zone = zone_with(ZoneConfig::default());
    check(
        &zone,
        "ext.demo.svc.cluster.local. A",
        "No Error\nan ext.demo.svc.cluster.local. 5 IN CNAME www.example.com.",
    );
    check(
        &zone,
        "ext.demo.svc.cluster.local. CNAME",
        "No Error\nan ext.demo.svc.cluster.local. 5 IN CNAME www.example.com.",
    );
    check(
        &zone,
        "alias.demo.svc.cluster.local. A",
        "No Error\nan alias.demo.svc.cluster.local. 5 IN CNAME web.demo.svc.cluster.local.\nan web.demo.svc.cluster.local. 5 IN A 10.96.0.20",
    );
}

#[test]
fn negative_answers() {
    let zone = zone_with(ZoneConfig::default());
    check(&zone, "nope.demo.svc.cluster.local. A", &nxdomain());
    check(&zone, "demo.svc.cluster.local. A", &nodata());
    check(&zone, "quiet.svc.cluster.local. A", &nodata());
    check(&zone, "nope.svc.cluster.local. A", &nxdomain());
    check(&zone, "svc.cluster.local. A", &nodata());
    check(&zone, "foo.web.demo.svc.cluster.local. A", &nxdomain());
    check(&zone, "whatever.cluster.local. A", &nxdomain());
    check(&zone, "cluster.local. SOA", &format!("No Error\nan {}", &SOA[3..]));
    check(&zone, "cluster.local. NS", "No Error\nan cluster.local. 5 IN NS ns.dns.cluster.local.");
    check(&zone, "example.com. A", "out of zone");
    check(&zone, "local. A", "out of zone");
}

#[test]
fn pod_records() {
    let disabled = zone_with(ZoneConfig::default());
    check(&disabled, "10-244-1-50.demo.pod.cluster.local. A", &nxdomain());

    let insecure = zone_with(ZoneConfig { pods: PodMode::Insecure, ..ZoneConfig::default() });
    check(
        &insecure,
        "1-2-3-4.demo.pod.cluster.local. A",
        "No Error\nan 1-2-3-4.demo.pod.cluster.local. 5 IN A 1.2.3.4",
    );
    check(&insecure, "1-2-3-4.demo.pod.cluster.local. AAAA", &nodata());
    check(
        &insecure,
        "fd00--1.demo.pod.cluster.local. AAAA",
        "No Error\nan fd00--1.demo.pod.cluster.local. 5 IN AAAA fd00::1",
    );
    check(&insecure, "1-2-3-4.nope.pod.cluster.local. A", &nxdomain());
    check(&insecure, "not-an-ip.demo.pod.cluster.local. A", &nxdomain());
    check(&insecure, "demo.pod.cluster.local. A", &nodata());

    let verified = zone_with(ZoneConfig { pods: PodMode::Verified, ..ZoneConfig::default() });
    check(
        &verified,
        "10-244-1-50.demo.pod.cluster.local. A",
        "No Error\nan 10-244-1-50.demo.pod.cluster.local. 5 IN A 10.244.1.50",
    );
    check(&verified, "10-244-1-50.default.pod.cluster.local. A", &nxdomain());
    check(&verified, "1-2-3-4.demo.pod.cluster.local. A", &nxdomain());
}

#[test]
fn autopath() {
    let zone = zone_with(ZoneConfig { autopath: true, ..ZoneConfig::default() });
    let ask_from = |question: &str, client: &str| ask(&zone, question, client);
    assert_eq!(
        ask_from("www.example.com.demo.svc.cluster.local. A", "10.244.1.50"),
        "autopath www.example.com.demo.svc.cluster.local. 5 IN CNAME www.example.com. -> www.example.com."
    );
    // `web.demo` is a cluster name: found further down the search path, answered locally.
    assert_eq!(
        ask_from("web.demo.demo.svc.cluster.local. A", "10.244.1.50"),
        "No Error\nan web.demo.demo.svc.cluster.local. 5 IN CNAME web.demo.svc.cluster.local.\nan web.demo.svc.cluster.local. 5 IN A 10.96.0.20"
    );
    // Found without records of the type: the CNAME alone (NODATA for the target).
    assert_eq!(
        ask_from("web.demo.demo.svc.cluster.local. AAAA", "10.244.1.50"),
        "No Error\nan web.demo.demo.svc.cluster.local. 5 IN CNAME web.demo.svc.cluster.local."
    );
    // A client that is not a known pod, or a pod of another namespace: plain NXDOMAIN.
    assert_eq!(ask_from("www.example.com.demo.svc.cluster.local. A", "10.9.9.9"), nxdomain());
    assert_eq!(ask_from("www.example.com.demo.svc.cluster.local. A", "127.0.0.3"), nxdomain());
    // Existing names are never rewritten.
    assert_eq!(
        ask_from("web.demo.svc.cluster.local. A", "10.244.1.50"),
        "No Error\nan web.demo.svc.cluster.local. 5 IN A 10.96.0.20"
    );
}

#[test]
fn ttl_and_domain_are_configurable() {
    let zone = zone_with(ZoneConfig {
        cluster_domain: "corp.example".to_string(),
        ttl: 30,
        ..ZoneConfig::default()
    });
    check(
        &zone,
        "web.demo.svc.corp.example. A",
        "No Error\nan web.demo.svc.corp.example. 30 IN A 10.96.0.20",
    );
    check(&zone, "web.demo.svc.cluster.local. A", "out of zone");
}

/// Incremental updates (`ZoneBuilder`) against `Zone::build` from the same objects.
mod incremental {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    const NAMESPACES: &[&str] = &["ns-a", "ns-b", "ns-c"];
    const SERVICES: &[&str] = &["web", "db", "api", "cache"];
    const IPS: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "fd00::2"];
    const CLUSTER_IPS: &[&str] = &["10.96.0.1", "10.96.0.2", "fd00:96::1"];

    fn random_service(rng: &mut Rng, ns: &str, service_name: &str) -> Service {
        let ports = match rng.below(3) {
            0 => json!([]),
            1 => json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
            _ => json!([{"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 9000}]),
        };
        let spec = match rng.below(6) {
            0 => json!({"type": "ExternalName", "externalName": "example.com"}),
            1 => json!({"clusterIP": "", "ports": ports}),
            2 | 3 => json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": ports,
                         "publishNotReadyAddresses": rng.below(2) == 0}),
            _ => {
                let first = *rng.pick(CLUSTER_IPS);
                let second = *rng.pick(CLUSTER_IPS);
                json!({"clusterIP": first, "clusterIPs": [first, second], "ports": ports})
            }
        };
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": service_name},
            "spec": spec,
        }))
        .expect("service")
    }

    fn random_slice(rng: &mut Rng, ns: &str, slice_name: &str) -> EndpointSlice {
        let endpoints: Vec<serde_json::Value> = (0..rng.below(3))
            .map(|_| {
                let mut endpoint = json!({
                    "addresses": [rng.pick(IPS)],
                    "conditions": {"ready": rng.below(3) != 0},
                });
                if rng.below(2) == 0 {
                    endpoint["hostname"] = json!(*rng.pick(&["h0", "h1"]));
                }
                endpoint
            })
            .collect();
        let ports = match rng.below(2) {
            0 => json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            _ => {
                json!([{"name": "http", "port": 8081, "protocol": "TCP"}, {"name": "", "port": 1}])
            }
        };
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": slice_name,
                         "labels": {SERVICE_NAME_LABEL: rng.pick(SERVICES)}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }))
        .expect("slice")
    }

    /// Everything observable of a zone: each name with its reference count and records, the
    /// namespaces, the pod IPs, the Service count.
    fn canonical(zone: &Zone) -> String {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (owner, node) in zone.nodes.iter() {
            let mut records: Vec<String> = node.all().map(ToString::to_string).collect();
            records.sort();
            names.insert(owner.to_string(), format!("refs {} {records:?}", node.refs));
        }
        let mut namespaces: Vec<&String> = zone.namespaces.iter().collect();
        namespaces.sort();
        let mut pods: Vec<String> = zone
            .pod_namespaces
            .iter()
            .map(|(ip, namespaces)| {
                let mut namespaces: Vec<&str> = namespaces.iter().map(|ns| &**ns).collect();
                namespaces.sort_unstable();
                format!("{ip} {namespaces:?}")
            })
            .collect();
        pods.sort();
        format!("{names:#?}\n{namespaces:?}\n{pods:?}\nservices {}", zone.n_services())
    }

    /// The answers to every name of either zone, for every type asked, from a pod's address.
    fn answers(zone: &Zone, other: &Zone) -> Vec<String> {
        let mut questions: Vec<Name> =
            zone.nodes.iter().chain(other.nodes.iter()).map(|(owner, _)| owner.clone()).collect();
        for ns in NAMESPACES {
            for ip in IPS {
                let ip: IpAddr = ip.parse().expect("ip");
                questions.push(
                    Name::from_ascii(format!("{}.{ns}.pod.cluster.local.", dashed(ip)))
                        .expect("name"),
                );
            }
            questions
                .push(Name::from_ascii(format!("nowhere.{ns}.svc.cluster.local.")).expect("name"));
        }
        questions.sort();
        questions.dedup();
        let mut out = Vec::new();
        for qname in questions {
            for qtype in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::SRV,
                RecordType::PTR,
                RecordType::CNAME,
                RecordType::ANY,
            ] {
                let query = Query::query(qname.clone(), qtype);
                out.push(format!(
                    "{qname} {qtype}: {}",
                    show(&zone.answer(&query, "10.0.0.1".parse().expect("ip")))
                ));
            }
        }
        out
    }

    #[test]
    fn any_sequence_of_changes_gives_the_built_zone() {
        for seed in 1..=12u64 {
            let config = ZoneConfig {
                pods: if seed % 2 == 0 { PodMode::Verified } else { PodMode::Insecure },
                autopath: seed % 3 == 0,
                ..ZoneConfig::default()
            };
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut builder = ZoneBuilder::new(&config);
            let mut services: BTreeMap<ObjectKey, Service> = BTreeMap::new();
            let mut slices: BTreeMap<ObjectKey, EndpointSlice> = BTreeMap::new();
            let mut namespaces: BTreeMap<String, Namespace> = BTreeMap::new();
            let mut pods: BTreeMap<ObjectKey, PodIps> = BTreeMap::new();
            let mut held: Option<(Zone, String)> = None;
            for step in 0..300u32 {
                let ns = *rng.pick(NAMESPACES);
                match rng.below(4) {
                    0 => {
                        let key = (ns.to_string(), rng.pick(SERVICES).to_string());
                        let service =
                            (rng.below(4) != 0).then(|| random_service(&mut rng, ns, &key.1));
                        builder.set_service(&key, service.clone().map(Arc::new));
                        match service {
                            Some(service) => services.insert(key, service),
                            None => services.remove(&key),
                        };
                    }
                    1 => {
                        let key = (ns.to_string(), format!("slice-{}", rng.below(5)));
                        let slice = (rng.below(4) != 0).then(|| random_slice(&mut rng, ns, &key.1));
                        builder.set_endpoint_slice(&key, slice.clone().map(Arc::new));
                        match slice {
                            Some(slice) => slices.insert(key, slice),
                            None => slices.remove(&key),
                        };
                    }
                    2 => {
                        let exists = rng.below(2) == 0;
                        builder.set_namespace(ns, exists);
                        if exists {
                            let namespace: Namespace =
                                serde_json::from_value(json!({"metadata": {"name": ns}}))
                                    .expect("ns");
                            namespaces.insert(ns.to_string(), namespace);
                        } else {
                            namespaces.remove(ns);
                        }
                    }
                    _ => {
                        let key = (ns.to_string(), format!("pod-{}", rng.below(6)));
                        let pod = (rng.below(4) != 0).then(|| PodIps {
                            namespace: ns.to_string(),
                            ips: (0..rng.below(3))
                                .map(|_| rng.pick(IPS).parse().expect("ip"))
                                .collect(),
                        });
                        builder.set_pod(&key, pod.clone());
                        match pod {
                            Some(pod) => pods.insert(key, pod),
                            None => pods.remove(&key),
                        };
                    }
                }
                if step % 7 != 0 {
                    continue;
                }
                let serial = step + 1;
                let snapshot = builder.snapshot(serial);
                let services: Vec<&Service> = services.values().collect();
                let slices: Vec<&EndpointSlice> = slices.values().collect();
                let pods: Vec<&PodIps> = pods.values().collect();
                let namespaces: Vec<&Namespace> = namespaces.values().collect();
                let built = Zone::build(
                    &services,
                    &slices,
                    &pods,
                    &namespaces,
                    &ZoneConfig { serial, ..config.clone() },
                );
                assert_eq!(canonical(&snapshot), canonical(&built), "seed {seed} step {step}");
                let (incremental, from_scratch) =
                    (answers(&snapshot, &built), answers(&built, &snapshot));
                for (a, b) in incremental.iter().zip(&from_scratch) {
                    assert_eq!(a, b, "seed {seed} step {step}");
                }
                // A snapshot taken earlier never changes.
                if let Some((old, text)) = &held {
                    assert_eq!(
                        &canonical(old),
                        text,
                        "seed {seed} step {step}: a held snapshot changed"
                    );
                }
                if rng.below(3) == 0 {
                    let text = canonical(&snapshot);
                    held = Some((snapshot, text));
                }
            }
        }
    }

    #[test]
    fn a_change_copies_only_the_shards_it_touches() {
        let config = ZoneConfig { pods: PodMode::Verified, ..ZoneConfig::default() };
        let mut builder = ZoneBuilder::new(&config);
        let mut rng = Rng(7);
        for i in 0..2000 {
            let key = (format!("ns-{}", i % 20), format!("svc-{i}"));
            let mut service = random_service(&mut rng, &key.0, &key.1);
            service.spec = serde_json::from_value(json!({
                "clusterIP": format!("10.96.{}.{}", i / 250, i % 250),
                "ports": [{"name": "http", "port": 80}],
            }))
            .expect("spec");
            builder.set_service(&key, Some(Arc::new(service)));
        }
        let before = builder.snapshot(1);
        let key = ("ns-3".to_string(), "svc-3".to_string());
        builder.set_service(&key, None);
        let after = builder.snapshot(2);
        let n_shards = before.nodes.shared_with(&before.nodes);
        let shared = after.nodes.shared_with(&before.nodes);
        // The Service's name, SRV, `_tcp` and PTR names, the reference counts of `<ns>.svc` and
        // `svc`, and the origin's SOA serial.
        assert!(n_shards - shared <= 8, "{} of {n_shards} shards copied", n_shards - shared);
        assert_eq!(after.n_services(), before.n_services() - 1);
    }
}
