//! The running gateway: loads the datapath, then runs every controller step as a task fed
//! by the ring buffer and the counters, until SIGINT/SIGTERM. Built from one place so every
//! task's handle is kept and drained on shutdown.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use gateway_ebpf::GatewayConfig;

use crate::{
    config::Config,
    datapath::{
        DeviceControl as _,
        events::{DatapathEvent, RingReader},
        loader,
        maps::Maps,
    },
    event::{EventBus, EventKind, GatewayEvent, Severity},
    policy::{CompiledPolicy, DnsTracker, PolicyStore, Verdicts},
    shutdown,
};

/// How long tasks get to finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often datapath counters and integration backlogs are exported as metrics.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// DNS answers waiting for the policy task; beyond this they are skipped (the next answer
/// for the same name renews the rule).
pub const DNS_QUEUE: usize = 1_024;
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

/// An interface's own addresses (IPv4 first, as getifaddrs lists them), from getifaddrs.
pub fn interface_addresses(interface: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let mut addresses = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")?.filter(|ifa| ifa.interface_name == interface) {
        let Some(address) = ifa.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.push(std::net::IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.push(std::net::IpAddr::V6(v6.ip()));
        }
    }
    Ok(addresses)
}

/// The subnets of an interface's addresses, plus the link-local ranges: what the LAN is
/// when `[baseline] lan_prefixes` is not configured.
pub fn interface_subnets(interface: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let mut subnets: Vec<ipnet::IpNet> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")?.filter(|ifa| ifa.interface_name == interface) {
        let (Some(address), Some(netmask)) = (ifa.address, ifa.netmask) else { continue };
        let net = if let (Some(a), Some(m)) = (address.as_sockaddr_in(), netmask.as_sockaddr_in()) {
            ipnet::Ipv4Net::with_netmask(a.ip(), m.ip()).ok().map(|n| ipnet::IpNet::V4(n.trunc()))
        } else if let (Some(a), Some(m)) = (address.as_sockaddr_in6(), netmask.as_sockaddr_in6()) {
            ipnet::Ipv6Net::with_netmask(a.ip(), m.ip()).ok().map(|n| ipnet::IpNet::V6(n.trunc()))
        } else {
            None
        };
        subnets.extend(net.filter(|n| !subnets.contains(n)));
    }
    for link_local in ["169.254.0.0/16", "fe80::/10"] {
        // Literals: they parse.
        subnets.extend(link_local.parse::<ipnet::IpNet>().ok().filter(|n| !subnets.contains(n)));
    }
    Ok(subnets)
}

fn is_link_local(net: &ipnet::IpNet) -> bool {
    match net.addr() {
        std::net::IpAddr::V4(a) => a.is_link_local(),
        std::net::IpAddr::V6(a) => a.is_unicast_link_local(),
    }
}

pub fn if_index(interface: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(interface).with_context(|| format!("interface {interface} not found"))
}

/// Writes a compiled policy into the datapath: rules (with the addresses DNS-name rules
/// currently resolve to) first, then the verdicts.
pub fn apply_policy(maps: &Maps, config: &Config, policy: &CompiledPolicy, dns: &DnsTracker) -> anyhow::Result<()> {
    let (rules, refused) = policy.rules_with(&dns.active());
    if !refused.is_empty() {
        tracing::warn!(refused = refused.len(), "DNS-resolved entries beyond the datapath's limits were not written");
    }
    let report = maps.sync_policy(&rules).context("writing policy rules")?;
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

/// What the inventory thread consumes.
pub enum InventoryInput {
    Event(DatapathEvent),
    Traffic(crate::baseline::TrafficSample),
    /// A device reported a firmware install through the OTA service.
    Firmware {
        mac: crate::device::Mac,
        version: String,
    },
}

/// The inventory's thread: its own SQLite connection, fed by the fan-out. What it learns
/// goes on the bus (new devices, addresses, types) and device types go to detection, whose
/// class baselines and per-class rules key on them.
fn spawn_inventory(
    config: &Config,
    input: std::sync::mpsc::Receiver<InventoryInput>,
    bus: EventBus,
    detect_tx: tokio::sync::mpsc::Sender<crate::respond::pipeline::Command>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let conn = crate::store::open(&config.store.path).context("opening the store for the inventory")?;
    let model = match &config.inventory.model {
        Some(path) => crate::fingerprint::Classifier::load(path),
        None => crate::fingerprint::Classifier::shipped(),
    };
    let classifier = match model {
        Ok(classifier) => Some(classifier),
        Err(error) => {
            tracing::warn!(%error, "device-type model unavailable; types stay unknown");
            None
        }
    };
    let vendors = match crate::inventory::Vendors::load(&config.inventory.ieee_data_dir) {
        Ok(vendors) => vendors,
        Err(error) => {
            tracing::warn!(%error, "vendor names unavailable (install Debian's ieee-data)");
            crate::inventory::Vendors::empty()
        }
    };
    let mut inventory = crate::inventory::Inventory::new(conn, vendors, classifier).with_config(&config.inventory);
    std::thread::Builder::new()
        .name("iotgw-inventory".into())
        .spawn(move || {
            let mut queued = std::collections::VecDeque::new();
            while let Some(item) = next_inventory_input(&input, &mut queued) {
                let result = match item {
                    InventoryInput::Event(event) => {
                        // The datapath events already queued go in one transaction: with
                        // `[store] synchronous = "full"` each commit is an fsync (2.5 ms on
                        // the benchmark VM), so one per event would cap the inventory near
                        // 400 events/s.
                        let mut events = vec![event];
                        while events.len() < INVENTORY_BATCH_MAX {
                            match input.try_recv() {
                                Ok(InventoryInput::Event(event)) => events.push(event),
                                Ok(other) => {
                                    queued.push_back(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        match inventory.handle_batch(&events) {
                            // One refused event (hostile text from a device) must not take the
                            // others with it: the batch again, one transaction per event.
                            Err(_) if events.len() > 1 => {
                                let mut changes = Vec::new();
                                for event in &events {
                                    match inventory.handle(event) {
                                        Ok(more) => changes.extend(more),
                                        Err(error) => tracing::warn!(%error, "inventory update failed"),
                                    }
                                }
                                Ok(changes)
                            }
                            result => result,
                        }
                    }
                    InventoryInput::Traffic(sample) => inventory
                        .record_traffic(
                            sample.mac,
                            sample.interval_start,
                            &crate::inventory::replay::TrafficCounters {
                                tx_bytes: sample.tx_bytes,
                                tx_packets: sample.tx_packets,
                                rx_bytes: sample.rx_bytes,
                                rx_packets: sample.rx_packets,
                            },
                        )
                        .map(|()| Vec::new()),
                    InventoryInput::Firmware { mac, version } => {
                        inventory.set_firmware(mac, &version, "ota").map(|()| Vec::new())
                    }
                };
                match result {
                    Ok(changes) => {
                        for change in changes {
                            if let crate::inventory::InventoryChange::TypeChanged { mac, device_type, .. } = &change {
                                let class = crate::baseline::Input::Class { mac: *mac, class: device_type.clone() };
                                let _ = detect_tx.blocking_send(crate::respond::pipeline::Command::Input(class));
                            }
                            if let Some(event) = change.to_gateway_event() {
                                bus.publish(event);
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "inventory update failed"),
                }
            }
            tracing::info!("inventory stopped");
        })
        .context("starting the inventory thread")
}

/// Datapath events the inventory takes in one transaction at most.
pub const INVENTORY_BATCH_MAX: usize = 1_024;

/// The inventory thread's next input: one set aside while batching, else the channel's.
fn next_inventory_input(
    input: &std::sync::mpsc::Receiver<InventoryInput>,
    queued: &mut std::collections::VecDeque<InventoryInput>,
) -> Option<InventoryInput> {
    queued.pop_front().or_else(|| input.recv().ok())
}

/// How often enrolled devices are matched to their class again (certificate subject, MAC,
/// OUI, fingerprint type), so an enrollment or a new type guess reaches the device table.
pub const CLASSIFY_INTERVAL: Duration = Duration::from_secs(1);

/// Who the store's audit names for changes the controller finds or makes itself.
const ACTOR_DATAPATH: &str = "datapath";
const ACTOR_POLICY: &str = "policy";

/// Puts every enrolled device on the policy of the class the policy files match it to, and
/// records it in the store (the device table's source of truth).
/// Identity decides *whether* a device is enrolled; the policy files decide *what* an
/// enrolled device may reach.
fn assign_classes(maps: &Maps, inventory: &mut crate::inventory::Inventory, policy: &CompiledPolicy) -> usize {
    let mut changed = 0;
    for (mac, entry) in maps.devices() {
        if !takes_class_policy(entry.state, entry.policy_id) {
            continue;
        }
        let conn = inventory.connection();
        let device_type = crate::inventory::query::device(conn, mac).ok().flatten().and_then(|d| d.device.device_type);
        let subject = crate::identity::registry::valid_subject_by_mac(conn, mac).ok().flatten();
        let Some(class) = policy.classify(mac, device_type.as_deref(), subject.as_deref()) else { continue };
        if (entry.policy_id, entry.class_id) == (class.policy_id.0, class.class_id.0) {
            continue;
        }
        let access = crate::datapath::DeviceAccess {
            access: crate::device::Access::Enrolled,
            policy_id: class.policy_id.0,
            class_id: class.class_id.0,
        };
        match maps.set_access(mac, access) {
            Ok(()) => {
                tracing::info!(device = %mac, class = %class.name, matched_by = ?class.matched_by, "enrolled device put on its class policy");
                let reason = format!("class {} ({:?})", class.name, class.matched_by);
                if let Err(error) = inventory.record_access(mac, access, ACTOR_POLICY, &reason) {
                    tracing::error!(%error, device = %mac, "class policy applied but not recorded in the store");
                }
                changed += 1;
            }
            Err(error) => tracing::warn!(%error, device = %mac, "cannot set the class policy"),
        }
    }
    changed
}

/// Whether the class task may (re)assign a device entry's class policy: enrolled devices
/// only, and not one a response put on the quarantine lane's allow-list (`update_lane`),
/// which stays there until an operator releases it.
fn takes_class_policy(state: u8, policy_id: u32) -> bool {
    state == gateway_ebpf::device_state::ENROLLED && policy_id != gateway_ebpf::lane::QUARANTINE
}

/// Rebuilds the device table from the store (`datapath::restore`) and records back what the
/// pinned table held stricter. Runs before the programs are attached, so a device blocked
/// or quarantined before a reboot (or a controller on a private bpffs) is so at its first
/// packet.
fn restore_device_table(
    maps: &dyn crate::datapath::DeviceControl,
    inventory: &mut crate::inventory::Inventory,
    enrolled_policy: u32,
) -> anyhow::Result<crate::datapath::restore::Restored> {
    let started = std::time::Instant::now();
    let stored = inventory.enforced().context("reading the device table from the store")?;
    let restored = crate::datapath::restore::restore(maps, &stored, enrolled_policy);
    for (mac, entry) in &restored.written {
        if matches!(entry.access, crate::device::Access::Quarantined | crate::device::Access::Blocked) {
            tracing::info!(device = %mac, access = %entry.access, "isolation restored from the store");
        }
    }
    for (mac, entry) in &restored.stricter_in_table {
        tracing::warn!(device = %mac, access = %entry.access, "the pinned device table is stricter than the store; kept");
        let reason = "stricter entry found in the pinned device table at start-up";
        if let Err(error) = inventory.record_access(*mac, *entry, ACTOR_DATAPATH, reason) {
            tracing::error!(%error, device = %mac, "cannot record the kept entry in the store");
        }
    }
    for (mac, error) in &restored.failed {
        tracing::error!(device = %mac, %error, "cannot restore the device's entry from the store");
    }
    tracing::info!(
        stored = stored.len(),
        written = restored.written.len(),
        unchanged = restored.unchanged,
        kept_stricter = restored.stricter_in_table.len(),
        failed = restored.failed.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "device table restored from the store"
    );
    Ok(restored)
}

/// Runs the gateway until shutdown. `policy` was checked before anything was attached.
pub async fn run(config: Config, policy: PolicyStore) -> anyhow::Result<()> {
    // Before any connection is opened: every one commits with the configured durability.
    crate::store::set_synchronous(config.store.synchronous);
    tracing::info!(synchronous = config.store.synchronous.as_str(), store = %config.store.path.display(), "store durability");
    let mut policy = policy;
    let mut loaded = loader::load(&config.datapath).context("loading the XDP datapath")?;
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
    let mut dns = DnsTracker::new(&policy.current());
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(policy.current());
    apply_policy(&maps, &config, &policy.current(), &dns)?;
    // The store: opened (and migrated) once here, then each step opens its own connection.
    // It is the device table's source of truth: the table is rebuilt from it before attaching.
    if let Some(parent) = config.store.path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut ledger = crate::inventory::Inventory::new(
        crate::store::open(&config.store.path).context("opening the store")?,
        crate::inventory::Vendors::empty(),
        None,
    );
    // Checked with the policy files before the load (`cli::run::check`): cannot fail here.
    let responses = crate::respond::rules::from_policy(&policy.current().source).context("response rules")?;
    restore_device_table(&*maps, &mut ledger, config.identity.enrolled_policy_id)?;
    assign_classes(&maps, &mut ledger, &policy.current());
    // Only now does traffic meet the programs: configured maps, never blank ones.
    loader::attach_all(&mut loaded, &config.datapath).context("attaching the XDP programs")?;
    tracing::info!(
        devices = maps.devices().len(),
        pins = loaded.pins.describe(),
        "datapath configured (device table rebuilt from the store before attaching)"
    );
    let bus = EventBus::default();

    let (trigger, shutdown) = shutdown::channel();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<DatapathEvent>(PIPELINE_QUEUE);

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(xdp_log) = loaded.xdp_log.take() {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = xdp_log.forward(shutdown).await {
                tracing::warn!(%error, "XDP log lines no longer forwarded");
            }
        });
    }
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
    // Inventory: its own thread, so SQLite never runs on the async workers.
    let (inventory_tx, inventory_rx) = std::sync::mpsc::sync_channel::<InventoryInput>(PIPELINE_QUEUE);
    // DNS answers from upstream, for the DNS-name rules (owned by the policy task).
    let (dns_tx, mut dns_rx) = tokio::sync::mpsc::channel::<crate::datapath::events::PacketSample>(DNS_QUEUE);

    // Baseline → detect → respond: its own thread too (`respond::pipeline`).
    let control: crate::datapath::Control = maps.clone();
    let mut baseline = config.baseline.clone();
    if baseline.lan_prefixes.is_empty() {
        let subnets = interface_subnets(&config.datapath.lan_interface)?;
        if subnets.iter().any(|net| !net.addr().is_loopback() && !is_link_local(net)) {
            tracing::info!(interface = %config.datapath.lan_interface, prefixes = ?subnets, "LAN prefixes from the LAN interface");
            baseline.lan_prefixes = subnets;
        } else {
            tracing::warn!(
                interface = %config.datapath.lan_interface,
                "the LAN interface has no address: the LAN is taken to be every private range (set [baseline] lan_prefixes)"
            );
        }
    }
    let pipeline = crate::respond::pipeline::spawn(
        crate::respond::pipeline::Settings {
            baseline,
            detect: config.detect.clone(),
            store: Some(config.store.path.clone()),
        },
        responses,
        control.clone(),
        bus.clone(),
    )
    .context("starting detection")?;
    let detect_tx = pipeline.sender();
    let inventory_thread = spawn_inventory(&config, inventory_rx, bus.clone(), detect_tx.clone())?;
    {
        // Firmware versions reported to the OTA service land in the inventory.
        let inventory_tx = inventory_tx.clone();
        let mut events = bus.subscribe();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    event = events.recv() => match event {
                        Ok(GatewayEvent { device: Some(mac), kind: EventKind::Audit { action, detail }, .. })
                            if action == crate::ota::server::FIRMWARE_INSTALLED_ACTION =>
                        {
                            let _ = inventory_tx.try_send(InventoryInput::Firmware { mac, version: detail });
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
    }

    {
        // Fan-out of datapath events: device IPs to the maps (for the WAN program), then the
        // inventory and the detection pipeline.
        let maps = maps.clone();
        let inventory_tx = inventory_tx.clone();
        let detect_tx = detect_tx.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    event = events_rx.recv() => {
                        if let Some(DatapathEvent::Sample(sample)) = &event
                            && sample.kind == crate::datapath::events::SampleKind::DnsAnswer
                            && dns_tx.try_send(sample.clone()).is_err()
                        {
                            tracing::debug!("DNS answer queue full; answer skipped");
                        }
                        let Some(event) = event else { break };
                        if let DatapathEvent::Flow(flow) = &event
                            && let std::net::IpAddr::V4(v4) = flow.src
                            && !v4.is_unspecified()
                            && !v4.is_broadcast()
                        {
                            let _ = maps.set_device_ipv4(flow.mac, v4);
                        }
                        if inventory_tx.try_send(InventoryInput::Event(event.clone())).is_err() {
                            tracing::debug!("inventory queue full; event skipped");
                        }
                        if detect_tx.send(crate::respond::pipeline::Command::from(event)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    {
        // Per-device counters, every `datapath.counter_interval_ms`, as deltas: the traffic
        // series of the inventory, the volume baselines and the rate detectors.
        let counter_interval = std::time::Duration::from_millis(config.datapath.counter_interval_ms);
        let maps = maps.clone();
        let detect_tx = detect_tx.clone();
        let inventory_tx = inventory_tx.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut previous: std::collections::HashMap<crate::device::Mac, crate::datapath::maps::DeviceCounters> =
                maps.device_counters().into_iter().collect();
            let mut ticker = tokio::time::interval(counter_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_read = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = ticker.tick() => {}
                }
                let now = std::time::SystemTime::now();
                // The real span since the last read: a late tick must not inflate rates.
                let interval = last_read.elapsed().max(std::time::Duration::from_millis(1));
                last_read = std::time::Instant::now();
                let interval_start = now - interval;
                let current = {
                    let maps = maps.clone();
                    match tokio::task::spawn_blocking(move || maps.device_counters()).await {
                        Ok(current) => current,
                        Err(_) => continue,
                    }
                };
                for (mac, counters) in current {
                    let before = previous.insert(mac, counters).unwrap_or_default();
                    let sample = crate::baseline::TrafficSample {
                        mac,
                        interval_start,
                        interval,
                        tx_bytes: counters.tx_bytes.saturating_sub(before.tx_bytes),
                        tx_packets: counters.tx_packets.saturating_sub(before.tx_packets),
                        rx_bytes: counters.rx_bytes.saturating_sub(before.rx_bytes),
                        rx_packets: counters.rx_packets.saturating_sub(before.rx_packets),
                    };
                    if sample.tx_packets == 0 && sample.rx_packets == 0 {
                        continue;
                    }
                    let _ = inventory_tx.try_send(InventoryInput::Traffic(sample));
                    let _ = detect_tx
                        .send(crate::respond::pipeline::Command::Input(crate::baseline::Input::Traffic(sample)))
                        .await;
                }
                let _ = detect_tx.send(crate::respond::pipeline::Command::Tick(now)).await;
            }
        });
    }

    // Identity (EST enrollment, access follows certificates), integrations, OTA. EST and OTA
    // are for devices: they listen on the LAN side unless their `listen` says otherwise.
    let lan_addresses = interface_addresses(&config.datapath.lan_interface).unwrap_or_default();
    let identity = if config.identity.enabled {
        let mut identity_config = config.identity.clone();
        identity_config.listen =
            crate::config::lan_side(identity_config.listen, &lan_addresses, crate::identity::DEFAULT_PORT);
        Some(
            crate::identity::service::spawn(
                &identity_config,
                &config.store.path,
                control.clone(),
                bus.clone(),
                shutdown.clone(),
            )
            .await
            .context("starting the identity service")?,
        )
    } else {
        None
    };
    let integrations =
        crate::integrations::spawn(config.integrations.clone(), &config.store.path, bus.clone(), shutdown.clone())
            .context("starting integrations")?;
    let ota = if config.ota.enabled {
        let mut ota_config = config.ota.clone();
        ota_config.listen = crate::config::lan_side(ota_config.listen, &lan_addresses, crate::ota::DEFAULT_PORT);
        Some(
            crate::ota::spawn(&ota_config, &config.store.path, bus.clone(), shutdown.clone())
                .await
                .context("starting the OTA service")?,
        )
    } else {
        None
    };

    // The local API (status, devices, actions, metrics), with the SOAR actions mounted on it.
    let shared_policy = Arc::new(crate::api::directory::SharedPolicy::default());
    shared_policy.set(crate::api::policy_view::snapshot(&policy.current()));
    let metrics = Arc::new(crate::api::metrics::Metrics::new());
    {
        let directory = crate::api::inventory_directory::InventoryDirectory::open(&config.store.path)
            .context("opening the store for the API")?;
        let interfaces = loaded
            .attachments
            .iter()
            .map(|a| crate::api::model::AttachedInterface {
                name: a.interface.clone(),
                role: if a.program == gateway_ebpf::programs::LAN_INGRESS { "lan".into() } else { "wan".into() },
                mode: a.mode.to_owned(),
            })
            .collect();
        let state = crate::api::ApiState::new(&config.api, Arc::new(directory), control.clone())
            .context("API tokens")?
            .with_metrics(metrics.clone())
            .with_policies(shared_policy.clone())
            .with_events(bus.clone())
            .with_interfaces(interfaces);
        let soar = crate::integrations::soar::SoarState::new(
            &config.integrations,
            &config.store.path,
            control.clone(),
            bus.clone(),
        )
        .context("opening the store for SOAR actions")?
        .with_action_lock(state.action_lock())
        .with_failure_limiter(state.failure_limiter());
        let app = crate::api::router(state).nest("/api/v1/soar", crate::integrations::soar::router(soar));
        let tls = crate::api::tls_config(&config.api).context("the API's TLS certificate")?;
        let listener = crate::api::bind(&config.api).await.context("binding the API")?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = crate::api::serve_on(listener, app, tls, shutdown).await {
                tracing::error!(%error, "API server stopped");
            }
        });
    }
    {
        // Metrics: datapath counters and integration backlogs every second, alerts and
        // actions as they are published.
        let maps = maps.clone();
        let metrics = metrics.clone();
        let backlog = integrations.backlog_source();
        let mut events = bus.subscribe();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(COUNTER_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = ticker.tick() => {
                        metrics.set_datapath_counters(crate::api::metrics::DatapathCounters::from_maps(&maps));
                        for sink in backlog.backlog().await {
                            metrics.set_integration_backlog(&sink.sink, sink.pending);
                        }
                    }
                    event = events.recv() => match event {
                        Ok(event) => match &event.kind {
                            EventKind::Alert { detector, score, observed, resolved, .. } => {
                                if !resolved {
                                    tracing::warn!(detector = %detector, device = ?event.device, score, %observed, "alert raised");
                                }
                                metrics.record_alert(detector, event.severity);
                            }
                            // The API counts its own actions.
                            EventKind::Action { action, reason } if !event.actor.starts_with("api:") => {
                                tracing::warn!(action = %action, device = ?event.device, actor = %event.actor, %reason, "response applied");
                                metrics.record_action(action, &event.actor);
                            }
                            _ => {}
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => metrics.record_events_lost("event_bus", n),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
    }

    {
        // Classes: enrolled devices onto their class's policy.
        let maps = maps.clone();
        let policy_rx = policy_rx.clone();
        let mut shutdown = shutdown.clone();
        let ledger = Arc::new(std::sync::Mutex::new(ledger));
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(CLASSIFY_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = ticker.tick() => {}
                }
                let (maps, ledger, policy) = (maps.clone(), ledger.clone(), policy_rx.borrow().clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let mut ledger = ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    assign_classes(&maps, &mut ledger, &policy)
                })
                .await;
            }
        });
    }

    {
        // Policy reloads: SIGHUP, or a change in the policy folder. A bad policy is refused
        // whole and the running one stays in the maps.
        let maps = maps.clone();
        let config = config.clone();
        let bus = bus.clone();
        let shared_policy = shared_policy.clone();
        let detect_tx = detect_tx.clone();
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
                let next_expiry = dns.next_expiry();
                let cause = tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = hangup.recv() => "SIGHUP",
                    Some(_) = async { match watcher.as_mut() { Some(w) => w.requests.recv().await, None => std::future::pending().await } } => "file change",
                    Some(sample) = dns_rx.recv() => {
                        // Answers open the addresses of allowed names for the device's policies.
                        let class_policy = maps.access(sample.mac).ok().flatten();
                        let policies = match class_policy {
                            Some(a) => crate::policy::dns::policies_in_force(a.access, crate::policy::PolicyId(a.policy_id)),
                            None => crate::policy::dns::policies_in_force(crate::device::Access::Unknown, crate::policy::PolicyId::ONBOARDING),
                        };
                        match dns.observe(&policies, sample.payload(), std::time::Instant::now()) {
                            Ok(update) if !update.added.is_empty() => {
                                tracing::info!(device = %sample.mac, added = update.added.len(), "DNS answer opened addresses of allowed names");
                                if let Err(error) = apply_policy(&maps, &config, &policy.current(), &dns) {
                                    tracing::error!(%error, "writing DNS-resolved rules");
                                }
                            }
                            Ok(_) => {}
                            Err(error) => tracing::debug!(%error, device = %sample.mac, "DNS answer not usable"),
                        }
                        continue;
                    }
                    _ = async { match next_expiry { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => {
                        // Addresses whose TTL ran out close again.
                        if !dns.tick(std::time::Instant::now()).is_empty()
                            && let Err(error) = apply_policy(&maps, &config, &policy.current(), &dns)
                        {
                            tracing::error!(%error, "removing expired DNS-resolved rules");
                        }
                        continue;
                    }
                };
                match policy.reload() {
                    Ok(compiled) => {
                        policy_tx.send_replace(compiled.clone());
                        dns.set_policy(&compiled);
                        let outcome = apply_policy(&maps, &config, &compiled, &dns);
                        shared_policy.set(crate::api::policy_view::snapshot(&compiled));
                        // `policy.reload` checked the response rules with the rest.
                        let responses = crate::respond::rules::from_policy(&compiled.source);
                        let refused = match (&outcome, &responses) {
                            (Err(error), _) => Some(format!("reload on {cause} could not be written to the datapath: {error:#}")),
                            (Ok(()), Err(error)) => Some(format!("reload on {cause}: response rules refused, the running ones stay: {error}")),
                            (Ok(()), Ok(_)) => None,
                        };
                        if let Ok(responses) = responses {
                            let _ = detect_tx.send(crate::respond::pipeline::Command::SetPolicy(responses)).await;
                        }
                        let (accepted, detail, severity) = match refused {
                            None => (true, format!("reloaded on {cause}: {} classes, {} rules", compiled.classes.len(), compiled.rules.len()), Severity::Info),
                            Some(detail) => {
                                tracing::error!(%detail, "policy reload only partly applied");
                                shared_policy.refused(detail.clone());
                                (false, detail, Severity::Medium)
                            }
                        };
                        bus.publish(GatewayEvent::new(severity, None, "policy-file", EventKind::PolicyChange { accepted, detail }));
                    }
                    Err(errors) => {
                        for error in &errors {
                            tracing::error!(%error, "policy refused");
                        }
                        let detail = format!(
                            "reload on {cause} refused ({} error(s)), the running policy stays: {}",
                            errors.len(),
                            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                        );
                        shared_policy.refused(detail.clone());
                        tracing::warn!(cause, errors = errors.len(), %detail, "policy reload refused; the running policy stays");
                        bus.publish(GatewayEvent::new(Severity::Medium, None, "policy-file", EventKind::PolicyChange { accepted: false, detail }));
                    }
                }
            }
        });
    }

    shutdown::signal().await;
    trigger.trigger();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
        if let Some(identity) = identity {
            identity.join().await;
        }
        integrations.join().await;
        if let Some(ota) = ota {
            let _ = ota.handle.await;
        }
    })
    .await;
    // The pipelines end when their senders are gone: drop ours, then wait for the last save.
    drop(detect_tx);
    drop(inventory_tx);
    let _ = tokio::task::spawn_blocking(move || {
        pipeline.join();
        let _ = inventory_thread.join();
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

#[cfg(test)]
mod tests {
    use gateway_ebpf::{device_state, lane};

    use super::*;

    #[test]
    fn the_restore_writes_the_store_and_records_back_what_the_table_held_stricter() {
        use crate::{
            datapath::{DeviceAccess, DeviceControl as _, MemoryDatapath},
            device::{Access, Mac},
        };
        let table = MemoryDatapath::default();
        let mut store = crate::inventory::Inventory::new(
            crate::store::open_in_memory().expect("store"),
            crate::inventory::Vendors::empty(),
            None,
        );
        let (lost, stricter) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let enrolled = DeviceAccess { access: Access::Enrolled, policy_id: 36, class_id: 20 };
        let quarantined = DeviceAccess { access: Access::Quarantined, ..enrolled };
        store.record_access(lost, quarantined, "api:otto", "incident").expect("record");
        store.record_access(stricter, enrolled, "identity", "enrolled").expect("record");
        // Killed after a block reached the table, before it reached the store.
        let blocked = DeviceAccess { access: Access::Blocked, ..enrolled };
        table.set_access(stricter, blocked).expect("table");

        let restored = restore_device_table(&table, &mut store, lane::FIRST_CLASS_POLICY).expect("restore");
        assert_eq!(restored.written, vec![(lost, quarantined)]);
        assert_eq!(table.access(lost).expect("table"), Some(quarantined));
        assert_eq!(table.access(stricter).expect("table"), Some(blocked), "never lowered");
        assert_eq!(store.enforced().expect("store"), vec![(lost, quarantined), (stricter, blocked)]);
        let audit = store.audit_log(Some(stricter), 1).expect("audit");
        assert_eq!(
            (audit[0].actor.as_str(), audit[0].detail.as_str()),
            (ACTOR_DATAPATH, "enrolled -> blocked: stricter entry found in the pinned device table at start-up")
        );
    }

    #[test]
    fn the_class_task_leaves_isolated_and_update_lane_devices_alone() {
        assert!(takes_class_policy(device_state::ENROLLED, lane::FIRST_CLASS_POLICY));
        assert!(takes_class_policy(device_state::ENROLLED, 0), "an enrolled device without a policy yet");
        assert!(!takes_class_policy(device_state::ENROLLED, lane::QUARANTINE), "held on the update lane");
        for state in [device_state::QUARANTINED, device_state::BLOCKED, device_state::ONBOARDING] {
            assert!(!takes_class_policy(state, lane::FIRST_CLASS_POLICY));
        }
    }
}
