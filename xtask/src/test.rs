//! `cargo xtask test`: the lint gates, every unit and integration test, then the lab tests
//! over the real kernel datapath. The lab tests need root; they fail rather than skip when
//! they cannot get it, and so does any test whose dataset or tool is missing. Last, the Debian
//! package is assembled around the same binary and checked (`package_check`; filter
//! `package`): its binary is the debug build the lab ran, not a second, optimised build, because
//! the check is of the packaging and a release build would add minutes to every run.
use std::{process::Command, time::Duration};

use anyhow::Context as _;

use crate::run_cmd_within;

/// The filter that runs the package check (with the lab tests whose names contain it).
const PACKAGE_FILTER: &str = "package";
/// Longest each phase may take, building included (CI stops the whole job at 90 minutes). The
/// whole suite takes about 17 minutes on a quiet two-core machine; a phase that runs past its
/// limit has a hung test, and is killed so the run fails with it named.
const UNIT_LIMIT: Duration = Duration::from_secs(35 * 60);
const LAB_LIMIT: Duration = Duration::from_secs(30 * 60);

pub fn run(filter: Option<&str>) -> anyhow::Result<()> {
    let iotgw = crate::build::run(false)?;
    // The gates run on the whole tree; a filtered run is someone iterating on a few tests.
    if filter.is_none() {
        crate::lint::run()?;
    }
    let mut unit = Command::new("cargo");
    // gateway-ebpf builds only for the bpf target (gateway's build.rs does that); its ABI is
    // compiled and checked as part of gateway. `--no-fail-fast`: one failing test binary must
    // not hide the results of the others.
    unit.args(["test", "--no-fail-fast", "--workspace", "--exclude", "netns-tests", "--exclude", "gateway-ebpf"]);
    if let Some(filter) = filter {
        unit.args(["--", filter]);
    }
    let unit_result = run_cmd_within(&mut unit, UNIT_LIMIT);

    if !crate::setup::is_root() {
        anyhow::bail!("the lab tests need root (network namespaces, XDP): run `cargo xtask test` as root");
    }
    let mut lab = Command::new("cargo");
    // One test at a time: each builds its own lab and loads XDP, on a two-core machine.
    lab.args(["test", "--no-fail-fast", "--package", "netns-tests", "--", "--test-threads=1"]).env("IOTGW_BIN", &iotgw);
    if let Some(filter) = filter {
        lab.arg(filter);
    }
    let mut lab_result = run_cmd_within(&mut lab, LAB_LIMIT);
    if filter.is_none_or(|filter| filter == PACKAGE_FILTER) {
        let package = crate::package::assemble(&iotgw).and_then(|deb| crate::package_check::run(&deb));
        lab_result = match (lab_result, package) {
            (Ok(()), package) => package.context("package check failed"),
            (Err(lab), Ok(())) => Err(lab),
            (Err(lab), Err(package)) => Err(lab.context(format!("and the package check failed: {package:#}"))),
        };
    }
    match (unit_result, lab_result) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(unit), Ok(())) => Err(unit.context("unit and integration tests failed (the lab tests passed)")),
        (Ok(()), Err(lab)) => Err(lab.context("lab tests failed")),
        (Err(unit), Err(lab)) => {
            Err(unit.context(format!("unit and integration tests failed, and so did the lab: {lab:#}")))
        }
    }
}
