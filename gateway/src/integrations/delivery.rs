//! One task per outbox consumer (each sink, and consumers other modules bring, such as the fleet
//! publisher): read the next events after its cursor, hand them to its `Destination`, move the
//! cursor past what it took. A failing destination is retried with exponential backoff and full
//! jitter, on the same event, so delivery stays in order; it never holds up other consumers or
//! producers. Reads the outbox; writes the consumer's cursor and dead letters.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use rand::Rng as _;
use tokio::sync::watch;

use super::{
    config::{Format, SinkConfig, SinkKind},
    itsm::Itsm,
    outbox::{OutboxError, Reader, Record, Seq},
    render::Origin,
    syslog,
    transport::{Failure, FileSink, Hec, Progress, StreamSyslog, TransportError, UdpSyslog, Webhook},
};
use crate::shutdown::Shutdown;

/// How long an idle sink sleeps before re-reading the outbox even without a write signal
/// (a safety net; writes wake it at once).
pub const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
/// Jitter"): the n-th retry waits a random time in [0, min(max, initial * 2^n)], which keeps
/// many gateways from hammering a recovering sink in lockstep.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, attempt: 0 }
    }

    /// The ceiling of the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        // At least a tenth of the ceiling, so a retry never spins.
        let low = ceiling / 10;
        low + ceiling.saturating_sub(low).mul_f64(rand::thread_rng().r#gen::<f64>())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Where one outbox consumer sends what it reads: a sink's `Transport`, or another module's
/// (the fleet publisher). Boxed futures keep it usable as `dyn`, so `integrations::spawn` hosts
/// consumers it knows nothing about.
pub trait Destination: Send + 'static {
    /// Sends events from the start of `batch`, in order; says how many were taken (for good:
    /// the cursor moves past them) and why it stopped short.
    fn deliver<'a>(&'a mut self, batch: &'a [Record]) -> BoxFuture<'a, Progress>;

    /// Ends the connection cleanly at shutdown.
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// How a consumer reads and retries.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Events read from the outbox per round.
    pub batch_size: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// One delivery round may take four times this before it counts as failed.
    pub timeout: Duration,
}

impl SinkConfig {
    pub fn pacing(&self) -> Pacing {
        Pacing {
            batch_size: self.batch_size,
            retry_initial: self.retry_initial(),
            retry_max: self.retry_max(),
            timeout: self.timeout(),
        }
    }
}

/// A consumer's live state, shared with `backlog()`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkStatus {
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_success_ms: Option<i64>,
    pub dead_letters: u64,
}

/// How a syslog sink renders events.
pub struct Rendering {
    origin: Origin,
    facility: u8,
    format: Format,
}

/// The transport of one sink.
pub enum Transport {
    Udp(UdpSyslog, Rendering),
    Stream(StreamSyslog, Rendering),
    Hec(Hec),
    Webhook(Webhook),
    Itsm(Box<Itsm>),
    File(Arc<FileSink>),
}

impl Transport {
    pub fn new(sink: &SinkConfig, origin: &Origin, store: PathBuf) -> Result<Self, TransportError> {
        let origin = origin.clone();
        let rendering = || Rendering { origin: origin.clone(), facility: sink.facility, format: sink.format() };
        Ok(match sink.kind {
            SinkKind::SyslogUdp => {
                Transport::Udp(UdpSyslog::new(sink.address.clone().unwrap_or_default()), rendering())
            }
            SinkKind::SyslogTcp | SinkKind::SyslogTls => Transport::Stream(StreamSyslog::new(sink)?, rendering()),
            SinkKind::Hec => Transport::Hec(Hec::new(sink, origin)?),
            SinkKind::Webhook => Transport::Webhook(Webhook::new(sink, origin)?),
            SinkKind::Itsm => Transport::Itsm(Box::new(Itsm::new(sink, store)?)),
            SinkKind::File => Transport::File(Arc::new(FileSink::new(sink, origin))),
        })
    }

    async fn send(&mut self, batch: &[Record]) -> Progress {
        // Every sink renders escaped text (`untrusted`): JSON bodies, tickets and files as much
        // as syslog, whatever the event's producer did.
        let escaped: Vec<Record> = batch.iter().map(|r| Record { seq: r.seq, event: r.event.escaped() }).collect();
        let batch = escaped.as_slice();
        let render = |how: &Rendering| -> Vec<String> {
            batch.iter().map(|r| syslog::render(&how.origin, how.facility, how.format, &r.event)).collect()
        };
        match self {
            Transport::Udp(t, how) => t.deliver(&render(how)).await,
            Transport::Stream(t, how) => t.deliver(&render(how)).await,
            Transport::Hec(t) => t.deliver(batch).await,
            Transport::Webhook(t) => t.deliver(batch).await,
            Transport::Itsm(t) => t.deliver(batch).await,
            Transport::File(t) => {
                let (file, batch) = (t.clone(), batch.to_vec());
                tokio::task::spawn_blocking(move || file.deliver_blocking(&batch))
                    .await
                    .unwrap_or_else(|e| Progress::transient(0, e.to_string()))
            }
        }
    }
}

impl Destination for Transport {
    fn deliver<'a>(&'a mut self, batch: &'a [Record]) -> BoxFuture<'a, Progress> {
        Box::pin(self.send(batch))
    }

    /// Ends a stream connection properly (TLS close_notify), so the receiver sees a clean end.
    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Transport::Stream(t, _) = self {
                t.close().await;
            }
        })
    }
}

/// Everything one consumer's task needs.
pub struct ConsumerTask {
    /// The cursor's name, and the consumer's in logs.
    pub name: String,
    pub pacing: Pacing,
    pub destination: Box<dyn Destination>,
    pub reader: Arc<Mutex<Reader>>,
    pub status: Arc<Mutex<SinkStatus>>,
    pub written: watch::Receiver<Seq>,
    pub shutdown: Shutdown,
}

/// Runs `f` on the sink's reader off the async runtime.
pub async fn with_reader<T: Send + 'static>(
    reader: &Arc<Mutex<Reader>>,
    f: impl FnOnce(&Reader) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || {
        // A panic while holding the lock would already have ended this sink's task.
        let reader = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&reader)
    })
    .await
    .map_err(|e| OutboxError::Write(format!("outbox reader task: {e}")))?
}

impl ConsumerTask {
    fn set_status(&self, f: impl FnOnce(&mut SinkStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut status);
    }

    /// Sleeps `delay` unless shutdown comes first; false on shutdown.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.shutdown.wait() => false,
        }
    }

    /// Delivers until shutdown, then closes the destination's connection cleanly.
    pub async fn run(mut self) {
        self.deliver_until_shutdown().await;
        if tokio::time::timeout(self.pacing.timeout, self.destination.close()).await.is_err() {
            tracing::debug!(sink = %self.name, "closing the sink connection timed out");
        }
    }

    async fn deliver_until_shutdown(&mut self) {
        let name = self.name.clone();
        let limit = self.pacing.batch_size;
        let mut backoff = Backoff::new(self.pacing.retry_initial, self.pacing.retry_max);
        tracing::info!(sink = %name, "sink started");
        let mut cursor = loop {
            match with_reader(&self.reader, |r| r.cursor()).await {
                Ok(cursor) => break cursor,
                Err(error) => {
                    tracing::error!(sink = %name, %error, "cannot read the sink cursor");
                    let delay = backoff.next_delay();
                    if !self.pause(delay).await {
                        return;
                    }
                }
            }
        };
        backoff.reset();
        while !self.shutdown.is_triggered() {
            // Mark the current write position seen before reading, so a write landing while
            // we read wakes us again instead of being missed.
            let written = *self.written.borrow_and_update();
            let batch = match with_reader(&self.reader, move |r| r.next_batch(cursor, limit)).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(sink = %name, %error, "outbox read failed");
                    let delay = backoff.next_delay();
                    if !self.pause(delay).await {
                        break;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if written > cursor {
                    // Nothing up to `written` passes this sink's filter: move past it, so the
                    // outbox can prune events only other sinks wanted.
                    if let Err(error) = with_reader(&self.reader, move |r| r.advance(written, 0)).await {
                        tracing::warn!(sink = %name, %error, "cannot move the cursor past filtered events");
                    } else {
                        cursor = written;
                    }
                }
                tokio::select! {
                    _ = self.written.changed() => {}
                    _ = tokio::time::sleep(IDLE_RECHECK) => {}
                    _ = self.shutdown.wait() => break,
                }
                continue;
            }
            let mut pending: &[Record] = &batch;
            while !pending.is_empty() {
                let progress = tokio::time::timeout(self.pacing.timeout * 4, self.destination.deliver(pending))
                    .await
                    .unwrap_or_else(|_| Progress::transient(0, "delivery timed out"));
                let taken = progress.delivered.min(pending.len());
                let mut last = (taken > 0).then(|| pending[taken - 1].seq);
                let mut dead = None;
                match &progress.failure {
                    Some(Failure::Rejected(message)) if taken < pending.len() => {
                        tracing::warn!(sink = %name, seq = pending[taken].seq.0, %message, "event refused by the sink; set aside");
                        last = Some(pending[taken].seq);
                        dead = Some((pending[taken].clone(), message.clone()));
                    }
                    _ => {}
                }
                let moved = taken + usize::from(dead.is_some());
                if let Some(seq) = last {
                    let dead_for_db = dead.clone();
                    let result = with_reader(&self.reader, move |r| {
                        if let Some((record, message)) = &dead_for_db {
                            r.dead_letter(record, message)?;
                        }
                        r.advance(seq, taken)
                    })
                    .await;
                    if let Err(error) = result {
                        // The events went out but the cursor did not move: they will be sent
                        // again after a restart (at-least-once), never lost.
                        tracing::error!(sink = %name, %error, "cannot record delivery");
                    }
                    cursor = seq;
                    if dead.is_some() {
                        self.set_status(|s| s.dead_letters += 1);
                    }
                }
                pending = &pending[moved..];
                match progress.failure {
                    Some(Failure::Transient(message)) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(sink = %name, %message, retry_in_ms = delay.as_millis() as u64, "sink delivery failed");
                        self.set_status(|s| {
                            s.consecutive_failures += 1;
                            s.last_error = Some(message);
                        });
                        if !self.pause(delay).await {
                            tracing::info!(sink = %name, "sink stopped with a backlog; it resumes at next start");
                            return;
                        }
                    }
                    _ => {
                        backoff.reset();
                        self.set_status(|s| {
                            s.consecutive_failures = 0;
                            s.last_success_ms = Some(super::outbox::now_ms());
                        });
                    }
                }
            }
        }
        tracing::info!(sink = %name, "sink stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max_and_jitters_below_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (0..6)
            .map(|_| {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay();
                assert!(delay <= ceiling && delay >= ceiling / 10, "{delay:?} vs {ceiling:?}");
                ceiling.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }
}
