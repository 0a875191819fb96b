//! `cargo xtask <workflow>`: the developer workflows, one module each.
//!
//! - `setup`: installs what building and testing need, idempotently (the pinned eBPF
//!   toolchain, bpf-linker against its LLVM, rustfmt and clippy, Debian packages, bpffs);
//! - `build`: builds `iotgw` with its embedded XDP object;
//! - `lint`: `cargo fmt --check` and clippy with warnings denied;
//! - `test`: the lint gates, unit tests, then the network-namespace lab tests as root;
//! - `fresh-check`: the README's two commands on a fresh clone with a fresh Rust install;
//! - `demo`: the lab on embedded defaults, showing a device being quarantined;
//! - `bench`: the benchmarks under `bench/`, printing their figures;
//! - `fuzz`: the coverage-guided fuzz targets of `fuzz/`, each for a set time;
//! - `package`: the Debian package (`package`), checked by `test` (`package_check`).
use clap::{Parser, Subcommand};

mod bench;
mod build;
mod demo;
mod fresh_check;
mod fuzz;
mod lint;
mod package;
mod package_check;
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
    /// Check formatting and run clippy with warnings denied.
    Lint,
    /// Run every test: the lint gates, unit tests, then the lab tests (root).
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Run the demo lab: devices, the gateway, a device misbehaving and being quarantined.
    Demo {
        /// The fleet demo: three sites with a gateway each, one hub (NATS JetStream,
        /// PostgreSQL); a scan quarantined at site B, seen and released at the hub.
        #[arg(long)]
        fleet: bool,
        /// With --fleet: keep everything up this many seconds at the end, to look at the hub's
        /// console in a browser.
        #[arg(long, default_value_t = 0, requires = "fleet")]
        hold: u64,
    },
    /// Repeat a newcomer's first steps: a clean clone, fresh RUSTUP_HOME and CARGO_HOME with
    /// only stable Rust, no bpf-linker, no bpftool; then `cargo xtask demo` and `cargo xtask
    /// test` as the README writes them (root, about 30 minutes).
    FreshCheck {
        /// Keep the temporary folder (toolchains, clone, build) for a look afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Run the benchmarks and print their figures.
    Bench {
        /// Which benchmark (default: all).
        name: Option<String>,
    },
    /// Run the fuzz targets of `fuzz/` (cargo-fuzz, the pinned nightly), each for a set time on
    /// one core; print inputs executed, exec/s and crashes per target; fail on a crash.
    Fuzz {
        /// One target (default: all, one after the other).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
    },
    /// Build the Debian package target/debian/iotgw_<version>_<arch>.deb (release binary).
    Package {
        /// Package the debug build instead (quicker; what `cargo xtask test` checks).
        #[arg(long)]
        debug: bool,
        /// Then check it as `cargo xtask test` does: lintian, systemd-analyze verify, install,
        /// remove and purge on this machine (root).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build { release } => build::run(release).map(|_| ()),
        Command::Lint => lint::run(),
        Command::Test { filter } => test::run(filter.as_deref()),
        Command::FreshCheck { keep } => fresh_check::run(keep),
        Command::Demo { fleet, hold } => demo::run(fleet, hold),
        Command::Bench { name } => bench::run(name.as_deref()),
        Command::Fuzz { target, seconds } => fuzz::run(target.as_deref(), seconds),
        Command::Package { debug, check } => {
            let deb = package::run(debug)?;
            if check { package_check::run(&deb) } else { Ok(()) }
        }
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
