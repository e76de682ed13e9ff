//! The plain objects a zone is built from, and a loader for a JSON `List` of them.
//!
//! This lets tests, benchmarks and `serve_static` run the server without an API server.
//! It leaves out YAML and every kind other than Service, EndpointSlice, Pod and Namespace.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::error::{Error, Result};

/// Everything the zone needs from the cluster.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Services of every type.
    pub services: Vec<Service>,
    /// EndpointSlices (only headless Services use them).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Pods (verified pod records and autopath).
    pub pods: Vec<Pod>,
    /// Namespaces (`<ns>.svc.<zone>` is NODATA for an existing one).
    pub namespaces: Vec<Namespace>,
}

impl Objects {
    /// Parses `{"kind": "List", "items": [...]}`; items of other kinds are ignored.
    pub fn from_list_json(text: &str) -> Result<Objects> {
        #[derive(serde::Deserialize)]
        struct List {
            items: Vec<serde_json::Value>,
        }
        let list: List = serde_json::from_str(text).map_err(Error::InvalidObjects)?;
        let mut objects = Objects::default();
        for item in list.items {
            match item.get("kind").and_then(|kind| kind.as_str()) {
                Some("Service") => objects
                    .services
                    .push(serde_json::from_value(item).map_err(Error::InvalidObjects)?),
                Some("EndpointSlice") => objects
                    .endpoint_slices
                    .push(serde_json::from_value(item).map_err(Error::InvalidObjects)?),
                Some("Pod") => {
                    objects.pods.push(serde_json::from_value(item).map_err(Error::InvalidObjects)?)
                }
                Some("Namespace") => objects
                    .namespaces
                    .push(serde_json::from_value(item).map_err(Error::InvalidObjects)?),
                _ => {}
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
