//! `cargo xtask <workflow>`: the developer workflows, one module each.
//!
//! - `setup`: installs what building and testing need, idempotently (nightly rust-src,
//!   bpf-linker against nightly's LLVM, Debian packages, bpffs);
//! - `build`: builds `iotgw` with its embedded XDP object;
//! - `test`: unit tests, then the network-namespace lab tests as root;
//! - `demo`: the lab on embedded defaults, showing a device being quarantined;
//! - `bench`: the benchmarks under `bench/`, printing their figures.
use clap::{Parser, Subcommand};

mod bench;
mod build;
mod demo;
mod setup;
mod test;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain pieces and system packages the build and tests need.
    Setup,
    /// Build iotgw (with its XDP object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit tests, then the lab tests (root).
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Run the demo lab: devices, the gateway, a device misbehaving and being quarantined.
    Demo,
    /// Run the benchmarks and print their figures.
    Bench {
        /// Which benchmark (default: all).
        name: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build { release } => build::run(release).map(|_| ()),
        Command::Test { filter } => test::run(filter.as_deref()),
        Command::Demo => demo::run(),
        Command::Bench { name } => bench::run(name.as_deref()),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

/// Runs a command in the workspace, failing with its name when it fails.
pub fn run_cmd(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let status = cmd.current_dir(workspace_root()).status().with_context(|| format!("starting {cmd:?}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}
