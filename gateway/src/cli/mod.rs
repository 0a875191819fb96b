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
pub mod config;
pub mod detach;
pub mod devices;
pub mod fingerprint;
pub mod hub;
pub mod man_pages;
pub mod ota;
pub mod pki;
pub mod policy;
pub mod run;
pub mod status;
pub mod table;
pub mod user;

/// Exit code for configuration errors (sysexits EX_CONFIG), before anything is attached.
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when the API has no such device, alert, campaign... (404; sysexits EX_NOINPUT).
pub const EXIT_NOT_FOUND: u8 = 66;
/// Exit code when the API is unreachable or does not answer in time (sysexits EX_UNAVAILABLE).
pub const EXIT_UNREACHABLE: u8 = 69;
/// Exit code when the API refuses the caller: no token, a wrong one, or too small a role
/// (401, 403; sysexits EX_NOPERM).
pub const EXIT_UNAUTHORISED: u8 = 77;

/// What `iotgw --help` says about exit codes.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 failure; 2 usage; 66 not found (the API has no such \
device, alert or campaign); 69 the API is unreachable; 77 unauthorised (no token, a wrong one, or \
too small a role); 78 configuration error (nothing was attached).";

/// The exit code for a command that failed with `error`: an API failure's own, else 1.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    let api = error.chain().find_map(|cause| cause.downcast_ref::<client::ApiError>());
    ExitCode::from(api.map_or(1, |api| api.kind.exit_code()))
}

#[derive(Debug, Parser)]
#[command(name = "iotgw", version, about = "Security gateway for fleets of IoT devices", after_help = EXIT_CODES)]
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
    /// Remove the XDP programs and their pins: switches enforcement off (needs --yes).
    Detach(detach::Args),
    /// Summarise the running gateway: version, uptime, interfaces, devices, policy (local API).
    Status(status::Args),
    /// Check policy files.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Check the whole configuration of the gateway (or the hub) and every file it names.
    #[command(subcommand)]
    Config(config::Command),
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
        Command::Detach(args) => detach::run(args),
        Command::Status(args) => status::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Config(command) => config::run(command),
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
