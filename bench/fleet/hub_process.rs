//! The hub as its own process, as it runs in production: `iotgw hub --config FILE`, the binary
//! cargo builds beside this bench, against the bench's servers. Its resident memory is read
//! from `/proc/<pid>/status` (VmRSS now, VmHWM its peak), its ingest counters from its
//! `/metrics`. Stopped with SIGTERM, after which it must exit cleanly; killed if the bench
//! fails first.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const IOTGW: &str = env!("CARGO_BIN_EXE_iotgw");
/// Until its API listens (it connects, ensures the streams, migrates, then serves).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Its shutdown grace (`hub::service::SHUTDOWN_GRACE`) and some.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of its log shown when it fails.
const LOG_TAIL: usize = 40;

pub struct HubProcess {
    child: Child,
    api: SocketAddr,
    log: PathBuf,
    /// VmRSS (KiB) at each `sample`, with the phase it was taken in.
    samples: Vec<(&'static str, u64)>,
}

impl HubProcess {
    /// Starts `iotgw hub --config config` (whose `[api] listen` is `api`), its log into `log`,
    /// and waits until its API accepts connections.
    pub async fn start(config: &Path, api: SocketAddr, log: PathBuf) -> HubProcess {
        let child = Command::new(IOTGW)
            .args(["hub", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("hub log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {IOTGW} hub: {e}"));
        let mut hub = HubProcess { child, api, log, samples: Vec::new() };
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(api).await.is_err() {
            hub.check_running();
            assert!(Instant::now() < deadline, "iotgw hub did not listen on {api} within {START_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        hub
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics, with the end of its log, if the hub has exited.
    pub fn check_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait for iotgw hub") {
            panic!("iotgw hub exited ({status}); the end of its log:\n{}", self.log_tail());
        }
    }

    /// Checks it still runs and records its resident memory, for `phase`.
    pub fn sample(&mut self, phase: &'static str) {
        self.check_running();
        let rss = self.status_kib("VmRSS");
        self.samples.push((phase, rss));
    }

    /// Its resident memory now (KiB).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The most resident memory it ever had (KiB).
    pub fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// The median and the largest VmRSS sampled in `phase` (KiB).
    pub fn sampled_kib(&self, phase: &str) -> Option<(u64, u64)> {
        let mut rss: Vec<u64> = self.samples.iter().filter(|(p, _)| *p == phase).map(|(_, kib)| *kib).collect();
        rss.sort_unstable();
        Some((*rss.get(rss.len() / 2)?, *rss.last()?))
    }

    /// The hub process's resident memory through the phases, and its peak.
    pub fn report(&self, at_start: u64) {
        let mib = |kib: u64| kib >> 10;
        let phases: Vec<String> = ["ingest", "redeliver", "mix", "lag"]
            .iter()
            .filter_map(|phase| {
                let (median, max) = self.sampled_kib(phase)?;
                Some(format!("{phase} median {} MiB, max {} MiB", mib(median), mib(max)))
            })
            .collect();
        println!(
            "hub-rss: iotgw hub (its own process) at start {} MiB; {}; now {} MiB; peak (VmHWM) {} MiB",
            mib(at_start),
            phases.join("; "),
            mib(self.rss_kib()),
            mib(self.peak_kib())
        );
    }

    fn status_kib(&self, field: &str) -> u64 {
        crate::proc_status_kib(&self.child.id().to_string(), field)
            .unwrap_or_else(|| panic!("/proc/{}/status has no {field}: the hub is gone", self.child.id()))
    }

    /// Its ingest counters and fleet counts, the `iotgw_hub_*` samples of its `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.api))
            .bearer_auth(crate::TOKEN)
            .send()
            .await
            .expect("GET /metrics of the hub");
        assert!(response.status().is_success(), "hub /metrics: {}", response.status());
        let text = response.text().await.expect("hub /metrics body");
        let samples: Vec<&str> = text.lines().filter(|line| line.starts_with("iotgw_hub_")).collect();
        samples.join(", ")
    }

    /// SIGTERM, then waits: panics unless it exits successfully within STOP_TIMEOUT.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM to iotgw hub");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for iotgw hub") {
                break status;
            }
            assert!(Instant::now() < deadline, "iotgw hub did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "iotgw hub stopped with {status}; the end of its log:\n{}", self.log_tail());
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}

impl Drop for HubProcess {
    /// Kills it when the bench failed before `stop` (a no-op after a clean stop).
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
