//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the coverage-guided fuzz targets of `fuzz/`
//! (cargo-fuzz, libFuzzer) one after the other, each for `N` seconds on one core, and prints
//! per target the inputs executed, exec/s and crashes. Fails when a target crashes.
//!
//! The targets build with the nightly pinned in `gateway-ebpf/rust-toolchain.toml` (cargo-fuzz
//! needs a nightly; that one is already installed for the XDP programs) and `AYA_BUILD_SKIP=1`
//! (an empty XDP object is embedded: no target loads it). The seeds in `fuzz/corpus/<target>/`
//! are read, never written: each run starts from them, what it learns goes to
//! `fuzz/target/corpus/<target>/` (emptied first, so a run depends on the repository only),
//! crashes to `fuzz/target/artifacts/<target>/`. Figures: `bench/fuzz/RESULTS.md`.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{run_cmd, setup, workspace_root};

/// Seconds per target when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 60;
/// An input running longer than this is reported as a crash (a hang), in seconds.
const INPUT_TIMEOUT_SECS: u64 = 10;
/// The sanitizer the targets build with: none, since gateway is `forbid(unsafe_code)` and
/// panics (debug assertions and overflow checks on, `-a`) are what these targets look for;
/// AddressSanitizer would halve the rate to watch memory that safe Rust cannot misuse.
const SANITIZER: &str = "none";

/// What one target's run gave.
struct Outcome {
    target: String,
    seconds: f64,
    inputs: u64,
    crashes: usize,
    corpus: usize,
}

pub fn run(target: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    let toolchain = setup::ebpf_toolchain()?;
    setup::ebpf_toolchain_installed(&toolchain)?;
    setup::cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = match target {
        Some(name) if all.iter().any(|t| t == name) => vec![name.to_owned()],
        Some(name) => bail!("no fuzz target {name:?}; there are: {}", all.join(", ")),
        None => all,
    };
    build(&fuzz_dir, &toolchain)?;
    let mut outcomes = Vec::new();
    for name in &chosen {
        let outcome = fuzz(&fuzz_dir, name, seconds)?;
        println!(
            "fuzz: {name}: {} inputs in {:.0} s ({:.0} exec/s), {} crashes, corpus {}",
            outcome.inputs,
            outcome.seconds,
            outcome.rate(),
            outcome.crashes,
            outcome.corpus
        );
        outcomes.push(outcome);
    }
    println!("\n| target | inputs executed | exec/s | time (s) | crashes | corpus (seeds + found) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for o in &outcomes {
        println!(
            "| `{}` | {} | {:.0} | {:.0} | {} | {} |",
            o.target,
            o.inputs,
            o.rate(),
            o.seconds,
            o.crashes,
            o.corpus
        );
    }
    let crashed: Vec<&str> = outcomes.iter().filter(|o| o.crashes > 0).map(|o| o.target.as_str()).collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {} (inputs under fuzz/target/artifacts/)", crashed.join(", "));
    }
    Ok(())
}

impl Outcome {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 { self.inputs as f64 / self.seconds } else { 0.0 }
    }
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`, one per target.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table = text.parse().with_context(|| format!("parsing {}", manifest.display()))?;
    let bins = doc.get("bin").and_then(|b| b.as_array()).context("fuzz/Cargo.toml has no [[bin]]")?;
    bins.iter()
        .map(|bin| bin.get("name").and_then(|n| n.as_str()).map(str::to_owned).context("a [[bin]] without a name"))
        .collect()
}

/// `cargo fuzz build` of every target: release, debug assertions (overflow checks) on.
fn build(fuzz_dir: &Path, toolchain: &str) -> anyhow::Result<()> {
    run_cmd(
        Command::new("rustup")
            .args(["run", toolchain, "cargo", "fuzz", "build", "--release", "--debug-assertions"])
            .args(["--sanitizer", SANITIZER, "--fuzz-dir"])
            .arg(fuzz_dir)
            .env("AYA_BUILD_SKIP", "1"),
    )
}

/// Runs one target's binary for `seconds` on one core (`-jobs=1 -workers=1`: libFuzzer runs it
/// in a child whose output goes to `fuzz-0.log` in the log folder) and reads the final stats.
fn fuzz(fuzz_dir: &Path, name: &str, seconds: u64) -> anyhow::Result<Outcome> {
    let binary = fuzz_dir.join("target/x86_64-unknown-linux-gnu/release").join(name);
    let seeds = fuzz_dir.join("corpus").join(name);
    let scratch = fuzz_dir.join("target");
    let corpus = fresh_dir(&scratch.join("corpus").join(name))?;
    let artifacts = fresh_dir(&scratch.join("artifacts").join(name))?;
    let logs = fresh_dir(&scratch.join("logs").join(name))?;
    println!("fuzz: {name} for {seconds} s");
    let started = Instant::now();
    let status = Command::new(&binary)
        .arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-jobs=1", "-workers=1", "-print_final_stats=1"])
        .current_dir(&logs)
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let log_file = logs.join("fuzz-0.log");
    let log = std::fs::read_to_string(&log_file).with_context(|| format!("reading {}", log_file.display()))?;
    let stats = Stats::parse(&log);
    let crashes = count_files(&artifacts)?.max(usize::from(!status.success() || stats.failed));
    if crashes > 0 {
        println!("fuzz: {name} crashed; the end of {}:", log_file.display());
        for line in log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev() {
            println!("    {line}");
        }
    }
    Ok(Outcome {
        target: name.to_owned(),
        seconds: stats.seconds.unwrap_or(elapsed),
        inputs: stats.inputs.context("no stat::number_of_executed_units in the log")?,
        crashes,
        corpus: count_files(&corpus)? + count_files(&seeds)?,
    })
}

/// What libFuzzer's final lines say.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    /// `stat::number_of_executed_units`, else the `#N` of the last status line.
    inputs: Option<u64>,
    /// From the `DONE` line: `#N DONE cov: .. exec/s: R ...` gives N / R.
    seconds: Option<f64>,
    /// A panic, a deadly signal, a timeout or a leak was reported.
    failed: bool,
}

impl Stats {
    fn parse(log: &str) -> Self {
        let mut stats = Stats::default();
        let mut last_count = None;
        for line in log.lines() {
            if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.inputs = value.trim().parse().ok();
            }
            if let Some(rest) = line.strip_prefix('#') {
                let mut words = rest.split_whitespace();
                let count: Option<u64> = words.next().and_then(|n| n.parse().ok());
                last_count = count.or(last_count);
                if words.next() == Some("DONE") {
                    let rate: Option<f64> = line
                        .split_whitespace()
                        .skip_while(|word| *word != "exec/s:")
                        .nth(1)
                        .and_then(|r| r.parse().ok());
                    if let (Some(count), Some(rate)) = (count, rate)
                        && rate > 0.0
                    {
                        stats.seconds = Some(count as f64 / rate);
                    }
                }
            }
            if line.starts_with("==") && line.contains("ERROR: libFuzzer")
                || line.contains("panicked at")
                || line.starts_with("SUMMARY: libFuzzer")
            {
                stats.failed = true;
            }
        }
        stats.inputs = stats.inputs.or(last_count);
        stats
    }
}

/// `dir`, created empty.
fn fresh_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_owned())
}

fn count_files(dir: &Path) -> anyhow::Result<usize> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    Ok(entries.filter_map(Result::ok).filter(|e| e.path().is_file()).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_give_inputs_and_time() {
        let log = "#2\tINITED cov: 10 ft: 10 corp: 3/120b exec/s: 0 rss: 40Mb\n\
                   #1048576\tpulse  cov: 99 ft: 200 corp: 40/2Kb lim: 4096 exec/s: 34952 rss: 60Mb\n\
                   #1200000\tDONE   cov: 99 ft: 201 corp: 41/2Kb lim: 4096 exec/s: 40000 rss: 61Mb\n\
                   Done 1200000 runs in 30 second(s)\n\
                   stat::number_of_executed_units: 1200003\n\
                   stat::average_exec_per_sec:     40000\n";
        let stats = Stats::parse(log);
        assert_eq!(stats.inputs, Some(1_200_003));
        assert_eq!(stats.seconds, Some(30.0));
        assert!(!stats.failed);
    }

    #[test]
    fn a_panic_is_a_failure_and_the_last_count_stands_in() {
        let log = "#4096\tpulse  cov: 9 ft: 9 corp: 3/1b exec/s: 2048 rss: 40Mb\n\
                   thread '<unnamed>' panicked at gateway/src/x.rs:1:1:\n\
                   ==12== ERROR: libFuzzer: deadly signal\n";
        let stats = Stats::parse(log);
        assert_eq!(stats.inputs, Some(4096));
        assert!(stats.failed);
    }
}
