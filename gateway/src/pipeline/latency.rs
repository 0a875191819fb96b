//! Decision latency in-process: from the moment the first anomalous event is handed to the
//! running pipeline (`Pipeline::sender`) to the `set_access` call that enforces the
//! response. The lab benchmark adds the XDP side (ring buffer in, map update out); this is
//! the controller's share. Reads nothing; runs its own pipeline over a `MemoryDatapath`.
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use super::{Command, Settings};
use crate::{
    baseline,
    datapath::{ControlError, DeviceAccess, DeviceControl, MemoryDatapath, budget::Budget},
    detect::synthetic,
    device::{Access, Mac},
    event::EventBus,
    pipeline,
    respond::rules,
};

/// A datapath that notes when each device was last set.
#[derive(Default)]
pub struct TimedDatapath {
    inner: MemoryDatapath,
    set_at: Mutex<Vec<(Mac, Access, Instant)>>,
}

impl TimedDatapath {
    /// When `mac` was first given `access`.
    pub fn first_set(&self, mac: Mac, access: Access) -> Option<Instant> {
        let set_at = self.set_at.lock().expect("lock poisoned only by a panic elsewhere");
        set_at.iter().find(|(m, a, _)| *m == mac && *a == access).map(|(_, _, t)| *t)
    }
}

impl DeviceControl for TimedDatapath {
    fn set_access(&self, mac: Mac, access: DeviceAccess) -> Result<(), ControlError> {
        self.inner.set_access(mac, access)?;
        self.set_at.lock().expect("lock poisoned only by a panic elsewhere").push((mac, access.access, Instant::now()));
        Ok(())
    }

    fn access(&self, mac: Mac) -> Result<Option<DeviceAccess>, ControlError> {
        self.inner.access(mac)
    }

    fn set_device_ipv4(&self, mac: Mac, addr: Ipv4Addr) -> Result<(), ControlError> {
        self.inner.set_device_ipv4(mac, addr)
    }

    fn set_budget(&self, mac: Mac, budget: Option<Budget>) -> Result<(), ControlError> {
        self.inner.set_budget(mac, budget)
    }
}

/// Latency figures over many runs.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyReport {
    pub runs: usize,
    /// Runs that never reached `set_access` within `DEADLINE`.
    pub missed: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// How long one run may wait for its `set_access`.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The rule the benchmark runs under.
const RULES: &str = "[[response]]\nname = \"bench\"\ndetectors = [\"*\"]\nmin_score = 0.5\naction = \"quarantine\"\nmax_global = 1000000\n";

/// Runs `runs` devices through the pipeline: each learns a short baseline (simulated time,
/// fed without timing), the queue drains, then the device connects to an unknown IP; the
/// time from handing that flow to the pipeline's channel to the `set_access` that
/// quarantines it is one sample (channel hop, thread wake-up, baseline, detect, respond).
pub fn measure_decision_latency(runs: usize) -> LatencyReport {
    let datapath = Arc::new(TimedDatapath::default());
    let settings = Settings {
        baseline: baseline::Config { learning_secs: 60, min_learning_windows: 1, ..Default::default() },
        // The synthetic meter resolves its head-end at the gateway.
        detect: crate::detect::Config {
            trusted_resolvers: vec![std::net::IpAddr::V4(crate::detect::synthetic::GATEWAY)],
            ..Default::default()
        },
        store: None,
    };
    // The rules are a constant of this file; a parse failure is a bug caught by its test.
    let policy = rules::parse(std::path::Path::new("latency.toml"), RULES).expect("benchmark rules parse");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
    let pipeline = match pipeline::spawn(settings, policy, datapath.clone(), EventBus::default()) {
        Ok(pipeline) => pipeline,
        Err(error) => panic!("pipeline: {error}"),
    };
    let sender = pipeline.sender();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut samples = Vec::with_capacity(runs);
    let mut missed = 0;
    runtime.block_on(async {
        for run in 0..runs {
            let mut spec = synthetic::meter(1);
            spec.mac = Mac([0x02, 0xbe, 0x00, (run >> 16) as u8, (run >> 8) as u8, run as u8]);
            let learn = synthetic::normal_traffic(&[spec.clone()], start, Duration::from_secs(120), run as u64);
            for input in learn {
                if sender.send(Command::Input(input)).await.is_err() {
                    return;
                }
            }
            // Measure the decision, not the learning backlog: wait until the loop has taken
            // every queued input (bounded by DEADLINE).
            let drained_by = Instant::now() + DEADLINE;
            while sender.capacity() < sender.max_capacity() && Instant::now() < drained_by {
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            let anomalous = synthetic::tcp_syn(
                spec.mac,
                start + Duration::from_secs(121),
                IpAddr::V4(spec.ip),
                IpAddr::V4(Ipv4Addr::new(45, 9, 148, 3)),
                40_000,
                4_444,
            );
            let sent = Instant::now();
            if sender.send(Command::Input(anomalous)).await.is_err() {
                return;
            }
            let deadline = sent + DEADLINE;
            loop {
                if let Some(set) = datapath.first_set(spec.mac, Access::Quarantined) {
                    samples.push(set.duration_since(sent));
                    break;
                }
                if Instant::now() > deadline {
                    missed += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
        }
    });
    drop(sender);
    pipeline.join();
    samples.sort();
    let pick =
        |q: f64| samples.get(((samples.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or_default();
    LatencyReport { runs, missed, p50: pick(0.5), p99: pick(0.99), max: samples.last().copied().unwrap_or_default() }
}
