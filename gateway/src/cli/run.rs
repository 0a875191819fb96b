//! `iotgw run --config FILE`: check the configuration, then hand over to the controller.
use std::process::ExitCode;

use crate::cli::EXIT_CONFIG;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway configuration file.
    #[arg(long, short)]
    pub config: std::path::PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match crate::config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("iotgw: {error}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(crate::controller::run(config))?;
    Ok(ExitCode::SUCCESS)
}
