//! A gateway's row as ingest keeps it: its first and last report to the second, whatever the
//! batches; the row written only when a batch moves one of those or brings a newer health
//! report (under events spread over many gateways, writing it for every batch was a row per
//! event: bench/fleet/RESULTS.md). Stored with `hub::ingest::store` into a real PostgreSQL.
#[path = "hub_ingest/support.rs"]
mod support;

use std::time::Duration;

use iotgw::{
    fleet::wire::{Health, Report, ReportBody},
    hub::{self, ingest},
};
use iotgw_test_support::services::Postgres;
use support::{T0_MS, action};

const WINDOW: Duration = Duration::from_secs(300);

/// Action `seq` of s1/gw-1, sent `sent_ms`.
fn event_at(seq: i64, sent_ms: i64) -> Report {
    Report { sent_ms, ..action("s1", "gw-1", seq) }
}

fn health_at(sent_ms: i64, backlog: u64) -> Report {
    let health = Health { version: "1.2.3".into(), outbox_backlog: backlog, ..Health::default() };
    Report::new("s1", "gw-1", sent_ms, ReportBody::Health { health })
}

/// first_seen and last_seen (unix ms), health_ms, and what last wrote the row: `xmin`, the
/// transaction of its version, and `xmax`, one that locked it (`INSERT .. ON CONFLICT DO UPDATE`
/// locks the row even when its `WHERE` then leaves it).
async fn gateway(pool: &sqlx::PgPool) -> (i64, i64, Option<i64>, String) {
    sqlx::query_as(
        "SELECT (extract(epoch FROM first_seen) * 1000)::bigint, (extract(epoch FROM last_seen) * 1000)::bigint,
                health_ms, xmin::text || '/' || xmax::text FROM gateways WHERE site = 's1' AND gateway = 'gw-1'",
    )
    .fetch_one(pool)
    .await
    .expect("the gateway's row")
}

#[tokio::test]
async fn a_gateways_row_is_kept_to_the_second_and_written_only_when_a_batch_moves_it() {
    let postgres = Postgres::start();
    let pool = hub::store::open(&postgres.url()).await.expect("migrated store");
    let store = |reports: Vec<Report>| {
        let pool = pool.clone();
        async move { ingest::store(&pool, &reports, WINDOW).await.expect("stored") }
    };

    store(vec![event_at(1, T0_MS + 400), event_at(2, T0_MS + 100)]).await;
    let (first, last, health, written) = gateway(&pool).await;
    assert_eq!((first, last, health), (T0_MS, T0_MS, None), "both reports in the second T0");

    // Later in the same second, and earlier than first_seen's second: nothing moves, nothing written.
    store(vec![event_at(3, T0_MS + 999)]).await;
    assert_eq!(gateway(&pool).await, (T0_MS, T0_MS, None, written.clone()), "the row not even locked");

    // The next second moves last_seen; a report from before moves first_seen.
    store(vec![event_at(4, T0_MS + 1_001)]).await;
    let (_, last, _, moved) = gateway(&pool).await;
    assert_eq!(last, T0_MS + 1_000);
    assert_ne!(moved, written, "written when it moves");
    store(vec![event_at(5, T0_MS - 2_500)]).await;
    assert_eq!(gateway(&pool).await.0, T0_MS - 3_000, "first_seen rounds down too");

    // A health report within the second it was seen: health is written, to the millisecond;
    // an older one after it changes nothing.
    store(vec![health_at(T0_MS + 1_200, 7)]).await;
    let (_, last, health, written) = gateway(&pool).await;
    assert_eq!((last, health), (T0_MS + 1_000, Some(T0_MS + 1_200)));
    store(vec![health_at(T0_MS + 1_100, 99)]).await;
    assert_eq!(gateway(&pool).await.3, written, "an older health report: not written");
    let backlog: i64 = sqlx::query_scalar("SELECT (health->>'outbox_backlog')::bigint FROM gateways")
        .fetch_one(&pool)
        .await
        .expect("health");
    assert_eq!(backlog, 7, "the newer health report kept");

    // A new gateway in a batch with a known one: inserted.
    store(vec![event_at(6, T0_MS + 1_500), Report { site: "s2".into(), ..event_at(1, T0_MS + 1_500) }]).await;
    let gateways: i64 = sqlx::query_scalar("SELECT count(*) FROM gateways").fetch_one(&pool).await.expect("count");
    assert_eq!(gateways, 2);
}
