//! The real `iotgw hub` process of the fleet lab, on the host's loopback: its configuration, its
//! log, and `kill -9` and restart on the same configuration (its durable consumer and its
//! PostgreSQL rows are what carry over).
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use iotgw_test_support::services::{NatsServer, Postgres, free_port};

use super::{OPERATOR_TOKEN, REPORT_TIMEOUT, VIEWER_TOKEN};
use crate::{
    api::token_entry,
    controller::{iotgw_bin, keep_log, terminate},
};

/// Seconds the broker waits for the hub's acknowledgement before delivering a report again: short,
/// so what a hub killed mid-batch had taken comes back to the restarted hub within the test, yet
/// longer than a batch of 1,000 reports and the one prefetched behind it take to commit on a
/// loaded machine (at 3 s they were delivered twice).
pub const ACK_WAIT_SECS: u64 = 10;

/// The running `iotgw hub`.
pub struct HubProcess {
    child: Option<Child>,
    pub config: PathBuf,
    pub api_addr: SocketAddr,
    /// Every process's log lines, across restarts.
    log: Arc<Mutex<Vec<String>>>,
}

impl HubProcess {
    /// Writes the hub's configuration in `dir` (credentials `hub.nk`, signing key
    /// `keys/bundle.pem`) and starts it.
    pub(super) fn start(dir: &Path, nats: &NatsServer, postgres: &Postgres) -> HubProcess {
        let api_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = dir.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "nats_url = \"{}\"\ncredentials = \"{}\"\ndatabase_url = \"{}\"\nsigning_key = \"{}\"\n\n\
                 [streams]\nmax_bytes = 268435456\n\n[ingest]\nack_wait_secs = {ACK_WAIT_SECS}\n\n\
                 [api]\nlisten = \"{api_addr}\"\ntokens = [\n  {},\n  {},\n]\n",
                nats.url(),
                dir.join("hub.nk").display(),
                postgres.url(),
                dir.join("keys/bundle.pem").display(),
                token_entry("olga", "operator", OPERATOR_TOKEN),
                token_entry("vic", "viewer", VIEWER_TOKEN),
            ),
        )
        .expect("hub config");
        let mut hub = HubProcess { child: None, config, api_addr, log: Arc::default() };
        hub.restart();
        hub
    }

    /// Starts the process (again, after `kill9`) and waits until its API listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the hub is already running");
        let mut child = Command::new(iotgw_bin())
            .args(["hub", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} hub: {e}", iotgw_bin().display()));
        keep_log(&mut child, "hub", &self.log);
        // Kept before waiting, so a hub that never listens is still stopped on drop.
        let child = self.child.insert(child);
        let deadline = Instant::now() + REPORT_TIMEOUT;
        while std::net::TcpStream::connect_timeout(&self.api_addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("iotgw hub exited ({status}): {:?}", self.log.lock().expect("log lock"));
            }
            assert!(Instant::now() < deadline, "iotgw hub did not listen on {}", self.api_addr);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`: the hub gets no chance to finish a batch or acknowledge anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log.lock().expect("log lock").iter().filter(|line| line.contains(needle)).cloned().collect()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(15));
        }
    }
}
