//! `kill -9` tests: the test binary re-executes itself as a child running one ignored test,
//! waits for the child's ready line, then SIGKILLs it, as a crash or power cut would.
use std::{
    io::BufRead as _,
    process::{Command, Stdio},
    time::Duration,
};

/// What the child prints once it holds the state the parent wants to kill it in.
pub const READY: &str = "IOTGW-CHILD-READY";

/// Runs the ignored test `child_test` of this binary with `env` set, waits up to `wait` for it
/// to print `READY`, then SIGKILLs it.
pub async fn run_and_kill(child_test: &str, env: (&str, String), wait: Duration) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child_test, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.contains(READY))
    });
    let ready = tokio::time::timeout(wait, ready).await;
    // Killed whatever happened: a child left running would keep the reader above (and the
    // runtime, which waits for it) and the test's output pipe busy until it gave up by itself.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    let ready = ready.unwrap_or_else(|_| panic!("{child_test}: no ready line within {wait:?}")).unwrap();
    assert!(ready, "child exited before it was ready");
    assert!(!status.success(), "the child was killed, not finished: {status:?}");
}
