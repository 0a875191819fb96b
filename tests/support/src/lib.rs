//! Helpers shared by iotgw's integration tests (`gateway/tests`), lab tests (`tests/netns`) and
//! benchmarks (`bench`): external programs (`openssl`, `curl`, the `iotgw` binary) run with
//! failure messages that show what was run and what it printed.
//!
//! Tests only: every helper panics on failure, which is how a test reports it.
#[cfg(feature = "browser")]
pub mod browser;
pub mod services;

use std::{
    path::Path,
    process::{Command, Output},
};

/// Runs `command` to completion; panics when it cannot start (usually: not installed).
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?} (is it installed?): {e}"))
}

/// Runs `command` and panics, with its stdout and stderr, unless it exits successfully.
pub fn checked(command: &mut Command) -> Output {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({})\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    );
    output
}

/// What a program printed on stdout, trimmed.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A file's text, or "" when it cannot be read (a program that failed may not have written it):
/// for failure messages and checks on files that curl or openssl wrote.
pub fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The serial number of the PEM certificate at `cert`, in `openssl x509 -serial`'s hex.
pub fn certificate_serial(cert: &Path) -> String {
    let out = stdout(&checked(Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(cert)));
    out.trim_start_matches("serial=").to_owned()
}
