//! The plain objects a zone is built from, and a loader for a JSON `List` of them.
//!
//! This lets tests, benchmarks and `serve_static` run the server without an API server.
//! It leaves out YAML and every kind other than Service, EndpointSlice, Pod and Namespace.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde::de::Error as _;

use crate::error::{Error, Result};
use crate::zone::PodIps;

/// Everything the zone needs from the cluster.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Services of every type.
    pub services: Vec<Service>,
    /// EndpointSlices (only headless Services use them).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Pods (verified pod records and autopath), kept as namespace and IPs as the watch does.
    pub pods: Vec<PodIps>,
    /// Namespaces (`<ns>.svc.<zone>` is NODATA for an existing one).
    pub namespaces: Vec<Namespace>,
}

/// One item of the list, converted as soon as it is parsed (a whole `Pod` is kilobytes; the
/// list is never held as JSON values, so a file of 50,000 pods parses in little memory).
enum Item {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(PodIps),
    Namespace(Box<Namespace>),
    Other,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Item, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind = value.get("kind").and_then(serde_json::Value::as_str).unwrap_or_default();
        let item = match kind {
            "Service" => serde_json::from_value(value).map(Item::Service),
            "EndpointSlice" => serde_json::from_value(value).map(Item::EndpointSlice),
            "Pod" => serde_json::from_value::<Pod>(value).map(|pod| Item::Pod(PodIps::of(&pod))),
            "Namespace" => serde_json::from_value(value).map(Item::Namespace),
            _ => Ok(Item::Other),
        };
        item.map_err(D::Error::custom)
    }
}

impl Objects {
    /// Parses `{"kind": "List", "items": [...]}`; items of other kinds are ignored.
    pub fn from_list_json(text: &str) -> Result<Objects> {
        #[derive(Deserialize)]
        struct List {
            items: Vec<Item>,
        }
        let list: List = serde_json::from_str(text).map_err(Error::InvalidObjects)?;
        let mut objects = Objects::default();
        for item in list.items {
            match item {
                Item::Service(service) => objects.services.push(*service),
                Item::EndpointSlice(slice) => objects.endpoint_slices.push(*slice),
                Item::Pod(pod) => objects.pods.push(pod),
                Item::Namespace(namespace) => objects.namespaces.push(*namespace),
                Item::Other => {}
            }
        }
        Ok(objects)
    }

    /// Builds the zone from these objects.
    pub fn zone(&self, config: &crate::ZoneConfig) -> crate::Zone {
        crate::Zone::build(
            &self.services,
            &self.endpoint_slices,
            &self.pods,
            &self.namespaces,
            config,
        )
    }
}
