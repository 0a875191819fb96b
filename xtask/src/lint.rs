//! `cargo xtask lint`: the gates every change passes before its tests run: the tree is
//! formatted, the fuzz targets type-check, and clippy finds nothing on the host crates with
//! warnings denied (the lints themselves are in the workspace's `[workspace.lints]`).
use std::process::Command;

use crate::run_cmd;

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    println!("lint: cargo fmt --check");
    run_cmd(Command::new("cargo").args(["fmt", "--all", "--check"]))
        .map_err(|e| e.context("the tree is not formatted: run `cargo fmt --all`"))?;
    // The fuzz crate is a workspace of its own (it builds with the nightly only); rustfmt
    // needs no build, so it is held to the same format.
    run_cmd(Command::new("cargo").args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--all", "--check"]))
        .map_err(|e| e.context("fuzz/ is not formatted: run `cargo fmt --manifest-path fuzz/Cargo.toml --all`"))?;
    // The fuzz targets call the gateway's parsers and event types; a change to those breaks them
    // without any other build noticing, so their workspace is type-checked here (AYA_BUILD_SKIP:
    // it embeds no XDP object). The main target folder is shared to reuse its dependencies.
    println!("lint: cargo check of fuzz/");
    run_cmd(
        Command::new("cargo")
            .args([
                "check",
                "--locked",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--all-targets",
                "--target-dir",
                "target",
            ])
            .env("AYA_BUILD_SKIP", "1"),
    )
    .map_err(|e| e.context("the fuzz targets do not build against this tree (fuzz/ is its own workspace)"))?;
    println!("lint: cargo clippy");
    // The eBPF crate is not a host crate (it builds for bpfel only). AYA_BUILD_SKIP keeps
    // clippy's check build from rebuilding the XDP object, which clippy never reads.
    run_cmd(
        Command::new("cargo")
            .args(["clippy", "--workspace", "--exclude", "gateway-ebpf", "--all-targets", "--", "-D", "warnings"])
            .env("AYA_BUILD_SKIP", "1"),
    )
}
