//! `iotgw analyze` (to be filled in by its issue).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Capture files (libpcap).
    pub captures: Vec<std::path::PathBuf>,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("iotgw analyze is not built yet")
}
