//! `cargo xtask bench [NAME]`: runs the benchmarks under `bench/` (release builds) and
//! prints their figures. Each benchmark's README says what it measures.
use std::process::Command;

use crate::run_cmd;

/// Benchmarks: name, package, binary.
const BENCHES: &[(&str, &str, &str)] = &[("xdp", "iotgw-bench", "xdp-bench")];

pub fn run(name: Option<&str>) -> anyhow::Result<()> {
    crate::setup::run()?;
    let mut ran = 0;
    for (bench, package, bin) in BENCHES {
        if name.is_some_and(|n| n != *bench) {
            continue;
        }
        println!("== bench {bench}");
        run_cmd(Command::new("cargo").args(["run", "--release", "--quiet", "--package", package, "--bin", bin]))?;
        ran += 1;
    }
    anyhow::ensure!(ran > 0, "no benchmark named {name:?}; known: {:?}", BENCHES.iter().map(|b| b.0).collect::<Vec<_>>());
    Ok(())
}
