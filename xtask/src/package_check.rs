//! The package's check, a phase of `cargo xtask test` (root): lintian finds no error,
//! `systemd-analyze verify` accepts both units as installed, `dpkg -i` installs (twice: the
//! maintainer scripts are idempotent) and `iotgw --version` answers, `dpkg -r` leaves nothing
//! but the conffiles, and `dpkg -P` leaves nothing at all (no file, no state folder, no user).
//!
//! It installs on this machine, so it refuses to start when an `iotgw` package is already
//! installed (it would remove it), and it purges what it installed even when a step fails.
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail, ensure};

use crate::package::{PACKAGE, output, workspace_version};

/// The units the package ships, as installed.
const UNITS: &[&str] = &["/lib/systemd/system/iotgw.service", "/lib/systemd/system/iotgw-hub.service"];
/// The hub's system user (packaging/deb/postinst).
const HUB_USER: &str = "iotgw-hub";
/// Where the gateway's service keeps its state (StateDirectory); purge removes it.
const STATE_DIR: &str = "/var/lib/iotgw";

pub fn run(deb: &Path) -> anyhow::Result<()> {
    ensure!(
        status().is_none(),
        "package {PACKAGE} is already installed here ({}): the check would remove it; purge it first",
        status().unwrap_or_default()
    );
    lintian(deb)?;
    let checked = install_and_remove(deb);
    // Whatever failed above, leave the machine as it was.
    if status().is_some() {
        let _ = Command::new("dpkg").args(["--purge", PACKAGE]).status();
    }
    checked?;
    println!("package check: lintian, systemd-analyze verify, install, --version, remove and purge passed");
    Ok(())
}

/// `lintian --fail-on error`: warnings are printed, errors fail.
fn lintian(deb: &Path) -> anyhow::Result<()> {
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("starting lintian (cargo xtask setup installs it)")?;
    let report = String::from_utf8_lossy(&out.stdout);
    print!("{report}");
    ensure!(out.status.success(), "lintian found errors in {} ({})", deb.display(), out.status);
    Ok(())
}

fn install_and_remove(deb: &Path) -> anyhow::Result<()> {
    let files = package_files(deb)?;
    let conffiles: Vec<&str> = files.iter().map(String::as_str).filter(|f| f.starts_with("/etc/")).collect();
    ensure!(conffiles.contains(&"/etc/iotgw/iotgw.toml"), "no /etc/iotgw/iotgw.toml in {}", deb.display());

    dpkg(&["--install"], deb)?;
    // A second install is what an upgrade to the same version does: postinst runs again.
    dpkg(&["--install"], deb)?;
    ensure!(status().as_deref() == Some("install ok installed"), "after dpkg -i: {:?}", status());
    let version = output(Command::new("/usr/bin/iotgw").arg("--version"))?;
    let expected = format!("iotgw {}", workspace_version()?);
    ensure!(version.trim() == expected, "iotgw --version printed {version:?}, not {expected:?}");
    ensure!(user_exists(HUB_USER), "postinst created no user {HUB_USER}");
    for unit in UNITS {
        let verify = Command::new("systemd-analyze").args(["verify", unit]).output().context("systemd-analyze")?;
        let said = String::from_utf8_lossy(&verify.stderr);
        ensure!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify {unit}: {said}");
    }

    dpkg_name(&["--remove"])?;
    ensure!(status().as_deref() == Some("deinstall ok config-files"), "after dpkg -r: {:?}", status());
    for file in &files {
        let kept = Path::new(file).exists();
        match conffiles.contains(&file.as_str()) {
            true if !kept => bail!("dpkg -r removed the conffile {file}"),
            false if kept => bail!("dpkg -r left {file}"),
            _ => {}
        }
    }

    dpkg_name(&["--purge"])?;
    ensure!(status().is_none(), "after dpkg -P: {:?}", status());
    let left: Vec<&String> = files.iter().filter(|f| Path::new(f).exists()).collect();
    ensure!(left.is_empty(), "dpkg -P left {left:?}");
    for folder in ["/etc/iotgw", STATE_DIR] {
        ensure!(!Path::new(folder).exists(), "dpkg -P left {folder}");
    }
    ensure!(!user_exists(HUB_USER), "dpkg -P left the user {HUB_USER}");
    Ok(())
}

/// The regular files of `deb`, as absolute paths.
fn package_files(deb: &Path) -> anyhow::Result<Vec<String>> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    // `-rw-r--r-- root/root 1234 2026-01-01 00:00 ./usr/bin/iotgw`: regular files only.
    Ok(listing
        .lines()
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().last())
        .map(|path| path.trim_start_matches('.').to_owned())
        .collect())
}

/// dpkg's status of the package (`install ok installed`), or `None` when dpkg knows none.
fn status() -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]).output().ok()?;
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !status.is_empty() && status != "unknown ok not-installed").then_some(status)
}

fn user_exists(name: &str) -> bool {
    Command::new("getent").args(["passwd", name]).output().is_ok_and(|out| out.status.success())
}

fn dpkg(args: &[&str], deb: &Path) -> anyhow::Result<()> {
    crate::run_cmd(Command::new("dpkg").args(args).arg(deb))
}

fn dpkg_name(args: &[&str]) -> anyhow::Result<()> {
    crate::run_cmd(Command::new("dpkg").args(args).arg(PACKAGE))
}
