//! The running gateway: builds every step, connects them with bounded queues, and drains them
//! at SIGINT/SIGTERM. Each step lives in a module of its own, named after what it does; a
//! datapath event travels ring → fan-out → inventory and pipeline (see ARCHITECTURE.md).
//!
//! - `startup`: load the XDP object, configure the maps, restore the device table, attach;
//! - `ring`: drain the ring buffer;
//! - `fanout`: send each event to the address map, the DNS rules, the inventory, the pipeline;
//! - `inventory`: the inventory thread (and the firmware reports it takes from the bus);
//! - `counters`: per-device counters as traffic samples;
//! - `classes`: enrolled devices onto their class policy;
//! - `mud`: the MUD URLs devices announce, checked and put in force as their class;
//! - `policy_sync`: policy reloads, MUD classes and DNS-name rules;
//! - `services`: identity, integrations, the fleet, OTA;
//! - `api`: the local API with the SOAR actions;
//! - `metrics`: counters, backlogs, alerts and actions as metrics;
//! - `threat_intel`: the threat-intelligence lists, reloaded when their files change;
//! - `source_guard`: source-address bindings from ARP, DHCP, DHCPv6 and neighbour
//!   discovery, and alerts on spoofing.
//!
//! The pipeline baseline → detect → respond is `crate::pipeline`, on its own thread; every
//! alert is recorded by `crate::alerts::Recorder`, on its own thread too.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::{
    config::Config,
    datapath::{events::DatapathEvent, interface, loader},
    event::EventBus,
    inventory::Ledger,
    pipeline,
    policy::PolicyStore,
    shutdown,
};

mod api;
mod classes;
mod counters;
mod fanout;
mod inventory;
mod metrics;
mod mud;
mod mud_devices;
mod policy_sync;
mod ring;
mod services;
mod source_guard;
mod startup;
mod threat_intel;

/// How long steps get to finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Decoded events waiting for the fan-out and the inventory; beyond this the ring step waits
/// (the ring buffer then fills and XDP counts lost events, never blocking packets).
pub const PIPELINE_QUEUE: usize = 65_536;

/// Who the store's audit names for changes the controller finds or makes itself.
const ACTOR_DATAPATH: &str = "datapath";
const ACTOR_POLICY: &str = "policy";

/// Runs the gateway until shutdown. `policy` was checked before anything was attached.
pub async fn run(config: Config, mut policy: PolicyStore) -> anyhow::Result<()> {
    // Before any connection is opened: every one commits with the configured durability.
    crate::store::set_synchronous(config.store.synchronous);
    tracing::info!(synchronous = config.store.synchronous.as_str(), store = %config.store.path.display(), "store durability");
    // The store is the device table's source of truth: the table is rebuilt from it before
    // attaching. Opened (and migrated) here; then each step opens its own connection.
    if let Some(parent) = config.store.path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut ledger = Ledger::new(crate::schema::open(&config.store.path).context("opening the store")?);
    // The MUD classes devices announced before: in force before the device table is restored.
    if let Err(errors) = policy.set_generated(mud::stored_classes(ledger.connection())?) {
        for error in &errors {
            tracing::error!(%error, "stored MUD class refused; its devices stay off it until they announce again");
        }
    }
    // Checked with the policy files before the load (`cli::run::check`): cannot fail here.
    let responses = crate::respond::rules::from_policy(&policy.current().source).context("response rules")?;
    let startup::Datapath { mut loaded, maps, ring, dns, quarantine_src_mac, mud_devices: initial_devices } =
        startup::attach(&config, &policy, &mut ledger)?;
    let control: crate::datapath::Control = maps.clone();
    let bus = EventBus::default();
    // Before any producer starts: every alert published from here on is recorded.
    // The API streams what the recorder commits.
    let alert_changes = crate::alerts::changes();
    let alert_store = crate::alerts::AlertStore::open(&config.store.path)
        .context("opening the alert store")?
        .announcing(alert_changes.clone());
    let alert_recorder = crate::alerts::Recorder::spawn(alert_store, &bus).context("starting the alert recorder")?;
    let (trigger, shutdown) = shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();

    if let Some(xdp_log) = loaded.xdp_log.take() {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = xdp_log.forward(shutdown).await {
                tracing::warn!(%error, "XDP log lines no longer forwarded");
            }
        });
    }
    let (events_tx, events_rx) = tokio::sync::mpsc::channel::<DatapathEvent>(PIPELINE_QUEUE);
    tasks.spawn(ring::run(ring, events_tx, shutdown.clone()));

    // Baseline → detect → respond, on its own thread.
    let pipeline = pipeline::spawn(
        pipeline::Settings {
            baseline: baseline_config(&config)?,
            detect: detect_config(&config),
            store: Some(config.store.path.clone()),
        },
        responses.clone(),
        control.clone(),
        bus.clone(),
    )
    .context("starting detection")?;
    let pipeline_tx = pipeline.sender();
    if let Some(reloads) =
        threat_intel::start(&config.detect.threat_intel, pipeline_tx.clone(), shutdown.clone()).await?
    {
        tasks.spawn(reloads);
    }

    // The inventory, on its own thread too, so SQLite never runs on the async workers.
    let (inventory_tx, inventory_rx) = std::sync::mpsc::sync_channel(PIPELINE_QUEUE);
    let inventory_thread = inventory::spawn(&config, inventory_rx, bus.clone(), pipeline_tx.clone())?;
    tasks.spawn(inventory::forward_firmware(inventory_tx.clone(), bus.clone(), shutdown.clone()));

    let (dns_tx, dns_rx) = tokio::sync::mpsc::channel(policy_sync::DNS_QUEUE);
    let (mud_tx, mud_rx) = tokio::sync::mpsc::channel(crate::mud::config::ANNOUNCEMENT_QUEUE);
    // One request at a time: the MUD step waits for each answer.
    let (mud_classes_tx, mud_classes_rx) = tokio::sync::mpsc::channel(1);
    tasks.spawn(mud::run(config.mud.clone(), &config.store.path, mud_rx, mud_classes_tx, shutdown.clone())?);
    let source_guard = (config.source_guard.mode != crate::source_guard::Mode::Off).then(|| {
        let (tx, rx) = tokio::sync::mpsc::channel(source_guard::SAMPLE_QUEUE);
        let step =
            source_guard::run(config.source_guard.clone(), maps.clone(), rx, pipeline_tx.clone(), shutdown.clone());
        tasks.spawn(step);
        tx
    });
    let fanout = fanout::Outputs {
        maps: maps.clone(),
        dns_samples: dns_tx,
        mud: mud_tx,
        source_guard,
        inventory: inventory_tx.clone(),
        pipeline: pipeline_tx.clone(),
    };
    tasks.spawn(fanout::run(events_rx, fanout, shutdown.clone()));
    let counters = counters::Outputs { inventory: inventory_tx.clone(), pipeline: pipeline_tx.clone() };
    let every = Duration::from_millis(config.datapath.counter_interval_ms);
    tasks.spawn(counters::run(maps.clone(), every, counters, shutdown.clone()));

    let metrics = Arc::new(crate::api::metrics::Metrics::new());
    let fleet_health = services::health_sources(&metrics, &loaded.attachments);
    let mut services = services::start(&config, control.clone(), fleet_health, &bus, &shutdown).await?;

    let shared_policy = Arc::new(crate::api::SharedPolicy::default());
    shared_policy.set(crate::api::policy_view::PolicyInForce::new(policy.current(), responses.clone()));
    let parts = api::Parts {
        control,
        metrics: metrics.clone(),
        policy: shared_policy.clone(),
        bus: bus.clone(),
        alert_changes,
        pipeline: pipeline_tx.clone(),
    };
    tasks.spawn(api::bind(&config, &loaded.attachments, parts, shutdown.clone()).await?);
    let backlog = services.integrations.backlog_source();
    let fleet_link = services.fleet.as_ref().map(crate::fleet::Running::link);
    tasks.spawn(metrics::run(maps.clone(), metrics.clone(), backlog, fleet_link, bus.clone(), shutdown.clone()));

    // The task's first read is at once, so a device changed since start-up is followed there.
    let (mud_devices, mud_devices_task) = mud_devices::run(&config.store.path, initial_devices, shutdown.clone())?;
    tasks.spawn(mud_devices_task);
    let (in_force, in_force_rx) = tokio::sync::watch::channel(policy.current());
    tasks.spawn(classes::run(maps.clone(), ledger, in_force_rx, shutdown.clone()));
    let policy_step = policy_sync::PolicySync {
        config: Arc::new(config.clone()),
        maps,
        quarantine_src_mac,
        policy: Arc::new(std::sync::Mutex::new(policy)),
        dns,
        metrics,
        refusal_log: Default::default(),
        in_force,
        shared: shared_policy,
        responses,
        pipeline: pipeline_tx.clone(),
        bus,
        bundles: services.bundle_installs.take(),
        mud_devices,
    };
    tasks.spawn(policy_step.run(dns_rx, mud_classes_rx, shutdown.clone())?);

    shutdown::signal().await;
    trigger.trigger();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
        services.join().await;
    })
    .await;
    // The threads end when their senders are gone: drop ours, then wait for the last save.
    drop(pipeline_tx);
    drop(inventory_tx);
    let _ = tokio::task::spawn_blocking(move || {
        pipeline.join();
        let _ = inventory_thread.join();
        // Last: it records what the steps above published on their way out.
        alert_recorder.join();
    })
    .await;
    match drained {
        Ok(()) => match &loaded.pins {
            loader::PinPersistence::Host => tracing::info!("all tasks stopped; XDP keeps enforcing from its pins"),
            loader::PinPersistence::Private { why } => {
                tracing::warn!(%why, "all tasks stopped; the pins are private, so XDP stops enforcing with this process")
            }
        },
        Err(_) => tracing::warn!(grace = ?SHUTDOWN_GRACE, "tasks did not stop in time; exiting anyway"),
    }
    Ok(())
}

/// `[detect]`, with the gateway's own addresses among the trusted resolvers (a resolver on
/// the gateway, as the DNS-name rules take it) and `source_guard.dhcp_servers` announcing more.
fn detect_config(config: &Config) -> crate::detect::Config {
    let mut detect = config.detect.clone();
    for address in startup::gateway_addresses(config) {
        if !detect.trusted_resolvers.contains(&address) {
            detect.trusted_resolvers.push(address);
        }
    }
    detect.dhcp_servers.extend(config.source_guard.dhcp_servers.iter().copied());
    detect
}

/// `[baseline]`, with the LAN interface's subnets as the LAN when `lan_prefixes` is not set.
fn baseline_config(config: &Config) -> anyhow::Result<crate::baseline::Config> {
    let mut baseline = config.baseline.clone();
    if baseline.lan_prefixes.is_empty() {
        let subnets = interface::interface_subnets(&config.datapath.lan_interface)?;
        if subnets.iter().any(|net| !net.addr().is_loopback() && !interface::is_link_local(net)) {
            tracing::info!(interface = %config.datapath.lan_interface, prefixes = ?subnets, "LAN prefixes from the LAN interface");
            baseline.lan_prefixes = subnets;
        } else {
            tracing::warn!(
                interface = %config.datapath.lan_interface,
                "the LAN interface has no address: the LAN is taken to be every private range (set [baseline] lan_prefixes)"
            );
        }
    }
    Ok(baseline)
}
