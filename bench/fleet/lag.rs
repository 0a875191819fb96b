//! Publish-to-visible lag: events offered at a steady rate (default 10,000 a second) for a
//! bounded time (default 20 s), spread evenly over every simulated gateway, while the hub (its
//! own process) ingests. Each event is published when its turn comes (at once when the
//! publisher is late), with its send time as the wire report's `sent_ms`. When the p99 is
//! over the goal (2 s) the rate is halved and offered again, so the rate at which the lag
//! stays bounded is known too.
//!
//! Visibility is read from PostgreSQL, the table the hub's API serves events from, polled every
//! POLL: each gateway's highest event sequence number above what was seen (its primary key's
//! index). One connection publishes each gateway's events in order and ingest commits the
//! stream in order, so what is visible of a gateway is a prefix of what it sent. An event's lag
//! runs from its `sent_ms` to the return of the first poll that saw it: an upper bound, by up
//! to a poll interval and the query's time.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt as _, StreamExt as _, stream::FuturesUnordered};
use iotgw::hub::Hub;

use crate::{Spread, cpu, hub_process::HubProcess, sim::Shape};

const POLL: Duration = Duration::from_millis(50);
/// Unacknowledged publishes at most (a broker slower than the rate makes the publisher late).
const MAX_UNACKED: usize = 4_096;
/// How long after the offered time every event must be visible.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);
/// The goal: p99 within this at 10,000 events/s.
const GOAL_P99: Duration = Duration::from_secs(2);
/// The lowest rate `run` halves down to.
const MIN_RATE: usize = 500;

/// One rate offered, and what came of it.
struct Step {
    events: usize,
    /// Events sent per second, first send to last.
    achieved: f64,
    lag: Spread,
    /// From the first send until every event was visible.
    all_visible: Duration,
}

/// Offers `rate` events a second for `secs` seconds while the hub ingests, halving the rate
/// until the lag's p99 is within the goal (or the rate would fall below MIN_RATE); each
/// gateway's events from its `first`th on.
pub async fn run(
    hub: &Hub,
    process: &mut HubProcess,
    meter: &cpu::Meter,
    shape: Shape,
    first: usize,
    rate: usize,
    secs: u64,
) {
    let mut first = first;
    let mut rate = rate;
    loop {
        let events_before = crate::counts(&hub.pool).await[4];
        let cpu_before = meter.read(&hub.pool).await;
        let step = step(&hub.jetstream, &hub.pool, process, shape, first, rate, secs).await;
        let cpu = meter.read(&hub.pool).await.since(cpu_before);
        let events_after = crate::counts(&hub.pool).await[4];
        assert_eq!(events_after - events_before, step.events as i64, "lag: events stored differ from those sent");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "lag: offered {rate} events/s for {secs} s over {} gateways: sent {} at {:.0}/s; publish to visible in \
             PostgreSQL p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; all visible {:.1} s after the first send",
            shape.gateways,
            step.events,
            step.achieved,
            ms(step.lag.p50),
            ms(step.lag.p99),
            ms(step.lag.max),
            step.all_visible.as_secs_f64()
        );
        cpu.print("lag", step.events, "events");
        first += step.events.div_ceil(shape.gateways);
        if step.lag.p99 <= GOAL_P99 {
            println!("lag: p99 within {GOAL_P99:?} at {rate} events/s");
            return;
        }
        if rate / 2 < MIN_RATE {
            println!("lag: p99 over {GOAL_P99:?} down to {rate} events/s");
            return;
        }
        rate /= 2;
    }
}

/// Offers `rate` events a second for `secs` seconds, events `first..` of every gateway, and
/// waits until all are visible in PostgreSQL.
async fn step(
    js: &async_nats::jetstream::Context,
    pool: &sqlx::PgPool,
    hub: &mut HubProcess,
    shape: Shape,
    first: usize,
    rate: usize,
    secs: u64,
) -> Step {
    let events = rate * secs as usize;
    let publisher = tokio::spawn(offer(js.clone(), shape, first, rate, events));
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(secs) + DRAIN_TIMEOUT;
    let visible = watch_visible(pool, hub, shape, first, events, deadline).await;
    let all_visible = started.elapsed();
    let (sent, sending) = publisher.await.expect("lag publisher");
    let lags = sent
        .iter()
        .zip(&visible)
        .map(|(sent, visible)| Duration::from_millis(u64::try_from(visible - sent).unwrap_or(0)))
        .collect();
    Step { events, achieved: events as f64 / sending.as_secs_f64(), lag: Spread::of(lags), all_visible }
}

/// Publishes `count` events at `rate` a second; their `sent_ms`, by index, and the time from
/// the first send to the last acknowledgement.
async fn offer(
    js: async_nats::jetstream::Context,
    shape: Shape,
    first: usize,
    rate: usize,
    count: usize,
) -> (Vec<i64>, Duration) {
    let mut sent = Vec::with_capacity(count);
    let mut acks = FuturesUnordered::new();
    let started = tokio::time::Instant::now();
    for i in 0..count {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let sent_ms = now_ms();
        let report = shape.event_report(i % shape.gateways, first + i / shape.gateways, sent_ms);
        let ack = crate::publish_report(&js, &report, "").await;
        acks.push(ack.into_future());
        sent.push(sent_ms);
        while let Some(Some(ack)) = acks.next().now_or_never() {
            ack.expect("acknowledged");
        }
        while acks.len() >= MAX_UNACKED {
            acks.next().await.expect("ack").expect("acknowledged");
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("acknowledged");
    }
    (sent, started.elapsed())
}

/// Polls PostgreSQL until each of the `count` events is visible (panics at `deadline`): the
/// unix ms of the poll that first saw each. Event `i` is `first + i / gateways` of gateway
/// `i % gateways`.
async fn watch_visible(
    pool: &sqlx::PgPool,
    hub: &mut HubProcess,
    shape: Shape,
    first: usize,
    count: usize,
    deadline: tokio::time::Instant,
) -> Vec<i64> {
    let gateways = shape.gateways;
    let sites: Vec<String> = (0..gateways).map(|g| shape.site(g)).collect();
    let names: Vec<String> = (0..gateways).map(|g| shape.gateway(g)).collect();
    // Events of each gateway seen so far (a prefix).
    let mut seen = vec![0usize; gateways];
    let mut visible = vec![0i64; count];
    let mut total = 0;
    while total < count {
        tokio::time::sleep(POLL).await;
        hub.sample("lag");
        // Outbox sequence of event `first + seen` (`Shape::event_report`).
        let next: Vec<i64> = seen.iter().map(|n| (first + n + 1) as i64).collect();
        let highest: Vec<Option<i64>> = sqlx::query_scalar(
            "SELECT (SELECT max(e.seq) FROM events e WHERE e.site = w.site AND e.gateway = w.gateway AND e.seq >= w.next)
             FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS w(site, gateway, next, n) ORDER BY w.n",
        )
        .bind(&sites)
        .bind(&names)
        .bind(&next)
        .fetch_all(pool)
        .await
        .expect("poll visible events");
        let now = now_ms();
        for (gateway, highest) in highest.into_iter().enumerate() {
            let Some(highest) = highest else { continue };
            let upto = usize::try_from(highest).expect("seq") - first;
            for k in seen[gateway]..upto {
                visible[k * gateways + gateway] = now;
            }
            total += upto - seen[gateway];
            seen[gateway] = upto;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag: {total} of {count} events visible after {DRAIN_TIMEOUT:?} beyond the offered time"
        );
    }
    assert_eq!(total, count, "lag: more events visible than were sent");
    visible
}

pub fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms")
}
