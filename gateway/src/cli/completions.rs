//! `iotgw completions SHELL`: the shell completion script for `iotgw`, on stdout (the package
//! installs bash's, zsh's and fish's; `source <(iotgw completions bash)` works anywhere).
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    // Into a buffer first: `generate` panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "iotgw", &mut script);
    std::io::stdout().write_all(&script).context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}
