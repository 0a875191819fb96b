//! `iotgw run`: the controller.
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway configuration file.
    #[arg(long, short)]
    pub config: std::path::PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
