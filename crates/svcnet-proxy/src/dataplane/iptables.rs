//! iptables data plane: `iptables-restore --noflush` of `render::iptables`, per family.
//!
//! The first `apply` reads svcnet's existing chains with `iptables-save`, restores the full
//! layout (deleting chains the plan no longer has) and adds the jumps from the built-in
//! chains once each (`-C`, then `-I … 1`). Later applies are partial syncs (KEP-3453): only
//! the top-level chains and the chains of changed Service ports. A failed restore makes the
//! next attempt a full sync. Chains not starting with `SVNT-` are never touched, and restores
//! use `--noflush`, so other rules in the same tables survive.

use std::collections::BTreeSet;

use futures::future::BoxFuture;

use super::DataPlane;
use super::nftables::run_tool;
use crate::render::iptables::{self as render, PREFIX};
use crate::{Error, IpFamily, ProxyPlan, Result};

/// Which iptables backend to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IptablesBackend {
    /// `iptables` (nf_tables on Debian).
    #[default]
    Default,
    /// `iptables-legacy`.
    Legacy,
}

#[derive(Debug, Clone)]
pub struct IptablesConfig {
    pub backend: IptablesBackend,
    /// Program IPv6 too (ip6tables); IPv6 Service ports are skipped otherwise.
    pub ipv6: bool,
    /// The `conntrack` binary used to clear stale UDP flows; `None` disables the cleanup.
    pub conntrack: Option<String>,
}

impl Default for IptablesConfig {
    fn default() -> Self {
        Self {
            backend: IptablesBackend::Default,
            ipv6: true,
            conntrack: Some("conntrack".to_string()),
        }
    }
}

pub struct IptablesDataPlane {
    config: IptablesConfig,
    applied: Option<ProxyPlan>,
}

struct Tools {
    iptables: String,
    restore: String,
    save: String,
}

impl IptablesDataPlane {
    pub fn new(config: IptablesConfig) -> Self {
        Self { config, applied: None }
    }

    fn families(&self) -> Vec<IpFamily> {
        if self.config.ipv6 { vec![IpFamily::V4, IpFamily::V6] } else { vec![IpFamily::V4] }
    }

    fn tools(&self, family: IpFamily) -> Tools {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let suffix = match self.config.backend {
            IptablesBackend::Default => "",
            IptablesBackend::Legacy => "-legacy",
        };
        Tools {
            iptables: format!("{base}{suffix}"),
            restore: format!("{base}{suffix}-restore"),
            save: format!("{base}{suffix}-save"),
        }
    }

    /// svcnet's chains of `table` as iptables-save shows them.
    async fn existing(&self, tools: &Tools, table: &str) -> Result<BTreeSet<String>> {
        let (_, _, result) = run_tool(&tools.save, &["-t", table], None).await?;
        let text = result.unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| c.starts_with(PREFIX))
            .map(str::to_string)
            .collect())
    }

    async fn restore(&self, tools: &Tools, input: &str) -> Result<()> {
        let (_, _, result) =
            run_tool(&tools.restore, &["-w", "--noflush"], Some(input.as_bytes())).await?;
        result
            .map(|_| ())
            .map_err(|stderr| Error::IptablesRestoreFailed { tool: tools.restore.clone(), stderr })
    }

    async fn ensure_jumps(&self, tools: &Tools) -> Result<()> {
        for (table, chain, spec) in render::jump_rules() {
            let spec: Vec<&str> = spec.split_whitespace().collect();
            let mut check = vec!["-w", "-t", table, "-C", chain];
            check.extend(&spec);
            let (_, _, present) = run_tool(&tools.iptables, &check, None).await?;
            if present.is_err() {
                let mut insert = vec!["-w", "-t", table, "-I", chain, "1"];
                insert.extend(&spec);
                let (_, _, result) = run_tool(&tools.iptables, &insert, None).await?;
                result.map_err(|stderr| Error::IptablesRestoreFailed {
                    tool: tools.iptables.clone(),
                    stderr,
                })?;
            }
        }
        Ok(())
    }

    async fn apply_inner(&mut self, plan: &ProxyPlan) -> Result<()> {
        let old = self.applied.take();
        for family in self.families() {
            let tools = self.tools(family);
            match &old {
                Some(old) => {
                    let input = render::render_update(old, plan, family);
                    self.restore(&tools, &input).await?;
                }
                None => {
                    let existing = self.existing(&tools, "nat").await?;
                    let input = render::render_family(plan, family, &existing);
                    self.restore(&tools, &input).await?;
                    self.ensure_jumps(&tools).await?;
                }
            }
        }
        self.applied = Some(plan.clone());
        if let (Some(ct), Some(old)) = (&self.config.conntrack, &old) {
            crate::conntrack::cleanup(ct, old, plan).await;
        }
        Ok(())
    }
}

impl DataPlane for IptablesDataPlane {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn apply<'a>(&'a mut self, plan: &'a ProxyPlan) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.apply_inner(plan).await {
                Ok(()) => Ok(()),
                Err(first) => {
                    tracing::warn!(error = %first, "iptables-restore failed; retrying with a full sync");
                    self.apply_inner(plan).await
                }
            }
        })
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.applied = None;
            for family in self.families() {
                let tools = self.tools(family);
                for (table, chain, spec) in render::jump_rules() {
                    let spec: Vec<&str> = spec.split_whitespace().collect();
                    let mut delete = vec!["-w", "-t", table, "-D", chain];
                    delete.extend(&spec);
                    // Delete every copy; stops at the first failure (none left).
                    for _ in 0..8 {
                        let (_, _, result) = run_tool(&tools.iptables, &delete, None).await?;
                        if result.is_err() {
                            break;
                        }
                    }
                }
                let mut input = String::new();
                for table in ["filter", "nat"] {
                    let chains = self.existing(&tools, table).await?;
                    input.push_str(&format!("*{table}\n"));
                    for c in &chains {
                        input.push_str(&format!(":{c} - [0:0]\n"));
                    }
                    for c in &chains {
                        input.push_str(&format!("-X {c}\n"));
                    }
                    input.push_str("COMMIT\n");
                }
                self.restore(&tools, &input).await?;
            }
            Ok(())
        })
    }
}
