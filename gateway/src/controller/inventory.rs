//! The inventory step, on a thread of its own so SQLite never runs on the async workers: its
//! own store connection, fed by the fan-out, the counter step and the firmware reports. What
//! it learns goes on the bus (new devices, addresses, types); device types also go to the
//! pipeline, whose class baselines and per-class rules key on them.
use std::{
    collections::VecDeque,
    sync::mpsc::{Receiver, SyncSender},
    thread::JoinHandle,
};

use anyhow::Context as _;

use crate::{
    config::Config,
    datapath::{events::DatapathEvent, traffic::TrafficSample},
    device::Mac,
    event::{EventBus, EventKind, GatewayEvent},
    inventory::{Inventory, InventoryChange, Vendors},
    pipeline,
    shutdown::Shutdown,
};

/// Datapath events the inventory takes in one transaction at most.
pub const INVENTORY_BATCH_MAX: usize = 1_024;

/// What the inventory thread consumes.
pub(super) enum InventoryInput {
    Event(DatapathEvent),
    Traffic(TrafficSample),
    /// A device reported a firmware install through the OTA service.
    Firmware {
        mac: Mac,
        version: String,
    },
}

/// Starts the inventory thread; it ends when every sender of `input` is gone.
pub(super) fn spawn(
    config: &Config,
    input: Receiver<InventoryInput>,
    bus: EventBus,
    pipeline: tokio::sync::mpsc::Sender<pipeline::Command>,
) -> anyhow::Result<JoinHandle<()>> {
    let conn = crate::store::open(&config.store.path, &[crate::inventory::MIGRATIONS])
        .context("opening the store for the inventory")?;
    let classifier = match &config.inventory.model {
        Some(path) => crate::fingerprint::Classifier::load(path),
        None => crate::fingerprint::Classifier::shipped(),
    }
    .inspect_err(|error| tracing::warn!(%error, "device-type model unavailable; types stay unknown"))
    .ok();
    let vendors = Vendors::load(&config.inventory.ieee_data_dir).unwrap_or_else(|error| {
        tracing::warn!(%error, "vendor names unavailable (install Debian's ieee-data)");
        Vendors::empty()
    });
    let mut inventory = Inventory::new(conn, vendors, classifier).with_config(&config.inventory);
    std::thread::Builder::new()
        .name("iotgw-inventory".into())
        .spawn(move || {
            let mut queued = VecDeque::new();
            while let Some(item) = queued.pop_front().or_else(|| input.recv().ok()) {
                let result = match item {
                    InventoryInput::Event(event) => handle_events(&mut inventory, event, &input, &mut queued),
                    InventoryInput::Traffic(sample) => inventory
                        .record_traffic(sample.mac, sample.interval_start, &sample.counters)
                        .map(|()| Vec::new()),
                    InventoryInput::Firmware { mac, version } => {
                        inventory.set_firmware(mac, &version, "ota").map(|()| Vec::new())
                    }
                };
                match result {
                    Ok(changes) => publish(changes, &bus, &pipeline),
                    Err(error) => tracing::warn!(%error, "inventory update failed"),
                }
            }
            tracing::info!("inventory stopped");
        })
        .context("starting the inventory thread")
}

/// Takes `first` and the datapath events already queued behind it in one transaction: with
/// `[store] synchronous = "full"` each commit is an fsync (2.5 ms on the benchmark VM), so one
/// per event would cap the inventory near 400 events/s. Another input met on the way is set
/// aside in `queued`.
fn handle_events(
    inventory: &mut Inventory,
    first: DatapathEvent,
    input: &Receiver<InventoryInput>,
    queued: &mut VecDeque<InventoryInput>,
) -> Result<Vec<InventoryChange>, crate::inventory::InventoryError> {
    let mut events = vec![first];
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
        // One refused event (hostile text from a device) must not take the others with it:
        // the batch again, one transaction per event.
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

/// Changes go on the bus; a new generic type also goes to the pipeline. Baselines pool
/// devices by generic type (chosen on the detection bench's development part: by product,
/// sibling products' clouds alerted), and "unknown" is no type to pool on.
fn publish(changes: Vec<InventoryChange>, bus: &EventBus, pipeline: &tokio::sync::mpsc::Sender<pipeline::Command>) {
    for change in changes {
        if let InventoryChange::TypeChanged { mac, generic_type, .. } = &change
            && generic_type != crate::fingerprint::taxonomy::UNKNOWN
        {
            let class = pipeline::Input::Class { mac: *mac, class: generic_type.clone() };
            let _ = pipeline.blocking_send(pipeline::Command::Input(class));
        }
        if let Some(event) = change.to_gateway_event() {
            bus.publish(event);
        }
    }
}

/// Firmware versions devices report to the OTA service (audit events on the bus) go to the
/// inventory, until shutdown.
pub(super) async fn forward_firmware(inventory: SyncSender<InventoryInput>, bus: EventBus, mut shutdown: Shutdown) {
    let mut events = bus.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            event = events.recv() => match event {
                Ok(GatewayEvent { device: Some(mac), kind: EventKind::Audit { action, detail }, .. })
                    if action == crate::ota::server::FIRMWARE_INSTALLED_ACTION =>
                {
                    let _ = inventory.try_send(InventoryInput::Firmware { mac, version: detail });
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}
