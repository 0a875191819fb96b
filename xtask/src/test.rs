//! `cargo xtask test`: every unit test, then the lab tests over the real kernel datapath.
//! The lab tests need root; under CI they fail rather than skip when they cannot get it.
use std::process::Command;

use crate::run_cmd;

pub fn run(filter: Option<&str>) -> anyhow::Result<()> {
    let iotgw = crate::build::run(false)?;
    let mut unit = Command::new("cargo");
    // gateway-ebpf builds only for the bpf target (gateway's build.rs does that); its ABI is
    // compiled and checked as part of gateway.
    unit.args(["test", "--workspace", "--exclude", "netns-tests", "--exclude", "gateway-ebpf"]);
    if let Some(filter) = filter {
        unit.args(["--", filter]);
    }
    run_cmd(&mut unit)?;

    if !crate::setup::is_root() {
        anyhow::bail!("the lab tests need root (network namespaces, XDP): run `cargo xtask test` as root");
    }
    let mut lab = Command::new("cargo");
    // One test at a time: each builds its own lab and loads XDP, on a two-core machine.
    lab.args(["test", "--package", "netns-tests", "--", "--test-threads=1"]).env("IOTGW_BIN", &iotgw);
    if let Some(filter) = filter {
        lab.arg(filter);
    }
    run_cmd(&mut lab)
}
