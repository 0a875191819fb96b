//! `cargo xtask bench [NAME]`: runs the benchmarks under `bench/` and
//! prints their figures. Each benchmark's README says what it measures.
use std::process::Command;

use crate::run_cmd;

/// Benchmarks and the cargo arguments that run them. The identity, integrations and OTA
/// benchmarks are cargo benches/examples of `gateway` run by hand (see their READMEs under
/// `bench/`); the console's and the fleet's are cargo benches too (release, as `cargo bench` builds).
const BENCHES: &[(&str, &[&str])] = &[
    ("xdp", &["run", "--quiet", "--package", "iotgw-bench", "--bin", "xdp-bench"]),
    ("scale", &["run", "--quiet", "--package", "iotgw-bench", "--bin", "scale-bench"]),
    ("detection", &["run", "--quiet", "--package", "netns-tests", "--bin", "detection-latency"]),
    ("console", &["bench", "--quiet", "--package", "gateway", "--bench", "console"]),
    ("fleet", &["bench", "--quiet", "--package", "gateway", "--bench", "fleet"]),
];

pub fn run(name: Option<&str>) -> anyhow::Result<()> {
    // The XDP object is always an optimised build; the kernel times it. The controller under
    // test is the same debug build the lab tests use.
    let iotgw = crate::build::run(false)?;
    let mut ran = 0;
    for (bench, cargo_args) in BENCHES {
        if name.is_some_and(|n| n != *bench) {
            continue;
        }
        println!("== bench {bench}");
        run_cmd(Command::new("cargo").args(*cargo_args).env("IOTGW_BIN", &iotgw))?;
        ran += 1;
    }
    anyhow::ensure!(
        ran > 0,
        "no benchmark named {name:?}; known: {:?}",
        BENCHES.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    Ok(())
}
