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
    // The policy is checked before anything is attached: a bad file never half-configures.
    let policy = match crate::policy::PolicyStore::open(&config.policy.dir) {
        Ok(policy) => policy,
        Err(errors) => {
            for error in &errors {
                eprintln!("iotgw: {error}");
            }
            eprintln!("iotgw: {} policy error(s) in {}; nothing attached", errors.len(), config.policy.dir.display());
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(crate::controller::run(config, policy))?;
    Ok(ExitCode::SUCCESS)
}
