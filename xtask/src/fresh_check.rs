//! `cargo xtask fresh-check`: what a newcomer meets, repeated on this machine.
//!
//! A clean clone of the committed tree (uncommitted changes are not part of it), a fresh
//! `RUSTUP_HOME` and `CARGO_HOME` in a temporary folder holding only stable Rust (minimal
//! profile: no rustfmt, no clippy, no nightly, no bpf-linker), `bpftool` and `xdp-tools`
//! removed from the machine, and the environment cleared of everything Rust-related. Then the
//! README's two commands, exactly as written, with `CI=true` as CI runs them: `cargo xtask
//! demo`, then `cargo xtask test`. Either failing fails the check.
//!
//! Needs root (packages, XDP) and the package registries. It builds everything from nothing
//! on this machine: about 30 minutes on two cores.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{setup::is_root, workspace_root};

/// Packages set-up installs that a new machine lacks; removed first so set-up must install
/// them again.
const REMOVED_PACKAGES: &[&str] = &["bpftool", "xdp-tools"];

pub fn run(keep: bool) -> anyhow::Result<()> {
    if !is_root() {
        bail!("fresh-check removes packages and runs the lab: run it as root");
    }
    let root = workspace_root();
    let dirty = Command::new("git").args(["status", "--porcelain"]).current_dir(&root).output()?;
    if !dirty.stdout.is_empty() {
        println!("fresh-check: the work tree has uncommitted changes; only the committed tree is checked");
    }
    let rustup = find_on_path("rustup").context("rustup is not on PATH (the fresh install copies its installer)")?;
    let tmp = std::env::temp_dir().join(format!("iotgw-fresh-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let outcome = check(&root, &rustup, &tmp);
    if keep {
        println!("fresh-check: kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    outcome
}

fn check(root: &Path, rustup: &Path, tmp: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let home = tmp.join("home");
    let cargo_home = tmp.join("cargo");
    let rustup_home = tmp.join("rustup");
    std::fs::create_dir_all(&home)?;
    let fresh_env = |cmd: &mut Command| {
        let path = format!("{}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", cargo_home.display());
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .env("CARGO_HOME", &cargo_home)
            .env("RUSTUP_HOME", &rustup_home)
            .env("CI", "true")
            .env("LANG", "C.UTF-8");
        if let Some(term) = std::env::var_os("TERM") {
            cmd.env("TERM", term);
        }
    };

    step("removing packages set-up must install", || {
        crate::run_cmd(
            Command::new("apt-get")
                .args(["remove", "-y", "-qq"])
                .args(REMOVED_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })?;

    step("installing stable Rust only, into a fresh RUSTUP_HOME and CARGO_HOME", || {
        let installer = tmp.join("rustup-init");
        std::fs::copy(rustup, &installer).context("copying rustup as rustup-init")?;
        let mut cmd = Command::new(&installer);
        cmd.args(["-y", "--no-modify-path", "--profile", "minimal", "--default-toolchain", "stable"]);
        fresh_env(&mut cmd);
        run_in(&mut cmd, tmp)
    })?;

    let clone = tmp.join("iotgw");
    step("cloning the committed tree", || {
        let mut cmd = Command::new("git");
        cmd.args(["clone", "--quiet", "--no-local"]).arg(root).arg(&clone);
        run_in(&mut cmd, tmp)
    })?;
    // CI lays shared/ beside the clone; so does this check.
    let shared = root.join("../shared");
    if shared.is_dir() {
        std::os::unix::fs::symlink(shared.canonicalize()?, tmp.join("shared")).context("linking shared/")?;
    }

    for args in [["xtask", "demo"], ["xtask", "test"]] {
        step(&format!("cargo {}", args.join(" ")), || {
            let mut cmd = Command::new("cargo");
            cmd.args(args);
            fresh_env(&mut cmd);
            run_in(&mut cmd, &clone)
        })?;
    }
    println!("fresh-check: passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn step(what: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    println!("fresh-check: {what}");
    let started = Instant::now();
    let result = f().with_context(|| format!("fresh-check failed at: {what}"));
    println!(
        "fresh-check: {what}: {} in {:.0} s",
        if result.is_ok() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    result
}

fn run_in(cmd: &mut Command, dir: &Path) -> anyhow::Result<()> {
    let status = cmd.current_dir(dir).status().with_context(|| format!("starting {cmd:?}"))?;
    anyhow::ensure!(status.success(), "{:?} failed: {status}", cmd.get_program());
    Ok(())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}
