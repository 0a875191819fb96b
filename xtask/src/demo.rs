//! `cargo xtask demo`: set-up, build, then the lab demo (`tests/netns/src/bin/lab-demo.rs`)
//! on the policies shipped in `policies/`.
use std::process::Command;

use crate::{run_cmd, workspace_root};

pub fn run() -> anyhow::Result<()> {
    let iotgw = crate::build::run(false)?;
    anyhow::ensure!(crate::setup::is_root(), "the demo builds network namespaces and loads XDP: run it as root");
    run_cmd(
        Command::new("cargo")
            .args(["run", "--quiet", "--package", "netns-tests", "--bin", "lab-demo", "--"])
            .arg(workspace_root().join("policies"))
            .env("IOTGW_BIN", &iotgw),
    )
}
