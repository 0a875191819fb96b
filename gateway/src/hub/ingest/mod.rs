//! Ingest: the hub's durable pull consumer `hub` on the report stream, into PostgreSQL.
//!
//! Messages are taken in batches (what arrives within 20 ms of the first, up to `[ingest]
//! batch`); each batch is split by the site its subjects name over `[ingest] writers` writers
//! (`writers`); each writer decodes and checks its part (`report`), stores it in one transaction
//! with one statement per table (`upsert`, `events`, `inventory`) and acknowledges it only after
//! the commit, decoding its next part and encoding its statements (`upsert::prepare`) while one
//! is stored. A hub killed mid-batch therefore gets the batch again, and the upserts make the
//! second time change nothing. A message that is not a report, or whose body claims another origin than
//! its subject, is refused: counted, logged (escaped), terminated, never stored.
//!
//! `IngestStats` counts what happened, and where ingest's time went (`Stage`), for the hub's
//! metrics.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, task::JoinHandle};

use super::Hub;
use crate::{
    fleet::{subjects, wire::Report},
    shutdown::Shutdown,
    untrusted,
};

mod events;
mod inventory;
mod report;
mod upsert;
mod writers;

pub use report::{Refusal, decode};
use upsert::{Prepared, prepare, write};
pub use upsert::{Stored, store};
use writers::Writers;
pub use writers::writer_of;

/// Durable name of the hub's consumer on the report stream.
pub const CONSUMER: &str = "hub";
/// Heartbeat of the pull requests, so a lost broker connection is noticed.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Pause before taking messages again after the broker or the database failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Reports a gateway sent that the store refused are redelivered after this (a database that
/// is down), or terminated (a report the database cannot take).
const NAK_DELAY: Duration = Duration::from_secs(2);
/// How long a batch waits for more reports after its first: under load batches fill (one
/// transaction for many reports); when quiet a report waits at most this long.
const LINGER: Duration = Duration::from_millis(20);
/// Times a transaction that met a deadlock or a serialization failure (two writers updating one
/// fleet device seen at two sites) is run again before its batch is handed back.
const CONFLICT_RETRIES: usize = 3;

/// The `[ingest]` section of the hub's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Reports taken from the broker at once, at most; split by site over the writers, each
    /// part stored in one transaction.
    pub batch: usize,
    /// Transactions in flight at once: each writer stores the reports of its own sites.
    pub writers: usize,
    /// One certificate subject active at two sites within this many seconds is a clone.
    pub clone_window_secs: u64,
    /// Seconds the broker waits for a report's acknowledgement before it delivers it again (to
    /// a hub restarted after a crash, say): a batch's transaction must commit well within it.
    pub ack_wait_secs: u64,
}

/// Writers by default (bench/fleet/RESULTS.md, 2026-12-07 session 11).
pub const DEFAULT_WRITERS: usize = 2;
/// Most writers: each holds a PostgreSQL connection of its own while it stores.
pub const MAX_WRITERS: usize = 32;

impl Default for Settings {
    fn default() -> Self {
        Self { batch: 1_000, writers: DEFAULT_WRITERS, clone_window_secs: 300, ack_wait_secs: 60 }
    }
}

impl Settings {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.batch) {
            problems.push("ingest.batch: must be 1 to 10000".to_owned());
        }
        if !(1..=MAX_WRITERS).contains(&self.writers) {
            problems.push(format!("ingest.writers: must be 1 to {MAX_WRITERS}"));
        }
        for (key, value) in [("clone_window_secs", self.clone_window_secs), ("ack_wait_secs", self.ack_wait_secs)] {
            if value == 0 {
                problems.push(format!("ingest.{key}: must be at least 1"));
            }
        }
        problems
    }

    pub fn clone_window(&self) -> Duration {
        Duration::from_secs(self.clone_window_secs)
    }
}

/// What ingest did since the hub started; the API serves it as metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Reports stored (a redelivered one counts again: it was stored again, changing nothing).
    pub reports: AtomicU64,
    /// Messages refused: not a report, another origin than their subject, or a report the
    /// database cannot take.
    pub refused: AtomicU64,
    /// Events already stored before (redeliveries and republished reports).
    pub duplicate_events: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Transactions that failed (the batch is redelivered).
    pub failed_batches: AtomicU64,
    /// Certificate clone alerts raised.
    pub clone_alerts: AtomicU64,
    /// Messages in the stream the consumer has not been given yet, as of the last batch.
    pub pending: AtomicU64,
    /// Milliseconds from the broker storing the last report of the last batch to its commit.
    pub lag_ms: AtomicU64,
    /// Microseconds spent in each `Stage`, by its index.
    stage_us: [AtomicU64; Stage::ALL.len()],
}

/// Where ingest's time goes. The consumer's task takes the next batch and hands its parts to
/// the writers while they decode and store theirs: when `Store` grows with the wall clock, the
/// database is the bottleneck and `Held` (a writer's next part decoded, waiting for its turn)
/// and `Hand` grow too; when `Pull` does, the broker had nothing more to give. The writers'
/// stages (`Decode` to `Acknowledge`) are summed over the writers: with several, they can add up
/// to more than the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a batch's messages from the broker (idle when the stream is drained).
    Pull,
    /// Waiting for a writer to take its part of the batch (it has one queued already).
    Hand,
    /// Decoding and checking reports, and encoding the statements that store them.
    Decode,
    /// A decoded part waiting for its writer's one before to be stored and acknowledged.
    Held,
    /// Transactions, from their start to the commit's return.
    Store,
    /// Sending acknowledgements.
    Acknowledge,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::Pull, Stage::Hand, Stage::Decode, Stage::Held, Stage::Store, Stage::Acknowledge];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Pull => "pull",
            Stage::Hand => "hand",
            Stage::Decode => "decode",
            Stage::Held => "held",
            Stage::Store => "store",
            Stage::Acknowledge => "acknowledge",
        }
    }
}

/// `IngestStats` read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestSnapshot {
    pub reports: u64,
    pub refused: u64,
    pub duplicate_events: u64,
    pub batches: u64,
    pub failed_batches: u64,
    pub clone_alerts: u64,
    pub pending: u64,
    pub lag_ms: u64,
    /// Microseconds spent in each of `Stage::ALL`.
    pub stage_us: [u64; Stage::ALL.len()],
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        IngestSnapshot {
            reports: read(&self.reports),
            refused: read(&self.refused),
            duplicate_events: read(&self.duplicate_events),
            batches: read(&self.batches),
            failed_batches: read(&self.failed_batches),
            clone_alerts: read(&self.clone_alerts),
            pending: read(&self.pending),
            lag_ms: read(&self.lag_ms),
            stage_us: self.stage_us.each_ref().map(read),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds the time since `start` to `stage`.
    fn spent(&self, stage: Stage, start: Instant) {
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Self::add(&self.stage_us[stage as usize], micros);
    }
}

/// The durable consumer `hub` on the report stream, created if missing and otherwise brought to
/// `settings` (its acknowledgement wait and window): every report, each acknowledged
/// explicitly. One consumer without a filter: nats-server 2.9 has no multi-filter.
///
/// Not `AckPolicy::All` (one acknowledgement per batch): it acknowledges every stream sequence
/// up to the one named, and a redelivered report (a batch the database refused, a hub that
/// died) comes back with its old, lower sequence in a later batch, maybe the one decoded and
/// held while an earlier batch commits: that commit's acknowledgement would take it before it
/// is stored. Nor can a durable consumer's policy be changed in place.
pub async fn consumer(js: &jetstream::Context, settings: &Settings) -> Result<PullConsumer, async_nats::Error> {
    let stream = js.get_stream(subjects::REPORT_STREAM).await?;
    let config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some("iotgw hub: reports into PostgreSQL".to_owned()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: Duration::from_secs(settings.ack_wait_secs),
        // Room for what each writer stores, decodes and has queued, and the batch in hand.
        max_ack_pending: i64::try_from(settings.batch * (3 * settings.writers + 1)).unwrap_or(i64::MAX),
        ..Default::default()
    };
    // Create-or-update: a durable consumer keeps its position through the update.
    Ok(stream.create_consumer(config).await?)
}

/// Takes batches from `consumer` and stores them until shutdown. Broker and database failures
/// are logged and retried; this returns only at shutdown, after the batches in hand are stored.
///
/// Each batch is split by the site of each message's subject over the writers (`writer`), which
/// decode and store their parts while the next batch is taken.
pub async fn run(hub: Hub, consumer: PullConsumer, stats: Arc<IngestStats>, mut shutdown: Shutdown) {
    let settings = hub.config.ingest.clone();
    tracing::info!(
        consumer = CONSUMER,
        stream = subjects::REPORT_STREAM,
        batch = settings.batch,
        writers = settings.writers,
        "ingesting reports"
    );
    let writers = Writers::start(settings.writers, |_, parts| writer(hub.clone(), stats.clone(), parts));
    while !shutdown.is_triggered() {
        let messages = consumer.stream().max_messages_per_batch(settings.batch).heartbeat(HEARTBEAT).messages().await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot pull reports; retrying");
                pause(&mut shutdown).await;
                continue;
            }
        };
        loop {
            let pulling = Instant::now();
            let batch = tokio::select! {
                () = shutdown.wait() => break,
                batch = next_batch(&mut messages, settings.batch) => batch,
            };
            stats.spent(Stage::Pull, pulling);
            match batch {
                Ok(batch) => {
                    let handing = Instant::now();
                    for (writer, part) in split(batch, writers.count()) {
                        if !writers.send(writer, part).await {
                            // Its sites would never be stored again: stop, so the hub stops
                            // (and is restarted) rather than run without them. What is not
                            // acknowledged is redelivered.
                            tracing::error!(writer, "an ingest writer has stopped; ingest stops");
                            writers.finish().await;
                            return;
                        }
                    }
                    stats.spent(Stage::Hand, handing);
                }
                Err(error) => {
                    // A missed heartbeat or a lost connection: pull again.
                    tracing::warn!(%error, "pulling reports failed; pulling again");
                    pause(&mut shutdown).await;
                    break;
                }
            }
        }
    }
    writers.finish().await;
    tracing::info!("ingest stopped");
}

/// `messages` by writer, each part in the order of the batch: a message goes to the writer of
/// the site its subject names (`writer_of`), one whose subject names none to the first (decoding
/// refuses it). Only the parts with messages.
fn split(messages: Vec<jetstream::Message>, writers: usize) -> Vec<(usize, Vec<jetstream::Message>)> {
    if writers <= 1 {
        return vec![(0, messages)];
    }
    let mut parts: Vec<Vec<jetstream::Message>> = (0..writers).map(|_| Vec::new()).collect();
    for message in messages {
        let writer = subjects::parse_report(&message.subject).map_or(0, |(site, _, _)| writer_of(site, writers));
        parts[writer].push(message);
    }
    parts.into_iter().enumerate().filter(|(_, part)| !part.is_empty()).collect()
}

/// One writer: decodes each part it is given, and stores it while it decodes the next; one
/// transaction at a time, in the order of its parts.
async fn writer(hub: Hub, stats: Arc<IngestStats>, mut parts: mpsc::Receiver<Vec<jetstream::Message>>) {
    let window = hub.config.ingest.clone_window();
    let mut storing: Option<JoinHandle<()>> = None;
    while let Some(messages) = parts.recv().await {
        let decoding = Instant::now();
        let batch = Batch::decode(messages);
        stats.spent(Stage::Decode, decoding);
        let held = Instant::now();
        finish(storing.take()).await;
        stats.spent(Stage::Held, held);
        storing = Some(tokio::spawn(ingest(hub.clone(), window, stats.clone(), batch)));
    }
    finish(storing).await;
}

/// Waits until the batch being stored is stored and acknowledged.
async fn finish(storing: Option<JoinHandle<()>>) {
    let Some(task) = storing else { return };
    if let Err(error) = task.await {
        // Unacknowledged, its reports are redelivered after `ack_wait_secs`.
        tracing::error!(%error, "storing a batch failed unexpectedly; it will be redelivered");
    }
}

async fn pause(shutdown: &mut Shutdown) {
    tokio::select! {
        () = shutdown.wait() => {}
        () = tokio::time::sleep(RETRY_PAUSE) => {}
    }
}

/// Waits for one message, then takes what arrives within `LINGER` of it, up to `max`.
async fn next_batch(messages: &mut pull::Stream, max: usize) -> Result<Vec<jetstream::Message>, String> {
    let first = match messages.next().await {
        Some(Ok(message)) => message,
        Some(Err(error)) => return Err(error.to_string()),
        None => return Err("the pull stream ended".to_owned()),
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + LINGER;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(message))) => batch.push(message),
            // An error is met again on the next wait; what is in hand is stored first.
            _ => break,
        }
    }
    Ok(batch)
}

/// One writer's part of a batch, decoded: `accepted[i]` brought `reports[i]`, which `prepared`
/// stores.
struct Batch {
    accepted: Vec<jetstream::Message>,
    reports: Vec<Report>,
    refused: Vec<(jetstream::Message, Refusal)>,
    prepared: Result<Prepared, sqlx::Error>,
}

impl Batch {
    fn decode(messages: Vec<jetstream::Message>) -> Self {
        let (mut accepted, mut reports, mut refused) =
            (Vec::with_capacity(messages.len()), Vec::with_capacity(messages.len()), Vec::new());
        for message in messages {
            match decode(&message.subject, &message.payload) {
                Ok(report) => {
                    accepted.push(message);
                    reports.push(report);
                }
                Err(refusal) => refused.push((message, refusal)),
            }
        }
        let prepared = prepare(&reports);
        Batch { accepted, reports, refused, prepared }
    }
}

/// Stores one batch and acknowledges it: every accepted report after the commit, refused ones
/// terminated. When the transaction fails on the data, the reports are stored one by one so
/// the one the database cannot take is refused alone; when it fails otherwise (the database is
/// down), the batch is handed back for redelivery.
async fn ingest(hub: Hub, window: Duration, stats: Arc<IngestStats>, batch: Batch) {
    let Batch { accepted, reports, mut refused, prepared } = batch;
    if !reports.is_empty() {
        store_accepted(&hub, window, &stats, accepted, reports, prepared, &mut refused).await;
    }
    for (message, refusal) in &refused {
        tracing::warn!(
            subject = %untrusted::escape(&message.subject),
            reason = %untrusted::escape(&refusal.to_string()),
            "report refused"
        );
    }
    IngestStats::add(&stats.refused, refused.len() as u64);
    let refused: Vec<_> = refused.into_iter().map(|(message, _)| message).collect();
    acknowledge(&stats, &refused, AckKind::Term).await;
}

/// Stores the accepted reports and acknowledges them; those the database cannot take join
/// `refused`.
async fn store_accepted(
    hub: &Hub,
    window: Duration,
    stats: &IngestStats,
    accepted: Vec<jetstream::Message>,
    reports: Vec<Report>,
    prepared: Result<Prepared, sqlx::Error>,
    refused: &mut Vec<(jetstream::Message, Refusal)>,
) {
    let storing = Instant::now();
    let mut written = match prepared {
        Ok(prepared) => write(&hub.pool, &reports, prepared, window).await,
        Err(error) => Err(error),
    };
    for _ in 0..CONFLICT_RETRIES {
        match &written {
            Err(error) if upsert::is_conflict(error) => {
                tracing::debug!(%error, "a batch met another writer's transaction; storing it again");
                written = store(&hub.pool, &reports, window).await;
            }
            _ => break,
        }
    }
    stats.spent(Stage::Store, storing);
    match written {
        Ok(stored) => {
            count_stored(stats, &stored, reports.len());
            observe_lag(stats, accepted.last());
            acknowledge(stats, &accepted, AckKind::Ack).await;
        }
        Err(error) if upsert::is_data_error(&error) && reports.len() > 1 => {
            tracing::warn!(error = %untrusted::escape(&error.to_string()), "a batch failed on its data; storing its reports one by one");
            for (message, report) in accepted.into_iter().zip(reports) {
                match timed_store(hub, stats, std::slice::from_ref(&report), window).await {
                    Ok(stored) => {
                        count_stored(stats, &stored, 1);
                        acknowledge(stats, std::slice::from_ref(&message), AckKind::Ack).await;
                    }
                    Err(error) if upsert::is_data_error(&error) => {
                        refused.push((message, Refusal::Unstorable(error.to_string())));
                    }
                    Err(error) => give_back(stats, &error, std::slice::from_ref(&message)).await,
                }
            }
        }
        Err(error) if upsert::is_data_error(&error) => {
            refused.extend(accepted.into_iter().map(|message| (message, Refusal::Unstorable(error.to_string()))));
        }
        Err(error) => give_back(stats, &error, &accepted).await,
    }
}

async fn timed_store(
    hub: &Hub,
    stats: &IngestStats,
    reports: &[Report],
    window: Duration,
) -> Result<Stored, sqlx::Error> {
    let storing = Instant::now();
    let stored = store(&hub.pool, reports, window).await;
    stats.spent(Stage::Store, storing);
    stored
}

fn count_stored(stats: &IngestStats, stored: &Stored, reports: usize) {
    IngestStats::add(&stats.reports, reports as u64);
    IngestStats::add(&stats.duplicate_events, stored.duplicate_events);
    IngestStats::add(&stats.clone_alerts, stored.clone_alerts);
    IngestStats::add(&stats.batches, 1);
}

/// Pending messages and the age of the newest stored one, from its delivery metadata.
fn observe_lag(stats: &IngestStats, last: Option<&jetstream::Message>) {
    let Some(info) = last.and_then(|message| message.info().ok()) else { return };
    stats.pending.store(info.pending, Ordering::Relaxed);
    let age = time::OffsetDateTime::now_utc() - info.published;
    stats.lag_ms.store(u64::try_from(age.whole_milliseconds()).unwrap_or(0), Ordering::Relaxed);
}

/// The database failed for a reason other than the data: redeliver later.
async fn give_back(stats: &IngestStats, error: &sqlx::Error, messages: &[jetstream::Message]) {
    tracing::warn!(%error, "storing reports failed; they will be redelivered");
    IngestStats::add(&stats.failed_batches, 1);
    acknowledge(stats, messages, AckKind::Nak(Some(NAK_DELAY))).await;
}

async fn acknowledge(stats: &IngestStats, messages: &[jetstream::Message], kind: AckKind) {
    let acknowledging = Instant::now();
    for message in messages {
        if let Err(error) = message.ack_with(kind).await {
            // Unacknowledged, it is redelivered after `ack_wait_secs`; storing it again changes
            // nothing.
            tracing::debug!(%error, "acknowledgement not sent");
        }
    }
    stats.spent(Stage::Acknowledge, acknowledging);
}
