//! How long a change takes to become visible to readers, for `bench/dns/update_run.sh`:
//! `zone_update OBJECTS.json [CHANGES]`. Loads the objects (as `gen.py` writes them), then times
//! (a) a full `Zone::build` of them, as every watch batch did before incremental updates, and
//! (b) `ZoneBuilder` applying one change and publishing the snapshot through an `ArcSwap`, until
//! a reader sees the new answer; for Service updates, creations and deletions, pod changes and
//! new namespaces. Prints milliseconds per kind (median, p99, max).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use svcnet_dns::zone::{ObjectKey, PodIps};
use svcnet_dns::{Answer, PodMode, Zone, ZoneBuilder, ZoneConfig};

fn summary(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<34} n={:<4} median {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        times.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
}

fn answers(zone: &Zone, qname: &str, expect: Option<IpAddr>) -> bool {
    let Ok(name) = Name::from_ascii(qname) else {
        return false;
    };
    let query = Query::query(name, RecordType::A);
    match zone.answer(&query, IpAddr::V4(Ipv4Addr::LOCALHOST)) {
        Answer::Zone(answer) => match expect {
            Some(ip) => answer.answers.iter().any(|r| r.data.ip_addr() == Some(ip)),
            None => answer.rcode == ResponseCode::NXDomain,
        },
        _ => false,
    }
}

fn service(ns: &str, name: &str, ip: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("service")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: zone_update OBJECTS.json [CHANGES]")?;
    let n_changes: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(200);
    let objects = svcnet_dns::Objects::from_list_json(&std::fs::read_to_string(path)?)?;
    let config = ZoneConfig { pods: PodMode::Verified, ..ZoneConfig::default() };
    println!(
        "{} services, {} pods, {} namespaces, verified pod records",
        objects.services.len(),
        objects.pods.len(),
        objects.namespaces.len()
    );

    // (a) Before: every change rebuilt the zone.
    let mut full = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let zone = objects.zone(&config);
        full.push(start.elapsed());
        std::hint::black_box(zone);
    }
    summary("full Zone::build (before)", full);

    // (b) After: the builder, loaded once.
    let start = Instant::now();
    let mut builder = ZoneBuilder::new(&config);
    for namespace in &objects.namespaces {
        builder.set_namespace(namespace.metadata.name.as_deref().unwrap_or_default(), true);
    }
    for service in &objects.services {
        let key: ObjectKey = (
            service.metadata.namespace.clone().unwrap_or_default(),
            service.metadata.name.clone().unwrap_or_default(),
        );
        builder.set_service(&key, Some(Arc::new(service.clone())));
    }
    for (index, pod) in objects.pods.iter().enumerate() {
        builder.set_pod(&(pod.namespace.clone(), format!("pod-{index}")), Some(pod.clone()));
    }
    let published = ArcSwap::from_pointee(builder.snapshot(1));
    summary("initial ZoneBuilder load", vec![start.elapsed()]);
    let reference = objects.zone(&ZoneConfig { serial: 1, ..config.clone() });
    assert_eq!(published.load().n_names(), reference.n_names(), "builder and build disagree");
    drop(reference);

    let mut serial = 2;
    let mut publish = |builder: &mut ZoneBuilder| {
        published.store(Arc::new(builder.snapshot(serial)));
        serial += 1;
    };
    let n_services = objects.services.len().max(1);
    let (mut updates, mut creates, mut deletes, mut pods, mut namespaces) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n_changes {
        // A Service gets a new ClusterIP.
        let old = &objects.services[(i * 7919) % n_services];
        let (ns, name) = (
            old.metadata.namespace.clone().unwrap_or_default(),
            old.metadata.name.clone().unwrap_or_default(),
        );
        let ip: IpAddr = format!("10.100.{}.{}", i / 250, i % 250 + 1).parse()?;
        let qname = format!("{name}.{ns}.svc.cluster.local.");
        let changed = Arc::new(service(&ns, &name, &ip.to_string()));
        let start = Instant::now();
        builder.set_service(&(ns.clone(), name.clone()), Some(changed));
        publish(&mut builder);
        assert!(answers(&published.load(), &qname, Some(ip)));
        updates.push(start.elapsed());

        // A new Service, then its deletion.
        let new_name = format!("new-{i}");
        let qname = format!("{new_name}.{ns}.svc.cluster.local.");
        let ip: IpAddr = format!("10.101.{}.{}", i / 250, i % 250 + 1).parse()?;
        let start = Instant::now();
        builder.set_service(
            &(ns.clone(), new_name.clone()),
            Some(Arc::new(service(&ns, &new_name, &ip.to_string()))),
        );
        publish(&mut builder);
        assert!(answers(&published.load(), &qname, Some(ip)));
        creates.push(start.elapsed());
        let start = Instant::now();
        builder.set_service(&(ns.clone(), new_name), None);
        publish(&mut builder);
        assert!(answers(&published.load(), &qname, None));
        deletes.push(start.elapsed());

        // A new pod (verified pod record).
        let ip: IpAddr = format!("10.250.{}.{}", i / 250, i % 250 + 1).parse()?;
        let qname = format!("10-250-{}-{}.{ns}.pod.cluster.local.", i / 250, i % 250 + 1);
        let start = Instant::now();
        builder.set_pod(
            &(ns.clone(), format!("new-pod-{i}")),
            Some(PodIps { namespace: ns.clone(), ips: vec![ip] }),
        );
        publish(&mut builder);
        assert!(answers(&published.load(), &qname, Some(ip)));
        pods.push(start.elapsed());

        // A new Namespace (its `<ns>.svc` name exists).
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": format!("x-{i}")}}))?;
        let start = Instant::now();
        builder.set_namespace(namespace.metadata.name.as_deref().unwrap_or_default(), true);
        publish(&mut builder);
        namespaces.push(start.elapsed());
    }
    summary("Service update (incremental)", updates);
    summary("Service create (incremental)", creates);
    summary("Service delete (incremental)", deletes);
    summary("Pod create (incremental)", pods);
    summary("Namespace create (incremental)", namespaces);
    Ok(())
}
