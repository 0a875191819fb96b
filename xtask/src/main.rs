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

/// Runs a command in the workspace as `run_cmd` does, but kills it and everything it started
/// (cargo and the test binaries under it) once `limit` has passed. A test that hangs then fails
/// the run with its phase named, and libtest has already printed which test "has been running
/// for over 60 seconds", instead of the whole CI job timing out silently. The command stays in
/// our process group, so Ctrl-C still reaches it.
pub fn run_cmd_within(cmd: &mut std::process::Command, limit: std::time::Duration) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let started = std::time::Instant::now();
    let mut child = cmd.current_dir(workspace_root()).spawn().with_context(|| format!("starting {cmd:?}"))?;
    loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {cmd:?}"))? {
            anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
            return Ok(());
        }
        if started.elapsed() > limit {
            let mut doomed = descendants(child.id());
            doomed.push(child.id());
            let pids: Vec<String> = doomed.iter().map(u32::to_string).collect();
            let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).status();
            let _ = child.wait();
            anyhow::bail!("{cmd:?} was still running after {} s: killed with everything it started", limit.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Every process below `root`, from /proc's parent links.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so read after
            // the last `)`.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        next += 1;
    }
    found.remove(0);
    found
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_command_past_its_limit_is_killed_with_what_it_started() {
        let marker = format!("iotgw-xtask-limit-{}", std::process::id());
        // The grandchild outlives its parent shell unless it is killed too.
        let script = format!("exec -a {marker}-grandchild sleep 300 & exec -a {marker} sleep 300");
        let started = Instant::now();
        let error = run_cmd_within(std::process::Command::new("bash").args(["-c", &script]), Duration::from_secs(1))
            .expect_err("killed at its limit");
        assert!(error.to_string().contains("still running after 1 s"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(200));
        let left = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
        assert!(left.stdout.is_empty(), "left running: {}", String::from_utf8_lossy(&left.stdout));
    }

    #[test]
    fn a_command_within_its_limit_reports_its_status() {
        run_cmd_within(std::process::Command::new("true").arg(""), Duration::from_secs(30)).unwrap();
        let error = run_cmd_within(&mut std::process::Command::new("false"), Duration::from_secs(30)).unwrap_err();
        assert!(error.to_string().contains("failed"), "{error}");
    }
}
