//! The running gateway: loads the datapath, then runs every controller step as a task fed
//! by the ring buffer and the counters, until SIGINT/SIGTERM. Built from one place so every
//! task's handle is kept and drained on shutdown.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use gateway_ebpf::GatewayConfig;

use crate::{
    config::Config,
    event::{EventBus, EventKind, GatewayEvent, Severity},
    policy::{CompiledPolicy, PolicyStore, Verdicts},
    datapath::{DeviceControl as _, events::{DatapathEvent, RingReader}, loader, maps::Maps},
    shutdown,
};

/// How long tasks get to finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the per-device counters are read into traffic samples.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// Decoded events waiting for the pipeline; beyond this the reader waits (the ring buffer
/// then fills and XDP counts lost events, never blocking packets).
pub const PIPELINE_QUEUE: usize = 65_536;

/// The datapath configuration the programs enforce: interfaces from the gateway config,
/// default verdicts from the policy files.
pub fn datapath_config(config: &Config, verdicts: &Verdicts, quarantine_src_mac: [u8; 6]) -> GatewayConfig {
    let d = &config.datapath;
    GatewayConfig {
        malformed_verdict: verdicts.malformed,
        unknown_verdict: verdicts.unknown,
        policy_miss_verdict: verdicts.policy_miss,
        quarantine_verdict: verdicts.quarantine,
        sample_packets: u8::from(d.sample_packets),
        flow_events: 1,
        quarantine_dst_mac: d.quarantine_host_mac.map(|m| m.0).unwrap_or_default(),
        quarantine_src_mac,
        ..GatewayConfig::default()
    }
}

/// An interface's MAC address, from getifaddrs (sysfs may belong to another network
/// namespace than ours when started through `nsenter --net`).
pub fn interface_mac(interface: &str) -> anyhow::Result<[u8; 6]> {
    nix::ifaddrs::getifaddrs()
        .context("getifaddrs")?
        .filter(|ifa| ifa.interface_name == interface)
        .find_map(|ifa| ifa.address?.as_link_addr()?.addr())
        .with_context(|| format!("interface {interface} has no link-layer address (does it exist?)"))
}

pub fn if_index(interface: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(interface).with_context(|| format!("interface {interface} not found"))
}

/// Writes a compiled policy into the datapath: rules first, then the verdicts.
pub fn apply_policy(maps: &Maps, config: &Config, policy: &CompiledPolicy) -> anyhow::Result<()> {
    let report = maps.sync_policy(&policy.rules).context("writing policy rules")?;
    let mut datapath = maps.read_config().unwrap_or_default();
    let wanted = datapath_config(config, &policy.verdicts, datapath.quarantine_src_mac);
    datapath = GatewayConfig { quarantine_src_mac: datapath.quarantine_src_mac, ..wanted };
    maps.write_config(&datapath).context("writing datapath config")?;
    tracing::info!(
        classes = policy.classes.len(),
        rules = policy.rules.len(),
        inserted = report.inserted,
        removed = report.removed,
        unchanged = report.unchanged,
        "policy applied"
    );
    Ok(())
}

/// Runs the gateway until shutdown. `policy` was checked before anything was attached.
pub async fn run(config: Config, policy: PolicyStore) -> anyhow::Result<()> {
    let mut policy = policy;
    let mut loaded = loader::load_and_attach(&config.datapath).context("loading the XDP datapath")?;
    let maps = Arc::new(Maps::take(&mut loaded.ebpf).context("opening the datapath maps")?);
    let mut ring = RingReader::new(&mut loaded.ebpf).context("opening the event ring buffer")?;

    let quarantine_src_mac = match &config.datapath.quarantine_interface {
        Some(interface) => {
            maps.set_quarantine_port(Some(if_index(interface)?))?;
            interface_mac(interface)?
        }
        None => {
            maps.set_quarantine_port(None)?;
            [0; 6]
        }
    };
    maps.write_config(&datapath_config(&config, &policy.current().verdicts, quarantine_src_mac))?;
    apply_policy(&maps, &config, &policy.current())?;
    tracing::info!(devices = maps.devices().len(), "datapath configured (pinned state kept)");
    let bus = EventBus::default();

    let (trigger, shutdown) = shutdown::channel();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<DatapathEvent>(PIPELINE_QUEUE);

    let mut tasks = tokio::task::JoinSet::new();
    {
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    result = ring.next_batch(&mut batch) => {
                        if let Err(error) = result {
                            tracing::error!(%error, "ring buffer read failed");
                            break;
                        }
                        for event in batch.drain(..) {
                            if events_tx.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
    }
    {
        let maps = maps.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    event = events_rx.recv() => {
                        let Some(event) = event else { break };
                        if let DatapathEvent::Flow(flow) = &event {
                            if let std::net::IpAddr::V4(v4) = flow.src {
                                if !v4.is_unspecified() {
                                    let _ = maps.set_device_ipv4(flow.mac, v4);
                                }
                            }
                        }
                        tracing::debug!(?event, "datapath event");
                    }
                }
            }
        });
    }

    {
        // Policy reloads: SIGHUP, or a change in the policy folder. A bad policy is refused
        // whole and the running one stays in the maps.
        let maps = maps.clone();
        let config = config.clone();
        let bus = bus.clone();
        let mut shutdown = shutdown.clone();
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let mut watcher = if config.policy.watch {
            match crate::policy::watch(&config.policy.dir) {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    tracing::warn!(%error, dir = %config.policy.dir.display(), "cannot watch the policy folder; SIGHUP still reloads");
                    None
                }
            }
        } else {
            None
        };
        tasks.spawn(async move {
            loop {
                let cause = tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = hangup.recv() => "SIGHUP",
                    Some(_) = async { match watcher.as_mut() { Some(w) => w.requests.recv().await, None => std::future::pending().await } } => "file change",
                };
                match policy.reload() {
                    Ok(compiled) => {
                        let outcome = apply_policy(&maps, &config, &compiled);
                        let (accepted, detail) = match &outcome {
                            Ok(()) => (true, format!("reloaded on {cause}: {} classes, {} rules", compiled.classes.len(), compiled.rules.len())),
                            Err(error) => (false, format!("reload on {cause} could not be written to the datapath: {error:#}")),
                        };
                        bus.publish(GatewayEvent::new(Severity::Info, None, "policy-file", EventKind::PolicyChange { accepted, detail }));
                    }
                    Err(errors) => {
                        for error in &errors {
                            tracing::error!(%error, "policy refused");
                        }
                        let detail = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                        tracing::warn!(cause, errors = errors.len(), "policy reload refused; the running policy stays");
                        bus.publish(GatewayEvent::new(Severity::Medium, None, "policy-file", EventKind::PolicyChange { accepted: false, detail }));
                    }
                }
            }
        });
    }

    shutdown::signal().await;
    trigger.trigger();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => tracing::info!("all tasks stopped; XDP keeps enforcing from its pins"),
        Err(_) => tracing::warn!(grace = ?SHUTDOWN_GRACE, "tasks did not stop in time; exiting anyway"),
    }
    Ok(())
}
