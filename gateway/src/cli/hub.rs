//! `iotgw hub --config FILE`: check the hub's configuration, then run it (`hub::service`).
//! The hub's tools are subcommands beside it (`iotgw hub <tool> ...`), one `HubCommand`
//! variant each; `--config` alone runs the hub.
use std::{path::PathBuf, process::ExitCode};

use crate::cli::EXIT_CONFIG;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// The hub's configuration file; runs the hub.
    #[arg(long, short, required = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<HubCommand>,
}

/// The hub's tools, run instead of the hub.
#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match (args.command, args.config) {
        (Some(command), _) => match command {},
        (None, Some(path)) => serve(&path),
        (None, None) => anyhow::bail!("give --config FILE to run the hub"),
    }
}

/// Loads the configuration (exiting with `EXIT_CONFIG` on any problem, before connecting to
/// anything) and runs the hub until SIGINT/SIGTERM.
fn serve(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match crate::hub::Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("iotgw: {error}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(crate::hub::service::run(config))?;
    Ok(ExitCode::SUCCESS)
}
