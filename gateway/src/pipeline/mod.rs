//! The pipeline baseline → detect → respond, on one
//! dedicated thread (its SQLite writes stay off the ring-buffer drain and off the async
//! runtime). Reads `Command`s from a bounded channel (datapath events, traffic counters,
//! classes, releases, rule reloads, learnt exceptions, ticks); writes the device table and
//! the devices' budgets (`budgets`) through `DeviceControl`, publishes `Alert`, `Action` and `Audit` events on the `EventBus`, and
//! checkpoints baselines into the store.
use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{mpsc, oneshot};

use crate::{
    baseline::{self, Baselines},
    datapath::{Control, events::DatapathEvent, traffic::TrafficSample},
    detect::{self, Alert, Detector},
    device::Mac,
    event::{EventBus, EventKind, GatewayEvent},
    inventory::Ledger,
    respond::{RespondError, Responder, ResponsePolicy},
};

mod budgets;
mod input;
pub mod latency;
mod ledger_writer;
#[cfg(test)]
mod tests;

pub use input::Input;
use ledger_writer::LedgerWriter;

/// Commands queued between the producers (ring-buffer drain, counter poller, inventory, API)
/// and the loop: about a second of a busy LAN's new flows.
pub const DEFAULT_INPUT_CAPACITY: usize = 16_384;
/// The tables the loop uses: baselines, and the inventory's device records and audit trail.
pub const SCHEMA: crate::store::Schema<'static> = &[crate::baseline::MIGRATIONS, crate::inventory::MIGRATIONS];
/// How often learnt baselines are written to the store.
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_secs(30);

/// What the loop consumes.
#[derive(Debug)]
pub enum Command {
    Input(Input),
    /// A human lifts a response (API `release`).
    Release {
        mac: Mac,
        actor: String,
        reply: oneshot::Sender<Result<(), RespondError>>,
    },
    /// The policy files changed.
    SetPolicy(ResponsePolicy),
    /// An analyst learnt an alert's observations as normal, or took that back (API), already
    /// committed to the store: the detectors apply it from the next input on.
    Learned(baseline::learned::Edit),
    /// Wall-clock tick, so incidents resolve when inputs stop.
    Tick(SystemTime),
    /// The threat-intelligence lists, loaded or reloaded (`controller::threat_intel`).
    SetThreatIntel(std::sync::Arc<crate::detect::intel::ThreatIntel>),
    /// An alert a step beside the pipeline raised (`crate::source_guard`), published and
    /// answered by the response rules like the detectors' own.
    Alert(Alert),
}

impl From<DatapathEvent> for Command {
    fn from(event: DatapathEvent) -> Self {
        Command::Input(Input::Datapath(event))
    }
}

impl From<TrafficSample> for Command {
    fn from(sample: TrafficSample) -> Self {
        Command::Input(Input::Traffic(sample))
    }
}

/// The loop's settings (`[baseline]` and `[detect]` of the gateway configuration).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub baseline: baseline::Config,
    pub detect: detect::Config,
    /// The store file; `None` keeps baselines in memory only (offline analysis, tests).
    pub store: Option<PathBuf>,
}

/// Why the loop could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Baselines(#[from] baseline::store::StoreError),
    #[error("cannot start the detection or ledger thread: {0}")]
    Thread(std::io::Error),
}

/// The sync core: one command in, the events it caused out (also published on the bus).
pub struct Core {
    detector: Detector,
    responder: Responder,
    bus: EventBus,
    budgets: budgets::BudgetSync,
    store: Option<rusqlite::Connection>,
    /// Where access changes and audit records are kept besides the bus (written on the
    /// ledger writer's thread).
    ledger: Option<LedgerWriter>,
    last_checkpoint: Instant,
}

impl Core {
    /// Builds the steps, restoring stored baselines when a store is given; with a store,
    /// access changes and audit records also go to its ledger.
    pub fn new(
        settings: Settings,
        policy: ResponsePolicy,
        control: Control,
        bus: EventBus,
    ) -> Result<Self, PipelineError> {
        let mut baselines = Baselines::new(settings.baseline);
        let (store, ledger) = match &settings.store {
            Some(path) => {
                let conn = crate::store::open(path, SCHEMA)?;
                let (devices, classes) = baseline::store::load(&conn)?;
                tracing::info!(devices = devices.len(), classes = classes.len(), "baselines restored");
                baselines.restore(devices, classes);
                let learned = baseline::learned::load(&conn)?;
                tracing::info!(exceptions = learned.len(), "learnt exceptions restored");
                baselines.apply_learned(baseline::learned::Edit::Learn(learned));
                // Its own connection: ledger writes commit on their own, baselines at checkpoints.
                let ledger = Ledger::new(crate::store::open(path, SCHEMA)?);
                (Some(conn), Some(LedgerWriter::spawn(ledger).map_err(PipelineError::Thread)?))
            }
            None => (None, None),
        };
        let budgets = budgets::BudgetSync::new(control.clone());
        let mut responder = Responder::new(policy, control);
        for (mac, _) in baselines.devices() {
            if let Some(class) = baselines.class_of(mac) {
                responder.set_class(mac, class);
            }
        }
        Ok(Self {
            detector: Detector::new(settings.detect, baselines),
            responder,
            bus,
            budgets,
            store,
            ledger,
            last_checkpoint: Instant::now(),
        })
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// Runs one command through baseline → detect → respond.
    pub fn handle(&mut self, command: Command) -> Vec<GatewayEvent> {
        let events = match command {
            Command::Input(input) => {
                if let Input::Class { mac, class } = &input {
                    self.responder.set_class(*mac, class);
                }
                let alerts = self.detector.handle(&input);
                let mac = input.mac();
                self.budgets.sync(mac, self.detector.budget(mac));
                self.respond(alerts)
            }
            Command::Tick(now) => {
                let alerts = self.detector.tick(now);
                self.respond(alerts)
            }
            Command::Release { mac, actor, reply } => {
                let (result, events) = match self.responder.release(mac, &actor) {
                    Ok(events) => (Ok(()), events),
                    Err(error) => (Err(error), Vec::new()),
                };
                // The API may have given up waiting; the release stands either way.
                let _ = reply.send(result);
                events
            }
            Command::SetPolicy(policy) => {
                self.responder.set_policy(policy);
                Vec::new()
            }
            Command::Learned(edit) => {
                self.detector.baselines_mut().apply_learned(edit);
                Vec::new()
            }
            Command::SetThreatIntel(intel) => {
                self.detector.set_threat_intel(intel);
                Vec::new()
            }
            Command::Alert(alert) => self.respond(vec![alert]),
        };
        let changes = self.responder.take_changes();
        if let Some(ledger) = &self.ledger {
            for change in changes {
                ledger.record_access(change.mac, change.enforced, &change.actor, &change.reason);
            }
        }
        for event in &events {
            if let Some(ledger) = &self.ledger
                && let EventKind::Audit { action, detail } = &event.kind
            {
                ledger.audit(&event.actor, event.device, action, detail);
            }
            self.bus.publish(event.clone());
        }
        if self.last_checkpoint.elapsed() >= DEFAULT_CHECKPOINT {
            self.checkpoint();
        }
        events
    }

    fn respond(&mut self, alerts: Vec<Alert>) -> Vec<GatewayEvent> {
        let mut events = Vec::new();
        for alert in alerts {
            events.push(alert.to_event());
            events.extend(self.responder.handle(&alert));
        }
        events
    }

    /// Writes changed baselines to the store (no-op without one). A failed write is logged
    /// and retried at the next checkpoint: the records stay dirty.
    pub fn checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        let Some(conn) = &mut self.store else { return };
        let (devices, classes) = self.detector.baselines_mut().take_dirty();
        if devices.is_empty() && classes.is_empty() {
            return;
        }
        match baseline::store::save(conn, &devices, &classes) {
            Ok(()) => tracing::debug!(devices = devices.len(), classes = classes.len(), "baselines saved"),
            Err(error) => {
                tracing::error!(%error, "cannot save baselines; retrying at the next checkpoint");
                self.detector.baselines_mut().mark_dirty(&devices, &classes);
            }
        }
    }
}

/// Handle on the running loop.
pub struct Pipeline {
    sender: mpsc::Sender<Command>,
    thread: std::thread::JoinHandle<()>,
}

/// Starts the loop on its own thread. It runs until every `Sender` (the pipeline's and its
/// clones) is dropped, then saves baselines and ends: drop the senders, then `join`.
pub fn spawn(
    settings: Settings,
    policy: ResponsePolicy,
    control: Control,
    bus: EventBus,
) -> Result<Pipeline, PipelineError> {
    let mut core = Core::new(settings, policy, control, bus)?;
    let (sender, mut receiver) = mpsc::channel::<Command>(DEFAULT_INPUT_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("iotgw-detect".to_owned())
        .spawn(move || {
            while let Some(command) = receiver.blocking_recv() {
                core.handle(command);
            }
            core.checkpoint();
            tracing::info!("detection loop stopped");
        })
        .map_err(PipelineError::Thread)?;
    Ok(Pipeline { sender, thread })
}

impl Pipeline {
    /// Where producers send commands (clone it per producer).
    pub fn sender(&self) -> mpsc::Sender<Command> {
        self.sender.clone()
    }

    /// Lifts an automated response (for the API's `release`).
    pub async fn release(&self, mac: Mac, actor: &str) -> Result<(), ReleaseError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Command::Release { mac, actor: actor.to_owned(), reply })
            .await
            .map_err(|_| ReleaseError::Stopped)?;
        answer.await.map_err(|_| ReleaseError::Stopped)?.map_err(ReleaseError::Respond)
    }

    /// Drops this handle's sender and waits for the loop to drain and save.
    pub fn join(self) {
        drop(self.sender);
        if self.thread.join().is_err() {
            tracing::error!("the detection thread panicked");
        }
    }
}

/// Why a release did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    #[error("the detection loop is not running")]
    Stopped,
    #[error(transparent)]
    Respond(RespondError),
}
