//! nftables data plane: pipes the renders of `render::nftables` into `nft -f -`.
//!
//! The first `apply` reads which chains and sets the table already has (`nft -j -t list
//! table`, names only) and loads a full render in one transaction that replaces the table's
//! content without deleting the table: established connections keep their conntrack NAT
//! bindings and affinity entries survive a restart. Later applies send only the difference
//! from the previous plan (`render::nftables::update_layout` on the kept layout: for a few
//! changed Service ports it builds only their layouts, so a change costs the same at 100 and
//! at 10,000 Services); if one fails, the next apply starts over with a full sync.
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
        let (script, layout, old) = match self.applied.take() {
            Some((old, mut layout)) => {
                let script = render::update_layout(&mut layout, &old, plan);
                (script, layout, Some(old))
            }
            None => {
                let layout = render::layout(plan);
                let existing = self.existing().await?;
                (render::render_reconcile_layout(&layout, &existing), layout, None)
            }
        };
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
