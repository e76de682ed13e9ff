//! Label selector matching, names and hashing shared by the controllers.
//!
//! `pod_template_hash` follows the Deployment controller's idea (a stable hash of the template
//! and the collision count, encoded with Kubernetes' vowel-free alphabet) but uses FNV-1a over
//! the template's JSON, so the values differ from Kubernetes' own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Kubernetes' `rand.SafeEncodeString` alphabet (no vowels, no confusable digits).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bits.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Encodes a number with the safe alphabet (at least `len` characters).
pub fn safe_encode(mut value: u64, len: usize) -> String {
    let mut out = String::new();
    let base = ALPHABET.len() as u64;
    while out.len() < len || value > 0 {
        let idx = usize::try_from(value % base).unwrap_or(0);
        out.push(char::from(ALPHABET[idx]));
        value /= base;
        if out.len() >= 10 {
            break;
        }
    }
    out
}

/// The `pod-template-hash` of a template.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(count.to_string().as_bytes());
    }
    safe_encode(u64::from(fnv32a(&bytes)), 6)
}

/// A random-looking name suffix, unique per process run.
pub fn name_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{nanos}-{n}-{}", std::process::id());
    let hash = u64::from(fnv32a(seed.as_bytes())) << 8 | (n & 0xff);
    let mut suffix = safe_encode(hash, 5);
    suffix.truncate(5);
    suffix
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty);
    if empty {
        // An empty selector matches nothing for workload controllers.
        return false;
    }
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.clone().unwrap_or_default();
        let value = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_safe() {
        let template: PodTemplateSpec =
            serde_json::from_value(serde_json::json!({"metadata": {"labels": {"app": "web"}}}))
                .unwrap();
        let a = pod_template_hash(&template, None);
        assert_eq!(a, pod_template_hash(&template, None));
        assert_ne!(a, pod_template_hash(&template, Some(1)));
        assert!(a.len() >= 6 && a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(name_suffix(), name_suffix());
        assert_eq!(name_suffix().len(), 5);
    }

    #[test]
    fn selectors() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
        }))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(selector_matches(&selector, &labels(&[("app", "web"), ("tier", "a")])));
        assert!(!selector_matches(&selector, &labels(&[("app", "web"), ("tier", "c")])));
        assert!(!selector_matches(&selector, &labels(&[("tier", "a")])));
        assert!(!selector_matches(&LabelSelector::default(), &labels(&[("app", "web")])));
    }
}
