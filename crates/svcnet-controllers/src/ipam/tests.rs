//! Unit and property tests of the allocator.

use super::*;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("test CIDR")
}

fn ipam(cidrs: &[&str]) -> Ipam {
    Ipam::with_seed(
        IpamConfig {
            service_cluster_ip_ranges: cidrs.iter().map(|c| net(c)).collect(),
            service_node_port_range: 30000..=32767,
        },
        7,
    )
    .expect("valid config")
}

fn svc(name: &str, type_: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some([("app".to_string(), name.to_string())].into()),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn spec(s: &Service) -> &ServiceSpec {
    s.spec.as_ref().expect("spec")
}

fn errors_text(errors: &[FieldError]) -> Vec<String> {
    errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn key_round_trip() {
    for a in [
        Allocation::ClusterIp("10.96.0.1".parse().unwrap()),
        Allocation::ClusterIp("fd00::a".parse().unwrap()),
        Allocation::NodePort(30080),
    ] {
        assert_eq!(Allocation::parse_key(&a.key()), Some(a.clone()));
    }
    assert_eq!(Allocation::ClusterIp("10.96.0.1".parse().unwrap()).key(), "clusterips/10.96.0.1");
    assert_eq!(Allocation::NodePort(30080).key(), "nodeports/30080");
    assert_eq!(Allocation::parse_key("nodeports/0"), None);
    assert_eq!(Allocation::parse_key("other/1"), None);
}

#[test]
fn cluster_ip_single_stack_defaults() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut s = svc("a", "ClusterIP");
    let r = ipam.allocate_create(&mut s).expect("allocates");
    let sp = spec(&s);
    assert_eq!(sp.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(sp.ip_families.as_deref(), Some(&["IPv4".to_string()][..]));
    let ip: IpAddr = sp.cluster_ip.as_deref().unwrap().parse().unwrap();
    assert_eq!(sp.cluster_ips.as_deref(), Some(&[ip.to_string()][..]));
    assert_eq!(r.allocate, vec![Allocation::ClusterIp(ip)]);
    // Dynamic allocation uses the upper band: the static band of a /12 is 256 addresses.
    let range = IpRange::new(net("10.96.0.0/12")).unwrap();
    assert!(range.offset_of(ip).unwrap() >= 256);
    assert!(sp.ports.as_ref().unwrap()[0].node_port.is_none());
}

#[test]
fn requested_ip_taken_gives_kubernetes_error() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut a = svc("a", "ClusterIP");
    a.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.5".into());
    ipam.allocate_create(&mut a).expect("free");
    let mut b = svc("b", "ClusterIP");
    b.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.5".into());
    let err = ipam.allocate_create(&mut b).unwrap_err();
    assert_eq!(
        errors_text(&err),
        vec![
            r#"spec.clusterIPs: Invalid value: []string{"10.96.0.5"}: failed to allocate IP 10.96.0.5: provided IP is already allocated"#
        ]
    );

    let mut c = svc("c", "ClusterIP");
    c.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.5".into());
    let err = ipam.allocate_create(&mut c).unwrap_err();
    assert_eq!(
        errors_text(&err),
        vec![
            r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5"}: failed to allocate IP 10.0.0.5: the provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#
        ]
    );
}

#[test]
fn first_address_is_for_default_kubernetes_only() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    assert_eq!(ipam.kubernetes_service_ip().to_string(), "10.96.0.1");
    let mut other = svc("x", "ClusterIP");
    other.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.1".into());
    assert!(ipam.allocate_create(&mut other).is_err());
    let mut k = svc("kubernetes", "ClusterIP");
    k.metadata.namespace = Some("default".into());
    k.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.1".into());
    ipam.allocate_create(&mut k).expect("kubernetes may take it");
    // A tiny range never hands out the reserved address dynamically.
    let mut tiny = ipam_small();
    let mut n = 0;
    loop {
        let mut s = svc(&format!("s{n}"), "ClusterIP");
        match tiny.allocate_create(&mut s) {
            Ok(_) => assert_ne!(spec(&s).cluster_ip.as_deref(), Some("10.0.0.1")),
            Err(e) => {
                assert_eq!(
                    errors_text(&e),
                    vec![
                        "spec.clusterIPs: Internal error: failed to allocate a serviceIP: range is full"
                    ]
                );
                break;
            }
        }
        n += 1;
    }
    // A /29 has 6 usable addresses, one reserved.
    assert_eq!(n, 5);
}

fn ipam_small() -> Ipam {
    ipam(&["10.0.0.0/29"])
}

#[test]
fn headless_and_external_name_allocate_nothing() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut h = svc("h", "ClusterIP");
    h.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let r = ipam.allocate_create(&mut h).unwrap();
    assert!(r.is_empty());
    assert_eq!(spec(&h).cluster_ips.as_deref(), Some(&["None".to_string()][..]));
    let mut e = svc("e", "ExternalName");
    e.spec.as_mut().unwrap().external_name = Some("example.com".into());
    assert!(ipam.allocate_create(&mut e).unwrap().is_empty());
    assert!(ipam.allocated().is_empty());
}

#[test]
fn dual_stack_policies() {
    let mut single = ipam(&["10.96.0.0/12"]);
    let mut s = svc("a", "ClusterIP");
    s.spec.as_mut().unwrap().ip_family_policy = Some("RequireDualStack".into());
    let err = single.allocate_create(&mut s).unwrap_err();
    assert_eq!(
        errors_text(&err),
        vec![
            r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#
        ]
    );
    let mut s = svc("a", "ClusterIP");
    s.spec.as_mut().unwrap().ip_family_policy = Some("PreferDualStack".into());
    single.allocate_create(&mut s).unwrap();
    assert_eq!(spec(&s).ip_families.as_ref().unwrap().len(), 1);

    let mut dual = ipam(&["10.96.0.0/12", "fd00:10:96::/108"]);
    let mut s = svc("b", "ClusterIP");
    s.spec.as_mut().unwrap().ip_family_policy = Some("PreferDualStack".into());
    let r = dual.allocate_create(&mut s).unwrap();
    assert_eq!(r.allocate.len(), 2);
    assert_eq!(
        spec(&s).ip_families.as_deref(),
        Some(&["IPv4".to_string(), "IPv6".to_string()][..])
    );
    let ips = spec(&s).cluster_ips.clone().unwrap();
    assert!(
        ips[0].parse::<IpAddr>().unwrap().is_ipv4() && ips[1].parse::<IpAddr>().unwrap().is_ipv6()
    );

    let mut s6 = svc("c", "ClusterIP");
    s6.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
    dual.allocate_create(&mut s6).unwrap();
    assert!(spec(&s6).cluster_ip.as_deref().unwrap().contains(':'));

    // Upgrade a single-stack Service to dual-stack, then downgrade it.
    let mut one = svc("d", "ClusterIP");
    let r = dual.allocate_create(&mut one).unwrap();
    dual.commit(&r);
    let mut up = one.clone();
    up.spec.as_mut().unwrap().ip_family_policy = Some("RequireDualStack".into());
    let r = dual.allocate_update(&one, &mut up).unwrap();
    assert_eq!(r.allocate.len(), 1);
    dual.commit(&r);
    assert_eq!(spec(&up).cluster_ips.as_ref().unwrap().len(), 2);
    let mut down = up.clone();
    down.spec.as_mut().unwrap().ip_family_policy = Some("SingleStack".into());
    let r = dual.allocate_update(&up, &mut down).unwrap();
    assert_eq!(r.release.len(), 1);
    assert_eq!(spec(&down).cluster_ips.as_ref().unwrap().len(), 1);
    dual.commit(&r);
    assert!(!dual.is_allocated(&r.release[0]));
}

#[test]
fn node_ports() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut a = svc("a", "NodePort");
    a.spec.as_mut().unwrap().ports = Some(vec![
        ServicePort {
            name: Some("dns".into()),
            port: 53,
            protocol: Some("TCP".into()),
            node_port: Some(30053),
            ..Default::default()
        },
        ServicePort {
            name: Some("dns-udp".into()),
            port: 53,
            protocol: Some("UDP".into()),
            ..Default::default()
        },
        ServicePort {
            name: Some("http".into()),
            port: 80,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
    ]);
    let r = ipam.allocate_create(&mut a).unwrap();
    let ports: Vec<i32> =
        spec(&a).ports.as_ref().unwrap().iter().map(|p| p.node_port.unwrap()).collect();
    assert_eq!(ports[0], 30053);
    assert_eq!(ports[1], 30053, "TCP and UDP of one port share the node port");
    assert!(ports[2] >= 30000 + 86, "dynamic ports come from the upper band");
    assert_eq!(r.allocate.len(), 3);

    let mut b = svc("b", "NodePort");
    b.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30053);
    let err = ipam.allocate_create(&mut b).unwrap_err();
    assert_eq!(
        errors_text(&err),
        vec!["spec.ports[0].nodePort: Invalid value: 30053: provided port is already allocated"]
    );
    b.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(29999);
    let err = ipam.allocate_create(&mut b).unwrap_err();
    assert_eq!(
        errors_text(&err),
        vec![
            "spec.ports[0].nodePort: Invalid value: 29999: provided port is not in the valid range. The range of valid ports is 30000-32767"
        ]
    );
    // A failed create leaves nothing behind: only a's IP and two ports are taken.
    assert_eq!(ipam.allocated().len(), 3);

    // Type change to ClusterIP releases the node ports.
    let mut to_cip = a.clone();
    to_cip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    let r = ipam.allocate_update(&a, &mut to_cip).unwrap();
    assert_eq!(r.release.len(), 2);
    assert!(spec(&to_cip).ports.as_ref().unwrap().iter().all(|p| p.node_port.is_none()));
    ipam.commit(&r);
    assert_eq!(ipam.allocated().len(), 1);
}

#[test]
fn load_balancer_health_check_and_no_node_ports() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut lb = svc("lb", "LoadBalancer");
    lb.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    let r = ipam.allocate_create(&mut lb).unwrap();
    ipam.commit(&r);
    assert!(spec(&lb).health_check_node_port.is_some());
    assert_eq!(r.allocate.len(), 3);

    let mut cluster = lb.clone();
    cluster.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".into());
    let r = ipam.allocate_update(&lb, &mut cluster).unwrap();
    assert_eq!(
        r.release,
        vec![Allocation::NodePort(spec(&lb).health_check_node_port.unwrap() as u16)]
    );
    assert!(spec(&cluster).health_check_node_port.is_none());
    ipam.commit(&r);

    let mut nonp = svc("nonp", "LoadBalancer");
    nonp.spec.as_mut().unwrap().allocate_load_balancer_node_ports = Some(false);
    let r = ipam.allocate_create(&mut nonp).unwrap();
    assert_eq!(r.allocate.len(), 1);
    assert!(spec(&nonp).ports.as_ref().unwrap()[0].node_port.is_none());
}

#[test]
fn update_keeps_values_a_put_omits() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut a = svc("a", "NodePort");
    let r = ipam.allocate_create(&mut a).unwrap();
    ipam.commit(&r);
    let mut put = svc("a", "NodePort");
    let r = ipam.allocate_update(&a, &mut put).unwrap();
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(spec(&put).cluster_ip, spec(&a).cluster_ip);
    assert_eq!(
        spec(&put).ports.as_ref().unwrap()[0].node_port,
        spec(&a).ports.as_ref().unwrap()[0].node_port
    );
}

#[test]
fn external_name_change_releases_and_back_allocates() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut a = svc("a", "NodePort");
    let r = ipam.allocate_create(&mut a).unwrap();
    ipam.commit(&r);
    let mut e = a.clone();
    e.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    e.spec.as_mut().unwrap().external_name = Some("example.com".into());
    let r = ipam.allocate_update(&a, &mut e).unwrap();
    assert_eq!(r.release.len(), 2);
    assert!(spec(&e).cluster_ip.is_none() && spec(&e).cluster_ips.is_none());
    ipam.commit(&r);
    assert!(ipam.allocated().is_empty());
    let mut back = e.clone();
    back.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    back.spec.as_mut().unwrap().external_name = None;
    let r = ipam.allocate_update(&e, &mut back).unwrap();
    assert_eq!(r.allocate.len(), 1);
    assert!(spec(&back).cluster_ip.is_some());
}

#[test]
fn rollback_and_delete() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut a = svc("a", "NodePort");
    let r = ipam.allocate_create(&mut a).unwrap();
    ipam.rollback(&r);
    assert!(ipam.allocated().is_empty());
    let r = ipam.allocate_create(&mut a).unwrap();
    ipam.commit(&r);
    let d = ipam.release_delete(&a);
    assert_eq!(d.release.len(), 2);
    assert_eq!(ipam.allocated().len(), 2, "a delete frees only on commit");
    ipam.commit(&d);
    assert!(ipam.allocated().is_empty());
}

#[test]
fn repair_finds_leaks_missing_and_duplicates() {
    let mut ipam = ipam(&["10.96.0.0/12"]);
    let mut a = svc("a", "NodePort");
    a.spec.as_mut().unwrap().cluster_ip = Some("10.96.1.1".into());
    a.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30001);
    let mut b = svc("b", "ClusterIP");
    b.spec.as_mut().unwrap().cluster_ip = Some("10.96.1.1".into());
    let stored = vec![
        (Allocation::ClusterIp("10.96.1.1".parse().unwrap()), "uid-a".to_string()),
        (Allocation::ClusterIp("10.96.9.9".parse().unwrap()), "uid-gone".to_string()),
    ];
    let plan = ipam.repair(&[b, a], &stored);
    assert_eq!(plan.create, vec![(Allocation::NodePort(30001), "uid-a".to_string())]);
    assert_eq!(plan.delete, vec![Allocation::ClusterIp("10.96.9.9".parse().unwrap())]);
    assert_eq!(
        plan.problems,
        vec![
            "the cluster IP 10.96.1.1 for service ns/b was assigned to multiple services; please recreate"
        ]
    );
    assert_eq!(ipam.allocated().len(), 2);
}

#[test]
fn config_errors() {
    let cfg = |cidrs: &[&str], ports: RangeInclusive<u16>| IpamConfig {
        service_cluster_ip_ranges: cidrs.iter().map(|c| net(c)).collect(),
        service_node_port_range: ports,
    };
    assert_eq!(Ipam::new(cfg(&[], 30000..=32767)).unwrap_err(), IpamError::NoRange);
    assert!(matches!(
        Ipam::new(cfg(&["10.0.0.0/24", "10.1.0.0/24"], 30000..=32767)),
        Err(IpamError::SameFamily(..))
    ));
    assert!(matches!(
        Ipam::new(cfg(&["10.0.0.0/32"], 30000..=32767)),
        Err(IpamError::RangeTooSmall(..))
    ));
    assert!(matches!(
        Ipam::new(cfg(&["10.0.0.0/24"], 0..=10)),
        Err(IpamError::BadNodePortRange(..))
    ));
    assert!(Ipam::new(IpamConfig::default()).is_ok());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Create {
            type_idx: u8,
            ip: Option<u8>,
            node_port: Option<u8>,
            local: bool,
            dual: bool,
        },
        Update {
            pick: u8,
            type_idx: u8,
            node_port: Option<u8>,
            local: bool,
            dual: bool,
        },
        Delete {
            pick: u8,
        },
        /// A create whose store write fails.
        FailedCreate {
            type_idx: u8,
        },
        /// The server dies after writing a create's reservations but before the Service.
        CrashMidCreate {
            type_idx: u8,
        },
        /// The server dies after an update's Service write but before freeing what it released.
        CrashAfterUpdate {
            pick: u8,
            type_idx: u8,
        },
    }

    const TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4, proptest::option::of(0u8..70), proptest::option::of(0u8..45), any::<bool>(), any::<bool>())
                .prop_map(|(type_idx, ip, node_port, local, dual)| Op::Create { type_idx, ip, node_port, local, dual }),
            3 => (any::<u8>(), 0u8..4, proptest::option::of(0u8..45), any::<bool>(), any::<bool>())
                .prop_map(|(pick, type_idx, node_port, local, dual)| Op::Update { pick, type_idx, node_port, local, dual }),
            2 => any::<u8>().prop_map(|pick| Op::Delete { pick }),
            1 => (0u8..4).prop_map(|type_idx| Op::FailedCreate { type_idx }),
            1 => (0u8..4).prop_map(|type_idx| Op::CrashMidCreate { type_idx }),
            1 => (any::<u8>(), 0u8..4).prop_map(|(pick, type_idx)| Op::CrashAfterUpdate { pick, type_idx }),
        ]
    }

    fn config() -> IpamConfig {
        IpamConfig {
            service_cluster_ip_ranges: vec![net("10.0.0.0/26"), net("fd00::/122")],
            service_node_port_range: 30000..=30040,
        }
    }

    fn make(n: usize, type_idx: u8) -> Service {
        let mut s = svc(&format!("s{n}"), TYPES[usize::from(type_idx)]);
        s.spec.as_mut().unwrap().ports = Some(vec![
            ServicePort {
                name: Some("a".into()),
                port: 53,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ServicePort {
                name: Some("b".into()),
                port: 53,
                protocol: Some("UDP".into()),
                ..Default::default()
            },
        ]);
        if type_idx == 3 {
            s.spec.as_mut().unwrap().external_name = Some("example.com".into());
        }
        s
    }

    /// The API server's side: the stored Services and reservations.
    struct World {
        ipam: Ipam,
        services: BTreeMap<String, Service>,
        stored: BTreeMap<Allocation, String>,
        next: usize,
    }

    impl World {
        fn write(&mut self, r: &Reservation, svc: &Service) {
            for a in &r.allocate {
                self.stored.insert(a.clone(), owner_of(svc));
            }
            for a in &r.release {
                if !r.allocate.contains(a) {
                    self.stored.remove(a);
                }
            }
        }

        fn restart(&mut self) {
            let mut ipam = Ipam::with_seed(config(), self.next as u64).unwrap();
            let services: Vec<Service> = self.services.values().cloned().collect();
            let stored: Vec<(Allocation, String)> =
                self.stored.iter().map(|(a, o)| (a.clone(), o.clone())).collect();
            let plan = ipam.repair(&services, &stored);
            assert!(plan.problems.is_empty(), "{:?}", plan.problems);
            for a in &plan.delete {
                self.stored.remove(a);
            }
            for (a, o) in plan.create {
                self.stored.insert(a, o);
            }
            self.ipam = ipam;
        }

        fn pick(&self, pick: u8) -> Option<Service> {
            if self.services.is_empty() {
                return None;
            }
            self.services.values().nth(usize::from(pick) % self.services.len()).cloned()
        }

        fn check(&self) {
            let mut owners: BTreeMap<Allocation, String> = BTreeMap::new();
            for (name, svc) in &self.services {
                for a in allocations_of(svc) {
                    if let Some(other) = owners.insert(a.clone(), name.clone()) {
                        panic!("{a} held by {other} and {name}");
                    }
                }
            }
            let held: BTreeSet<Allocation> = owners.keys().cloned().collect();
            let in_memory: BTreeSet<Allocation> = self.ipam.allocated().into_iter().collect();
            assert_eq!(in_memory, held, "memory differs from the Services");
            let stored: BTreeSet<Allocation> = self.stored.keys().cloned().collect();
            assert_eq!(stored, held, "stored reservations differ from the Services");
        }
    }

    fn shape(s: &mut Service, node_port: Option<u8>, local: bool, dual: bool) {
        let spec = s.spec.as_mut().unwrap();
        if let Some(np) = node_port
            && matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
        {
            spec.ports.as_mut().unwrap()[0].node_port = Some(30000 + i32::from(np));
        }
        if spec.type_.as_deref() == Some("LoadBalancer") && local {
            spec.external_traffic_policy = Some("Local".into());
        }
        if dual && spec.type_.as_deref() != Some("ExternalName") {
            spec.ip_family_policy = Some("PreferDualStack".into());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn allocations_stay_unique_and_nothing_leaks(ops in proptest::collection::vec(op(), 1..60)) {
            let mut w = World { ipam: Ipam::with_seed(config(), 1).unwrap(), services: BTreeMap::new(), stored: BTreeMap::new(), next: 0 };
            for op in ops {
                w.next += 1;
                match op {
                    Op::Create { type_idx, ip, node_port, local, dual } => {
                        let mut s = make(w.next, type_idx);
                        if let (Some(ip), true) = (ip, type_idx != 3) {
                            s.spec.as_mut().unwrap().cluster_ip = Some(format!("10.0.0.{ip}"));
                        }
                        shape(&mut s, node_port, local, dual);
                        if let Ok(r) = w.ipam.allocate_create(&mut s) {
                            w.write(&r, &s);
                            w.ipam.commit(&r);
                            w.services.insert(s.metadata.name.clone().unwrap(), s);
                        }
                    }
                    Op::Update { pick, type_idx, node_port, local, dual } => {
                        let Some(old) = w.pick(pick) else { continue };
                        let mut new = old.clone();
                        let spec = new.spec.as_mut().unwrap();
                        spec.type_ = Some(TYPES[usize::from(type_idx)].into());
                        spec.external_name = if type_idx == 3 { Some("example.com".into()) } else { None };
                        spec.external_traffic_policy = None;
                        shape(&mut new, node_port, local, dual);
                        if let Ok(r) = w.ipam.allocate_update(&old, &mut new) {
                            w.write(&r, &new);
                            w.ipam.commit(&r);
                            w.services.insert(new.metadata.name.clone().unwrap(), new);
                        }
                    }
                    Op::Delete { pick } => {
                        let Some(old) = w.pick(pick) else { continue };
                        let r = w.ipam.release_delete(&old);
                        w.services.remove(old.metadata.name.as_deref().unwrap());
                        w.write(&r, &old);
                        w.ipam.commit(&r);
                    }
                    Op::FailedCreate { type_idx } => {
                        let mut s = make(w.next, type_idx);
                        if let Ok(r) = w.ipam.allocate_create(&mut s) {
                            w.ipam.rollback(&r);
                        }
                    }
                    Op::CrashMidCreate { type_idx } => {
                        let mut s = make(w.next, type_idx);
                        if let Ok(r) = w.ipam.allocate_create(&mut s) {
                            for a in &r.allocate {
                                w.stored.insert(a.clone(), owner_of(&s));
                            }
                        }
                        w.restart();
                    }
                    Op::CrashAfterUpdate { pick, type_idx } => {
                        let Some(old) = w.pick(pick) else { continue };
                        let mut new = old.clone();
                        let spec = new.spec.as_mut().unwrap();
                        spec.type_ = Some(TYPES[usize::from(type_idx)].into());
                        spec.external_name = if type_idx == 3 { Some("example.com".into()) } else { None };
                        if let Ok(r) = w.ipam.allocate_update(&old, &mut new) {
                            for a in &r.allocate {
                                w.stored.insert(a.clone(), owner_of(&new));
                            }
                            w.services.insert(new.metadata.name.clone().unwrap(), new);
                        }
                        w.restart();
                    }
                }
                w.check();
            }
        }
    }
}
