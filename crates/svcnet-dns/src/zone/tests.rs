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
