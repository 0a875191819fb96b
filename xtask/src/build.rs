//! `cargo xtask build`: set-up, then one cargo build that also builds and embeds the XDP
//! object (gateway's build.rs).
use std::{path::PathBuf, process::Command};

use crate::{run_cmd, workspace_root};

/// Builds `iotgw` and returns the binary's path.
pub fn run(release: bool) -> anyhow::Result<PathBuf> {
    crate::setup::run()?;
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--package", "gateway", "--bin", "iotgw"]);
    if release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    Ok(workspace_root().join("target").join(if release { "release" } else { "debug" }).join("iotgw"))
}
