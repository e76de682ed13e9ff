//! Every record type of the specification, for every Service type, through `dig`.

use crate::harness::start_fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_records() {
    let server = start_fixture().await;

    let dig = server.dig(&["dns-version.cluster.local", "TXT"]).await;
    assert_eq!(dig.status, "NOERROR");
    assert_eq!(dig.answers(), ["dns-version.cluster.local. TXT \"1.1.0\""]);
    assert!(dig.has_flag("aa"), "{}", dig.raw);

    for (name, ip) in [
        ("kubernetes.default", "10.96.0.1"),
        ("web.demo", "10.96.0.20"),
        ("np.demo", "10.96.0.30"),
        ("lb.demo", "10.96.0.31"),
        ("dual.demo", "10.96.0.21"),
    ] {
        let qname = format!("{name}.svc.cluster.local");
        let dig = server.dig(&[&qname, "A"]).await;
        assert_eq!(dig.status, "NOERROR", "{}", dig.raw);
        assert_eq!(dig.answers(), [format!("{qname}. A {ip}")]);
        // TTL 5 by default.
        assert!(dig.answer[0].split_whitespace().nth(1) == Some("5"), "{}", dig.raw);
    }
    let dig = server.dig(&["dual.demo.svc.cluster.local", "AAAA"]).await;
    assert_eq!(dig.answers(), ["dual.demo.svc.cluster.local. AAAA fd00:10:96::21"]);

    let dig = server.dig(&["_https._tcp.kubernetes.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(
        dig.answers(),
        [
            "_https._tcp.kubernetes.default.svc.cluster.local. SRV 0 100 443 kubernetes.default.svc.cluster.local."
        ]
    );
    assert!(dig.additional.iter().any(|line| line.contains("10.96.0.1")), "{}", dig.raw);

    let dig = server.dig(&["ext.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.status, "NOERROR");
    assert_eq!(dig.answers(), ["ext.demo.svc.cluster.local. CNAME www.example.com."]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_records() {
    let server = start_fixture().await;
    let dig = server.dig(&["db.demo.svc.cluster.local", "A"]).await;
    assert_eq!(
        dig.answers(),
        [
            "db.demo.svc.cluster.local. A 10.244.1.5",
            "db.demo.svc.cluster.local. A 10.244.1.6",
            "db.demo.svc.cluster.local. A 10.244.1.7"
        ]
    );
    let dig = server.dig(&["db-1.db.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.answers(), ["db-1.db.demo.svc.cluster.local. A 10.244.1.6"]);
    let dig = server.dig(&["10-244-1-7.db.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.answers(), ["10-244-1-7.db.demo.svc.cluster.local. A 10.244.1.7"]);
    let dig = server.dig(&["_pg._tcp.db.demo.svc.cluster.local", "SRV"]).await;
    assert_eq!(dig.answer.len(), 3, "{}", dig.raw);
    assert!(dig.answers().iter().all(|srv| srv.contains(" 5432 ")));
    assert_eq!(
        dig.additional.iter().filter(|line| line.split_whitespace().nth(3) == Some("A")).count(),
        3,
        "{}",
        dig.raw
    );
    let dig = server.dig(&["fd00-10-244--5.db6.demo.svc.cluster.local", "AAAA"]).await;
    assert_eq!(dig.answers(), ["fd00-10-244--5.db6.demo.svc.cluster.local. AAAA fd00:10:244::5"]);
    let dig = server.dig(&["u-0.unready.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.answers(), ["u-0.unready.demo.svc.cluster.local. A 10.244.2.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_records() {
    let server = start_fixture().await;
    let dig = server.dig(&["-x", "10.96.0.20"]).await;
    assert_eq!(dig.answers(), ["20.0.96.10.in-addr.arpa. PTR web.demo.svc.cluster.local."]);
    let dig = server.dig(&["-x", "10.244.1.5"]).await;
    assert_eq!(dig.answers(), ["5.1.244.10.in-addr.arpa. PTR db-0.db.demo.svc.cluster.local."]);
    let dig = server.dig(&["-x", "fd00:10:96::21"]).await;
    assert_eq!(dig.answer.len(), 1, "{}", dig.raw);
    assert!(dig.answer[0].ends_with("dual.demo.svc.cluster.local."), "{}", dig.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_answers_carry_the_soa() {
    let server = start_fixture().await;
    for (qname, qtype, status) in [
        ("nope.demo.svc.cluster.local", "A", "NXDOMAIN"),
        ("nope.svc.cluster.local", "A", "NXDOMAIN"),
        ("lonely.demo.svc.cluster.local", "A", "NXDOMAIN"),
        ("web.demo.svc.cluster.local", "AAAA", "NOERROR"),
        ("demo.svc.cluster.local", "A", "NOERROR"),
        ("quiet.svc.cluster.local", "A", "NOERROR"),
    ] {
        let dig = server.dig(&[qname, qtype]).await;
        assert_eq!(dig.status, status, "{qname} {qtype}: {}", dig.raw);
        assert!(dig.answer.is_empty(), "{}", dig.raw);
        assert_eq!(dig.authority.len(), 1, "{}", dig.raw);
        assert!(
            dig.authority[0].contains("SOA\tns.dns.cluster.local. hostmaster.cluster.local."),
            "{}",
            dig.raw
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_answered_and_deleted_names_turn_nxdomain() {
    let server = start_fixture().await;
    let dig = server.dig(&["web.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.status, "NOERROR");
    let mut objects = crate::harness::fixture();
    objects.services.retain(|service| service.metadata.name.as_deref() != Some("web"));
    server.handle.set_objects(&objects);
    let dig = server.dig(&["web.demo.svc.cluster.local", "A"]).await;
    assert_eq!(dig.status, "NXDOMAIN", "{}", dig.raw);
}
