//! What the hub stored against what the gateways' outboxes held: the check after a broker or hub
//! failure that nothing was lost and nothing stored twice. An outbox's sequence numbers run from
//! 1 without gaps and are never reused, so a gateway's events are all in PostgreSQL exactly once
//! when its rows there are that run, one row per number, each with its own event id.
use std::time::Duration;

use super::{Fleet, LabGateway, Outbox, REPORT_TIMEOUT, eventually};

/// One gateway's events as PostgreSQL holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Stored {
    pub rows: i64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub distinct_seqs: i64,
    pub distinct_ids: i64,
}

impl Stored {
    /// The rows are exactly the outbox's run 1..=`written`, each once with its own event id.
    fn matches(&self, written: i64) -> bool {
        let run = if written == 0 { (None, None) } else { (Some(1), Some(written)) };
        (self.first_seq, self.last_seq) == run
            && [self.rows, self.distinct_seqs, self.distinct_ids].iter().all(|n| *n == written)
    }
}

impl Fleet {
    /// `gateway`'s events in PostgreSQL.
    pub fn stored(&self, gateway: &LabGateway) -> Stored {
        let sql = format!(
            "SELECT count(*) AS rows, min(seq) AS first_seq, max(seq) AS last_seq, \
             count(DISTINCT seq) AS distinct_seqs, count(DISTINCT event_id) AS distinct_ids \
             FROM events WHERE site = '{}' AND gateway = '{}'",
            gateway.site, gateway.gateway
        );
        self.query(&sql).pop().unwrap_or_default()
    }

    /// The (sequence number, event id) PostgreSQL holds for `gateway` in `first..=last`, in order.
    pub fn stored_ids(&self, gateway: &LabGateway, first: i64, last: i64) -> Vec<(i64, String)> {
        self.query(&format!(
            "SELECT seq, event_id FROM events WHERE site = '{}' AND gateway = '{}' AND seq BETWEEN {first} AND {last} \
             ORDER BY seq",
            gateway.site, gateway.gateway
        ))
    }

    /// Waits until PostgreSQL holds events from every gateway, `at_least` in all: the hub is at
    /// work. Returns how many it holds.
    pub fn wait_stored(&self, gateways: &[LabGateway], at_least: i64) -> i64 {
        eventually("events from every gateway in PostgreSQL", REPORT_TIMEOUT, || {
            let stored: Vec<i64> = gateways.iter().map(|g| self.stored(g).rows).collect();
            let total = stored.iter().sum::<i64>();
            if stored.iter().all(|rows| *rows > 0) && total >= at_least {
                Ok(total)
            } else {
                Err(format!("{stored:?}"))
            }
        })
    }

    /// Waits until every gateway's outbox is published and PostgreSQL holds each of its events
    /// exactly once; panics after `timeout` with what each side held last. Returns the outboxes.
    pub fn wait_every_event_once(&self, gateways: &[LabGateway], timeout: Duration) -> Vec<Outbox> {
        let outboxes = eventually("every event once in PostgreSQL", timeout, || {
            let outboxes: Vec<Outbox> = gateways.iter().map(LabGateway::outbox).collect();
            let stored: Vec<Stored> = gateways.iter().map(|g| self.stored(g)).collect();
            if outboxes.iter().zip(&stored).all(|(o, s)| o.unpublished.is_empty() && s.matches(o.written)) {
                return Ok(outboxes);
            }
            let held: Vec<_> = outboxes.iter().map(|o| (o.written, o.dropped, o.unpublished.len())).collect();
            Err(format!("outboxes (written, dropped, unpublished) {held:?}, stored {stored:?}"))
        });
        for (gateway, outbox) in gateways.iter().zip(&outboxes) {
            assert_eq!(outbox.dropped, 0, "{}/{} dropped events over its cap", gateway.site, gateway.gateway);
        }
        outboxes
    }
}
