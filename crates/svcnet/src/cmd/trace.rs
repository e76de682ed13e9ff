//! `svcnet trace` (not built yet).

/// Not built yet: this command exits with status 2.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    Err(super::NotBuilt("svcnet trace").into())
}
