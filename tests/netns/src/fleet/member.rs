//! A lab gateway of the fleet: the scenario's controller at one site, with the relay it reaches
//! the broker through, and what a test reads of it the way an operator would: its `/metrics`,
//! and its store's outbox.
use crate::{api::ApiClient, relay::Relay, scenario::Scenario};

/// The token the lab gateways' own APIs take (viewer).
pub const GATEWAY_TOKEN: &str = "fleet-lab-gateway-viewer";

/// One running member of the fleet. The controller stops before its relay goes.
pub struct LabGateway<'a> {
    pub scenario: Scenario<'a>,
    pub site: String,
    pub gateway: String,
    pub(super) _relay: Relay,
}

/// What the fleet publisher has made of a gateway's outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbox {
    /// Events the outbox ever held: its sequence numbers are 1 to this, never reused.
    pub written: i64,
    /// Events the outbox dropped over its cap (lost to every consumer).
    pub dropped: i64,
    /// Events the broker has not acknowledged yet, (sequence number, event id), in order.
    pub unpublished: Vec<(i64, String)>,
}

impl LabGateway<'_> {
    /// `GET /metrics` of the gateway's API, as text.
    pub fn metrics(&self) -> String {
        let answer = ApiClient::new(&self.scenario.lab.gw).get("/metrics", Some(GATEWAY_TOKEN));
        assert_eq!(answer.status, 200, "{}/{} /metrics: {answer:?}", self.site, self.gateway);
        answer.body
    }

    /// The gateway's outbox as its store holds it now (read beside the running controller).
    pub fn outbox(&self) -> Outbox {
        let store = self.scenario.ctl.dir.join("iotgw.db");
        let conn = iotgw::schema::open(&store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
        let written = conn
            .query_row("SELECT IFNULL(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'integration_outbox'", [], |r| {
                r.get(0)
            })
            .expect("outbox high-water mark");
        let dropped = iotgw::integrations::outbox::stat(&conn, iotgw::integrations::outbox::STAT_DROPPED)
            .expect("outbox drop count");
        let mut statement = conn
            .prepare(
                "SELECT seq, event_id FROM integration_outbox WHERE seq > IFNULL((SELECT delivered_seq \
                 FROM integration_cursors WHERE sink = ?1), 0) ORDER BY seq",
            )
            .expect("outbox query");
        let unpublished = statement
            .query_map([iotgw::fleet::publisher::CONSUMER], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .expect("outbox rows");
        Outbox { written, dropped, unpublished }
    }
}
