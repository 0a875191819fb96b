//! `iotgw hub --config FILE`, the binary: a configuration error exits with EX_CONFIG (78) and
//! names the line, before connecting to anything; a good configuration against the real
//! servers creates the streams, ingests a gateway's report, and stops cleanly on SIGTERM.
#[path = "hub_ingest/support.rs"]
mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::{Fleet, PATIENCE, alert};

const IOTGW: &str = env!("CARGO_BIN_EXE_iotgw");

/// A running `iotgw hub`, killed when dropped: a failing test leaves no hub behind.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hub(config: &std::path::Path, log: &std::path::Path) -> Hub {
    Hub(Command::new(IOTGW)
        .args(["hub", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn iotgw hub"))
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "iotgw hub did not exit within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `iotgw hub --config config` run to its exit, which a bad configuration makes immediate; a
/// hub that started instead is killed at `PATIENCE` and fails the test.
fn hub_exit(config: &std::path::Path) -> std::process::Output {
    iotgw_test_support::run_within(Command::new(IOTGW).args(["hub", "--config"]).arg(config), PATIENCE)
}

#[test]
fn a_bad_configuration_exits_with_ex_config_and_its_line() {
    let dir = iotgw_test_support::services::scratch("hub-cli-bad");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "nats_url = \"nats://127.0.0.1:1\"\ndatabase_url = 5\n").unwrap();
    let output = hub_exit(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(&format!("{}:2:", config.display())), "names line 2: {stderr}");

    std::fs::write(
        &config,
        "nats_url = \"nats://127.0.0.1:1\"\ndatabase_url = \"postgres://x\"\n[ingest]\nbatch = 0\n",
    )
    .unwrap();
    let output = hub_exit(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("ingest.batch"), "{stderr}");
}

#[tokio::test]
async fn the_hub_ingests_against_real_servers_and_stops_on_sigterm() {
    let fleet = Fleet::start().await;
    let config = fleet.config_file("");
    let log = fleet.dir.join("hub.log");
    let mut running = hub(&config, &log);
    let child = &mut running.0;
    let report = alert("s1", "gw-1", 1, "scan:1", false);
    fleet.publish(&report).await;
    let deadline = Instant::now() + PATIENCE;
    while fleet.count("SELECT count(*) FROM events").await == 0 {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(Instant::now() < deadline, "the hub stored nothing; its log:\n{log}");
        assert!(child.try_wait().expect("wait").is_none(), "the hub exited; its log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fleet.count("SELECT count(*) FROM alerts WHERE incident_id = 'scan:1'").await, 1);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = wait_exit(child);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}; its log:\n{log}");
    for line in ["broker connection", "ingesting reports", "SIGTERM received", "ingest stopped", "all tasks stopped"] {
        assert!(log.contains(line), "{line:?} missing from its log:\n{log}");
    }
    // Everything it took was acknowledged before it stopped.
    assert_eq!(fleet.consumer_backlog().await, (0, 0));
}
