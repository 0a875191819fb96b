//! `iotgw baseline`: learnt baselines for ops. `export` renders one device's baseline as a
//! MUD-style policy (a `[[class]]` in the shape of the policy files) to review and then
//! enforce; `show` prints its state; `latency` measures the in-process decision latency.
//! Reads the store (never writes it).
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::{
    baseline::{self, export},
    device::Mac,
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a device's learnt baseline as a policy file (TOML) for review.
    Export(ExportArgs),
    /// Print a device's baseline state and what it learnt, in words.
    Show(ShowArgs),
    /// Measure decision latency in-process: first anomalous event to set_access (p50/p99).
    Latency(LatencyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The gateway's SQLite store.
    #[arg(long, default_value = crate::store::DEFAULT_PATH)]
    pub store: PathBuf,
    /// The device.
    #[arg(long)]
    pub mac: Mac,
    /// Class name for the exported `[[class]]` (default: the device's class, or `learnt-<mac>`).
    #[arg(long)]
    pub class: Option<String>,
    /// Class id for the exported `[[class]]` (pick a free one before loading it).
    #[arg(long, default_value_t = export::DEFAULT_EXPORT_CLASS_ID)]
    pub class_id: u16,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[arg(long, default_value = crate::store::DEFAULT_PATH)]
    pub store: PathBuf,
    #[arg(long)]
    pub mac: Mac,
}

#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Devices run through the pipeline, one decision each.
    #[arg(long, default_value_t = 1_000)]
    pub runs: usize,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Export(args) => {
            let record = load(&args.store, args.mac)?;
            let class = args.class.as_deref().or(record.class.as_deref());
            let text = export::to_toml(args.mac, class, args.class_id, &record.baseline)
                .context("cannot render the baseline as TOML")?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Show(args) => {
            let record = load(&args.store, args.mac)?;
            let profile = record.baseline.profile();
            println!(
                "device {}  class {}  state {}",
                args.mac,
                record.class.as_deref().unwrap_or("-"),
                record.baseline.state_name()
            );
            println!("flows learnt {}  windows {}", profile.flows, profile.windows.count);
            println!("services: {}", profile.services.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "));
            println!(
                "destinations: {}",
                profile.destinations.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
            println!("names: {}", profile.names.iter().cloned().collect::<Vec<_>>().join(", "));
            println!("LAN peers: {}", profile.peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
            let (mean, max, p99) = (&profile.windows.mean, &profile.windows.max, profile.windows.quantile(0.99));
            for (index, name) in baseline::stats::FEATURES.iter().enumerate() {
                println!(
                    "  {name:>14} per window: mean {:.0}  p99 {:.0}  max {:.0}",
                    mean[index], p99[index], max[index]
                );
            }
            for (key, timing) in profile.periodic() {
                println!("  periodic {key}: every {:.0} s (±{:.1} s)", timing.mean_secs, timing.std_dev_secs());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Latency(args) => {
            anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
            let report = crate::pipeline::latency::measure_decision_latency(args.runs);
            println!(
                "decision latency over {} runs: p50 {:?}  p99 {:?}  max {:?}  missed {}",
                report.runs, report.p50, report.p99, report.max, report.missed
            );
            Ok(if report.missed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn load(store: &std::path::Path, mac: Mac) -> anyhow::Result<baseline::store::DeviceRecord> {
    anyhow::ensure!(store.exists(), "no store at {}", store.display());
    let conn = crate::schema::open(store).with_context(|| format!("cannot open the store {}", store.display()))?;
    baseline::store::load_device(&conn, mac)
        .with_context(|| format!("cannot read the baseline of {mac}"))?
        .with_context(|| format!("no baseline for {mac} in {}", store.display()))
}
