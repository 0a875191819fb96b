//! `cargo xtask setup`: everything a fresh machine lacks, each step skipped when already
//! done, so it is cheap to run before every build.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run_cmd;

/// Debian packages the lab, the tests and the benchmarks use.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",   // ip netns, veth
    "ethtool",    // veth GRO for XDP redirects
    "util-linux", // nsenter
    "xdp-tools",  // xdp-filter, the benchmark's reference program
    "ieee-data",  // the IEEE OUI registry for vendor names
    "openssl",    // the standard EST client in tests
    "curl",       // the standard EST client in tests
    "rsyslog",    // the SIEM receiver in integration tests
    "rsyslog-gnutls",
    "procps", // sysctl
];

pub fn run() -> anyhow::Result<()> {
    nightly_with_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    bpffs()?;
    println!("setup: done");
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly_with_rust_src() -> anyhow::Result<()> {
    let installed =
        output("rustup", &["component", "list", "--installed", "--toolchain", "nightly"]).unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: installing nightly with rust-src (the eBPF crate builds core itself)");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

/// bpf-linker built against nightly's own LLVM, so the two always agree on the bitcode.
fn bpf_linker() -> anyhow::Result<()> {
    if output("bpf-linker", &["--version"]).is_some() {
        return Ok(());
    }
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"]).context("rustc +nightly")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM") && n.ends_with(".so")))
        })
        .with_context(|| format!("no libLLVM in {}", lib.display()))?;
    let version = output("rustc", &["+nightly", "-vV"]).context("rustc +nightly -vV")?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("no LLVM version in rustc -vV")?
        .to_owned();
    let prefix: PathBuf = std::env::temp_dir().join("iotgw-llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)?;
    println!("setup: building bpf-linker against nightly's LLVM {major} ({})", llvm.display());
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p]).is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root");
    }
    println!("setup: installing {missing:?}");
    run_cmd(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf")) || !is_root() {
        return Ok(());
    }
    println!("setup: mounting bpffs on /sys/fs/bpf");
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

pub fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|u| u.trim() == "0")
}
