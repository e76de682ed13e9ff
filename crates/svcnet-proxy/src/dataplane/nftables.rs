//! nftables data plane: pipes the renders of `render::nftables` into `nft -f -`.
//!
//! The first `apply` reads which chains and sets the table already has (`nft -j -t list
//! table`, names only) and loads a full render in one transaction that replaces the table's
//! content without deleting the table: established connections keep their conntrack NAT
//! bindings and affinity entries survive a restart. Later applies send only the difference
//! from the previous plan (`render::nftables::update_layout` on the kept layout: for a few
//! changed Service ports it builds only their layouts, so a change costs the same at 100 and
//! at 10,000 Services); if one fails, the next apply starts over with a full sync.
//! IPv4 affinity elements (written by the packet path) whose backend is no longer a valid
//! target of their frontend are deleted in the same transaction, after listing the affinity
//! map: on a full sync and when an update removes a frontend's backend (`--dry-run` does not
//! show these deletions).
//! Nothing outside `table inet svcnet` is ever touched.

use std::process::Stdio;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::DataPlane;
use crate::render::nftables::{self as render, Existing, Layout, TABLE};
use crate::{Error, ProxyPlan, Result};

/// Settings of the nftables data plane.
#[derive(Debug, Clone)]
pub struct NftablesConfig {
    /// The `nft` binary.
    pub nft: String,
    /// The `conntrack` binary used to clear stale UDP flows; `None` disables the cleanup.
    pub conntrack: Option<String>,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        Self { nft: "nft".to_string(), conntrack: Some("conntrack".to_string()) }
    }
}

/// Programs plans into `table inet svcnet`.
pub struct NftablesDataPlane {
    config: NftablesConfig,
    /// The plan the kernel holds and its layout, when the last apply succeeded (the layout is
    /// kept so that a change renders only the new plan's layout).
    applied: Option<(ProxyPlan, Layout)>,
}

impl NftablesDataPlane {
    pub fn new(config: NftablesConfig) -> Self {
        Self { config, applied: None }
    }

    /// What `apply` would send next, without sending it (for `--dry-run`).
    pub fn pending(&self, plan: &ProxyPlan) -> String {
        match &self.applied {
            Some((old, layout)) => render::update_layout(&mut layout.clone(), old, plan),
            None => render::render(plan),
        }
    }

    async fn existing(&self) -> Result<Existing> {
        let (_, _, listing) =
            run_tool(&self.config.nft, &["-j", "-t", "list", "table", TABLE], None).await?;
        Ok(match listing {
            Ok(json) => parse_existing(&json),
            // No table yet.
            Err(_) => Existing::default(),
        })
    }

    async fn apply_inner(&mut self, plan: &ProxyPlan) -> Result<()> {
        // `applied` stays None until the transaction succeeds: a failure means a full sync.
        let (mut script, layout, old, existing) = match self.applied.take() {
            Some((old, mut layout)) => {
                let script = render::update_layout(&mut layout, &old, plan);
                (script, layout, Some(old), None)
            }
            None => {
                let layout = render::layout(plan);
                let existing = self.existing().await?;
                (render::render_reconcile_layout(&layout, &existing), layout, None, Some(existing))
            }
        };
        // Affinity elements whose backend went away leave in the same transaction: after a
        // full sync (the kernel may hold elements of a previous run) or when a frontend lost
        // a backend. The guard rule of the `affinity` chain catches the few written between
        // this listing and the commit.
        for sfx in ["v4", "v6"] {
            let map = format!("affinity-{sfx}");
            let purge = match &existing {
                Some(existing) => existing.sets.contains_key(&map),
                None => {
                    script.contains(&format!("delete element {TABLE} affinity-backends-{sfx} {{"))
                }
            };
            if !purge || !layout.sets.contains_key(&map) {
                continue;
            }
            let (_, _, listing) =
                run_tool(&self.config.nft, &["-j", "list", "map", TABLE, &map], None).await?;
            if let Ok(json) = listing {
                script.push_str(&purge_script(&map, &stale_affinity(&json, sfx, &layout)));
            }
        }
        if !script.is_empty() {
            let (_, _, result) =
                run_tool(&self.config.nft, &["-f", "-"], Some(script.as_bytes())).await?;
            result.map_err(|stderr| Error::NftApplyFailed { stderr })?;
        }
        if let (Some(ct), Some(old)) = (&self.config.conntrack, &old) {
            crate::conntrack::cleanup(ct, old, plan).await;
        }
        // Keep the applied plan by patching the old one: a clone of a large plan would cost
        // more than the transaction.
        let applied = match old {
            Some(mut old) if old.node == plan.node => {
                for key in render::changed_keys(&old, plan) {
                    match plan.service_ports.get(&key) {
                        Some(sp) => old.service_ports.insert(key, sp.clone()),
                        None => old.service_ports.remove(&key),
                    };
                }
                old.warnings = plan.warnings.clone();
                old
            }
            _ => plan.clone(),
        };
        self.applied = Some((applied, layout));
        Ok(())
    }
}

impl DataPlane for NftablesDataPlane {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply<'a>(&'a mut self, plan: &'a ProxyPlan) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.apply_inner(plan).await {
                Ok(()) => Ok(()),
                Err(first) => {
                    // `applied` is None now: retry once as a full sync, as kube-proxy does.
                    tracing::warn!(error = %first, "nft transaction failed; retrying with a full sync");
                    self.apply_inner(plan).await
                }
            }
        })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.applied = None;
            let (_, _, result) =
                run_tool(&self.config.nft, &["delete", "table", TABLE], None).await?;
            match result {
                Ok(_) => Ok(()),
                Err(stderr) if stderr.contains("No such file") => Ok(()),
                Err(stderr) => Err(Error::NftApplyFailed { stderr }),
            }
        })
    }
}

/// Elements of an affinity map listing (`nft -j list map`, family suffix `sfx`) whose backend
/// is not a valid target of their frontend in `layout` (`affinity-backends-<sfx>`), as
/// `(key, value)` in nft syntax.
pub fn stale_affinity(json: &str, sfx: &str, layout: &Layout) -> Vec<(String, String)> {
    let mut stale = Vec::new();
    let valid = layout.sets.get(&format!("affinity-backends-{sfx}"));
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else { return stale };
    let Some(items) = value.get("nftables").and_then(|v| v.as_array()) else { return stale };
    let elements = items
        .iter()
        .filter_map(|i| i.get("map").and_then(|m| m.get("elem")).and_then(|e| e.as_array()))
        .flatten();
    for element in elements {
        let Some([key, data]) = element.as_array().map(Vec::as_slice) else { continue };
        // A key with a timeout is wrapped in `{"elem": {"val": …}}`.
        let key = key.get("elem").and_then(|e| e.get("val")).unwrap_or(key);
        let (Some(key), Some(data)) = (concat_parts(key), concat_parts(data)) else { continue };
        let ([saddr, daddr, proto, port], [addr, bport]) = (key.as_slice(), data.as_slice()) else {
            continue;
        };
        let pair = format!("{daddr} . {proto} . {port} . {addr} . {bport}");
        if !valid.is_some_and(|v| v.elements.contains_key(&pair)) {
            stale.push((
                format!("{saddr} . {daddr} . {proto} . {port}"),
                format!("{addr} . {bport}"),
            ));
        }
    }
    stale
}

/// The parts of a JSON `{"concat": [...]}` as nft text (addresses normalised).
fn concat_parts(value: &serde_json::Value) -> Option<Vec<String>> {
    value
        .get("concat")?
        .as_array()?
        .iter()
        .map(|p| match p {
            serde_json::Value::String(s) => {
                Some(s.parse::<std::net::IpAddr>().map(|a| a.to_string()).unwrap_or(s.clone()))
            }
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// Deletes `stale` elements of `map`. Each is added first (a no-op when it is there), so that
/// one that expired since the listing does not fail the transaction.
pub fn purge_script(map: &str, stale: &[(String, String)]) -> String {
    let mut out = String::new();
    for chunk in stale.chunks(1000) {
        let adds: Vec<String> =
            chunk.iter().map(|(k, v)| format!("{k} timeout 1s : {v}")).collect();
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        out.push_str(&format!("add element {TABLE} {map} {{ {} }}\n", adds.join(", ")));
        out.push_str(&format!("delete element {TABLE} {map} {{ {} }}\n", keys.join(", ")));
    }
    out
}

/// Chain, set and map names of `nft -j -t list table` output.
pub fn parse_existing(json: &str) -> Existing {
    let mut existing = Existing::default();
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else { return existing };
    let Some(items) = value.get("nftables").and_then(|v| v.as_array()) else { return existing };
    for item in items {
        for kind in ["chain", "set", "map"] {
            if let Some(name) = item.get(kind).and_then(|o| o.get("name")).and_then(|n| n.as_str())
            {
                if kind == "chain" {
                    existing.chains.insert(name.to_string());
                } else {
                    existing.sets.insert(name.to_string(), kind.to_string());
                }
            }
        }
    }
    existing
}

/// Runs `program args`, feeding `stdin`; returns (status code, stdout, Ok(stdout) on success
/// or Err(stderr)). Only failure to start the program is an `Err` of the outer result.
pub(crate) async fn run_tool(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<(i32, String, Result<String, String>)> {
    let tool_err = |source| Error::Tool { tool: program.to_string(), source };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(tool_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).await.map_err(tool_err)?;
        drop(pipe);
    }
    let out = child.wait_with_output().await.map_err(tool_err)?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let code = out.status.code().unwrap_or(-1);
    if out.status.success() {
        Ok((code, stdout.clone(), Ok(stdout)))
    } else {
        Ok((code, stdout, Err(String::from_utf8_lossy(&out.stderr).trim().to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_affinity_elements_are_those_of_removed_backends() {
        let mut layout = Layout::default();
        let valid = layout.sets.entry("affinity-backends-v4".to_string()).or_default();
        valid.elements.insert("10.96.0.10 . tcp . 80 . 10.1.0.2 . 8080".to_string(), None);
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"map": {"family": "inet",
          "name": "affinity-v4", "table": "svcnet", "elem": [
          [{"elem": {"val": {"concat": ["10.1.0.11", "10.96.0.10", "tcp", 80]}, "timeout": 60}},
           {"concat": ["10.1.0.2", 8080]}],
          [{"elem": {"val": {"concat": ["10.1.0.12", "10.96.0.10", "tcp", 80]}, "timeout": 60}},
           {"concat": ["10.1.0.3", 8080]}]]}}]}"#;
        let stale = stale_affinity(json, "v4", &layout);
        assert_eq!(
            stale,
            vec![("10.1.0.12 . 10.96.0.10 . tcp . 80".to_string(), "10.1.0.3 . 8080".to_string())]
        );
        let script = purge_script("affinity-v4", &stale);
        assert_eq!(
            script,
            "add element inet svcnet affinity-v4 { 10.1.0.12 . 10.96.0.10 . tcp . 80 timeout 1s : 10.1.0.3 . 8080 }\n\
             delete element inet svcnet affinity-v4 { 10.1.0.12 . 10.96.0.10 . tcp . 80 }\n"
        );
        assert!(stale_affinity("not json", "v4", &layout).is_empty());
    }
}
