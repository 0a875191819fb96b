//! The `iotgw` command line: one clap variant per subcommand, each in its own module.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

pub mod alerts;
pub mod analyze;
pub mod audit;
pub mod baseline;
pub mod client;
pub mod completions;
pub mod devices;
pub mod fingerprint;
pub mod hub;
pub mod man_pages;
pub mod ota;
pub mod pki;
pub mod policy;
pub mod run;
pub mod table;
pub mod user;

/// Exit code for configuration errors (sysexits EX_CONFIG), before anything is attached.
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(name = "iotgw", version, about = "Security gateway for fleets of IoT devices")]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "IOTGW_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the XDP datapath and run the controller.
    Run(run::Args),
    /// Check policy files.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Build the inventory (and alerts) from packet captures, offline.
    Analyze(analyze::Args),
    /// Device-type model: train from labelled captures, evaluate.
    #[command(subcommand)]
    Fingerprint(fingerprint::Command),
    /// Learnt baselines: export as MUD-style policy.
    #[command(subcommand)]
    Baseline(baseline::Command),
    /// List devices (through the local API).
    Devices(devices::ListArgs),
    /// List the audit log, newest first (through the local API).
    Audit(audit::Args),
    /// Show one device (through the local API).
    Device(devices::ShowArgs),
    /// Quarantine a device (through the local API).
    Quarantine(devices::ActionArgs),
    /// Release a device from quarantine or block (through the local API).
    Release(devices::ActionArgs),
    /// Block a device (through the local API).
    Block(devices::ActionArgs),
    /// List alert records (through the local API).
    Alerts(alerts::ListArgs),
    /// Show, acknowledge, resolve, reopen, assign or annotate one alert (through the local API).
    Alert(alerts::AlertArgs),
    /// The gateway's certificate authority and device identities.
    #[command(subcommand)]
    Pki(pki::Command),
    /// Signed firmware repository.
    #[command(subcommand)]
    Ota(ota::Command),
    /// Local console users: hash a password for `[api] users`.
    #[command(subcommand)]
    User(user::Command),
    /// The fleet hub: run it (`--config FILE`), or one of its tools.
    Hub(hub::Args),
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell.
    Completions(completions::Args),
    /// Write the man pages, one per command (for packagers).
    #[command(hide = true)]
    ManPages(man_pages::Args),
}

pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Analyze(args) => analyze::run(args),
        Command::Fingerprint(command) => fingerprint::run(command),
        Command::Baseline(command) => baseline::run(command),
        Command::Devices(args) => devices::list(args),
        Command::Audit(args) => audit::list(args),
        Command::Device(args) => devices::show(args),
        Command::Quarantine(args) => devices::action(args, "quarantine"),
        Command::Release(args) => devices::action(args, "release"),
        Command::Block(args) => devices::action(args, "block"),
        Command::Alerts(args) => alerts::list(args),
        Command::Alert(args) => alerts::alert(args),
        Command::Pki(command) => pki::run(command),
        Command::Ota(command) => ota::run(command),
        Command::User(command) => user::run(command),
        Command::Hub(args) => hub::run(args),
        Command::Completions(args) => completions::run(args),
        Command::ManPages(args) => man_pages::run(args),
    }
}
