//! Property tests of `plan` over random Services and EndpointSlices.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
struct Ep {
    host: u8,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: u8,
}

fn endpoint() -> impl Strategy<Value = Ep> {
    (0u8..12, prop::bool::ANY, prop::bool::ANY, prop::bool::ANY, 1u8..4).prop_map(
        |(host, ready, serving, terminating, node)| Ep { host, ready, serving, terminating, node },
    )
}

fn model(slices: &[Vec<Ep>], service_type: &str, itp: &str, etp: &str) -> Model {
    let mut model = Model::default();
    model.insert_service(Service {
        metadata: ObjectMeta {
            name: Some("svc".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(service_type.into()),
            cluster_ip: Some("10.96.0.1".into()),
            internal_traffic_policy: Some(itp.into()),
            external_traffic_policy: Some(etp.into()),
            ports: Some(vec![ServicePort {
                port: 80,
                node_port: Some(30080),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    });
    for (i, endpoints) in slices.iter().enumerate() {
        model.insert_endpoint_slice(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("svc-{i}")),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([(LABEL_SERVICE_NAME.to_string(), "svc".to_string())])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort { port: Some(8080), ..Default::default() }]),
            endpoints: endpoints
                .iter()
                .map(|ep| Endpoint {
                    addresses: vec![format!("10.244.0.{}", ep.host)],
                    conditions: Some(EndpointConditions {
                        ready: Some(ep.ready),
                        serving: Some(ep.serving),
                        terminating: Some(ep.terminating),
                    }),
                    node_name: Some(format!("node-{}", ep.node)),
                    ..Default::default()
                })
                .collect(),
        });
    }
    model
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// kube-proxy's categorisation, restated: every ready endpoint is used (no topology here);
    /// serving-terminating ones only without a ready one; Local uses only local endpoints;
    /// `has_endpoints_anywhere` is true exactly when some endpoint is usable.
    #[test]
    fn endpoints_are_categorised_like_kube_proxy(
        slices in prop::collection::vec(prop::collection::vec(endpoint(), 0..5), 0..3),
        service_type in prop::sample::select(vec!["ClusterIP", "NodePort"]),
        itp in prop::sample::select(vec!["Cluster", "Local"]),
        etp in prop::sample::select(vec!["Cluster", "Local"]),
    ) {
        let model = model(&slices, service_type, itp, etp);
        let node = NodeInfo { name: "node-1".into(), ..NodeInfo::default() };
        let plan = plan(&model, &node);
        prop_assert_eq!(plan.service_ports.len(), 1);
        let port = plan.service_ports.values().next().unwrap();
        // The endpoint each address stands for (a local copy wins, as in kube-proxy).
        let mut by_host: BTreeMap<u8, Ep> = BTreeMap::new();
        for ep in slices.iter().flatten() {
            if !by_host.contains_key(&ep.host) || ep.node == 1 {
                by_host.insert(ep.host, ep.clone());
            }
        }
        let eps: Vec<&Ep> = by_host.values().collect();
        let host_of = |b: &Backend| match b.ip { IpAddr::V4(v4) => v4.octets()[3], IpAddr::V6(_) => 255 };
        let usable_st = |ep: &Ep| !ep.ready && ep.serving && ep.terminating;
        let any_ready = eps.iter().any(|ep| ep.ready);
        let uses_cluster = itp == "Cluster" || (service_type == "NodePort" && etp == "Cluster");
        if uses_cluster {
            let expected: Vec<u8> = eps
                .iter()
                .filter(|ep| if any_ready { ep.ready } else { usable_st(ep) })
                .map(|ep| ep.host)
                .collect();
            let actual: Vec<u8> = port.cluster_backends.iter().map(host_of).collect();
            prop_assert_eq!(actual, expected);
        }
        prop_assert!(port.local_backends.iter().all(|b| b.is_local));
        let any_local_ready = eps.iter().any(|ep| ep.ready && ep.node == 1);
        for b in &port.local_backends {
            prop_assert_eq!(b.ready, any_local_ready);
        }
        prop_assert_eq!(port.has_endpoints_anywhere, eps.iter().any(|ep| ep.ready || usable_st(ep)));
        prop_assert!(port.cluster_backends.iter().chain(&port.local_backends).all(|b| b.weight == 1 && b.port == 8080));
    }
}
