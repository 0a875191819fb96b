//! `iotgw devices|device|quarantine|release|block` (to be filled in by its issue).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ListArgs {}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    pub mac: crate::device::Mac,
}

#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    pub mac: crate::device::Mac,
}

pub fn list(_args: ListArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}

pub fn show(_args: ShowArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}

pub fn action(_args: ActionArgs, _action: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
