//! Helpers shared by iotgw's integration tests (`gateway/tests`), lab tests (`tests/netns`) and
//! benchmarks (`bench`): external programs (`openssl`, `curl`, the `iotgw` binary) run with
//! failure messages that show what was run and what it printed.
//!
//! Tests only: every helper panics on failure, which is how a test reports it, and every wait
//! is bounded (`wait`), so a test fails rather than hangs.
#[cfg(feature = "browser")]
pub mod browser;
pub mod services;
pub mod wait;

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// How long `run` and `checked` let a program run: far beyond what any of the tests' programs
/// take (openssl, curl with its own `--max-time`, `ip`, initdb), short of a CI job's limit.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Runs `command` to completion (stdin empty, stdout and stderr captured, as
/// `Command::output`); panics when it cannot start (usually: not installed) or is still
/// running after `RUN_LIMIT` (then it is killed).
pub fn run(command: &mut Command) -> Output {
    run_within(command, RUN_LIMIT)
}

/// `run` with its own limit.
pub fn run_within(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?} (is it installed?): {e}"));
    finish(child, &format!("{command:?}"), limit)
}

/// Waits for `child` to exit and collects what it printed on the pipes it was given, all
/// within `limit`; past it, kills the child and panics naming `what`.
pub fn finish(mut child: Child, what: &str, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    // Read while it runs: a child that fills a pipe nobody reads would never exit.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let mut poll = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(poll);
                poll = (poll * 2).min(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} was still running after {limit:?}: killed");
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    // A process it left behind may hold the pipe open: bounded too.
    let collect = |pipe: Option<mpsc::Receiver<Vec<u8>>>, name: &str| match pipe {
        None => Vec::new(),
        Some(pipe) => pipe
            .recv_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)))
            .unwrap_or_else(|_| panic!("{what} exited ({status}) but its {name} stayed open past {limit:?}")),
    };
    Output { status, stdout: collect(stdout, "stdout"), stderr: collect(stderr, "stderr") }
}

/// Reads `pipe` to its end on a thread of its own; the bytes arrive on the returned channel.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    receiver
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
