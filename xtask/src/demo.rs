//! `cargo xtask demo`: set-up, build, then the lab demo (`tests/netns/src/bin/lab-demo.rs`)
//! on the policies shipped in `policies/`. `--fleet`: the fleet demo instead
//! (`tests/netns/src/bin/fleet-demo.rs`): three sites, one hub.
use std::process::Command;

use crate::{run_cmd, workspace_root};

pub fn run(fleet: bool, hold_secs: u64) -> anyhow::Result<()> {
    let iotgw = crate::build::run(false)?;
    anyhow::ensure!(crate::setup::is_root(), "the demo builds network namespaces and loads XDP: run it as root");
    let bin = if fleet { "fleet-demo" } else { "lab-demo" };
    let mut command = Command::new("cargo");
    command
        .args(["run", "--quiet", "--package", "netns-tests", "--bin", bin, "--"])
        .arg(workspace_root().join("policies"))
        .env("IOTGW_BIN", &iotgw);
    if fleet {
        command.args(["--hold", &hold_secs.to_string()]);
    }
    run_cmd(&mut command)
}
