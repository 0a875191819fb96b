//! `cargo xtask bench [NAME]`: runs the benchmarks under `bench/` and
//! prints their figures. Each benchmark's README says what it measures.
use std::process::Command;

use crate::run_cmd;

/// Benchmarks run as binaries: name, package, binary. The identity, integrations and OTA
/// benchmarks are cargo benches/examples of `gateway` (see their READMEs under `bench/`).
const BENCHES: &[(&str, &str, &str)] =
    &[("xdp", "iotgw-bench", "xdp-bench"), ("detection", "netns-tests", "detection-latency")];

pub fn run(name: Option<&str>) -> anyhow::Result<()> {
    // The XDP object is always an optimised build; the kernel times it. The controller under
    // test is the same debug build the lab tests use.
    let iotgw = crate::build::run(false)?;
    let mut ran = 0;
    for (bench, package, bin) in BENCHES {
        if name.is_some_and(|n| n != *bench) {
            continue;
        }
        println!("== bench {bench}");
        run_cmd(
            Command::new("cargo").args(["run", "--quiet", "--package", package, "--bin", bin]).env("IOTGW_BIN", &iotgw),
        )?;
        ran += 1;
    }
    anyhow::ensure!(
        ran > 0,
        "no benchmark named {name:?}; known: {:?}",
        BENCHES.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    Ok(())
}
