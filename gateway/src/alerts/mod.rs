//! Alerts as records with a lifecycle: every `EventKind::Alert` any producer publishes (the
//! pipeline's detectors, identity's clone and EST-flood alerts, integrations' `event_flood`)
//! becomes a stored record an analyst acknowledges, assigns, annotates and resolves.
//!
//! - One record per incident: repeats of an `incident_id` update it (last seen, highest score
//!   and severity, count, the latest words, new evidence flows) until an analyst resolves it;
//!   the next alert of that incident then opens a new record. A `resolved: true` alert from the
//!   detector marks the record calm (`calm_since`); that is the detector's view, apart from
//!   the analyst's `state`.
//! - The `Action` events taken for an alert (`GatewayEvent::responds_to`, set by `respond`) are
//!   listed with its record as the responses it triggered.
//! - States: open → acknowledged → resolved (open → resolved too), resolved → open to reopen;
//!   resolving needs a `Resolution`. Every change is audited with its actor in the same
//!   transaction, through the inventory's ledger (`inventory::ledger::audit`), and returned as
//!   an `Audit` event for the caller to publish.
//!
//! Every committed change of a record (recorded alerts and analysts' changes alike) is
//! announced on the store's `Changes` broadcast, after the commit.
//!
//! Why a recorder thread of its own (`recorder`), fed by `EventBus::subscribe_recorder`, and
//! not writes in the pipeline thread: alerts also come from identity and integrations, on async
//! tasks, and a broadcast receiver that lags misses events. The recorder queue gets
//! every alert and action however far behind it is, and its thread batches them into one
//! transaction each, off the async workers and off the pipeline's loop (a slow disk delays
//! records, never detection).
//!
//! - "Learn as normal" (`learn`): a record resolved `false_positive` hands what its detector
//!   observed (`GatewayEvent::observations`) to the device's baseline (`baseline::learned`),
//!   audited in the same transaction; the caller tells the pipeline. Unlearning takes it back.
//!   A learnt record keeps its resolution until it is unlearnt.
//!
//! Reads and writes `alerts`, `alert_flows`, `alert_responses`, `alert_notes`,
//! `alert_observations`, `baseline_learned`, `alert_counts` (kept by triggers, read by
//! `summary`), and `inventory_audit` through the ledger.
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{device::Mac, event::Severity};

mod learn;
mod query;
pub mod recorder;
mod schema;
mod store;
pub mod summary;
#[cfg(test)]
mod tests;

pub use query::{Cursor, Filter, Order, Page, Query, SortKey};
pub use recorder::Recorder;
pub use schema::MIGRATIONS;
pub use store::AlertStore;
pub(crate) use store::checked;
pub use summary::Summary;

/// The tables a connection of the alert store needs: its own, and the inventory's audit trail.
/// The baseline's learnt exceptions too: learning writes them with its audit record.
pub const SCHEMA: crate::store::Schema<'static> =
    &[crate::inventory::MIGRATIONS, MIGRATIONS, crate::baseline::MIGRATIONS];
/// Evidence flows kept per record: the first ones seen (a long incident repeats the same).
pub const MAX_FLOWS_PER_ALERT: usize = 64;
/// Observations kept per record, the first ones seen (each escalation of a rate adds one).
pub const MAX_OBSERVATIONS_PER_ALERT: usize = 64;
/// Longest note, in bytes once escaped (`untrusted`): it goes into the audit detail whole.
pub const MAX_NOTE_BYTES: usize = 512;
/// Longest assignee name, in bytes.
pub const MAX_ASSIGNEE_BYTES: usize = 64;
/// Records one page holds when the query does not say, and at most.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
/// Changes a live view may fall behind by before it misses some (`Changes`).
pub const CHANGES_CAPACITY: usize = 1_024;

/// A change of an alert record, announced once it is committed, so whoever reads the store
/// after hearing of it sees it (the API's event stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertChanged {
    pub id: i64,
    pub state: State,
    pub device: Option<Mac>,
    pub severity: Severity,
}

/// Where an `AlertStore` announces committed changes (`AlertStore::announcing`). A broadcast:
/// a listener that falls `CHANGES_CAPACITY` behind misses changes and is told so.
pub type Changes = tokio::sync::broadcast::Sender<AlertChanged>;

/// A new, unheard channel for `AlertStore::announcing`.
pub fn changes() -> Changes {
    tokio::sync::broadcast::channel(CHANGES_CAPACITY).0
}

/// Where the analyst is with an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Acknowledged,
    Resolved,
}

/// What a resolved alert turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    TruePositive,
    FalsePositive,
    Benign,
}

/// Names as stored and as the API and CLI spell them (the serde names).
macro_rules! named {
    ($type:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            pub const ALL: &[$type] = &[$(<$type>::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(<$type>::$variant => $name),+ }
            }
        }

        impl std::str::FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("{text:?} is not one of {}", names.join(", "))
                })
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(State { Open => "open", Acknowledged => "acknowledged", Resolved => "resolved" });
named!(Resolution { TruePositive => "true_positive", FalsePositive => "false_positive", Benign => "benign" });

impl State {
    /// Whether an analyst may move an alert from `self` to `to`.
    pub fn may_become(self, to: State) -> bool {
        matches!(
            (self, to),
            (State::Open, State::Acknowledged | State::Resolved)
                | (State::Acknowledged, State::Resolved)
                | (State::Resolved, State::Open)
        )
    }
}

/// Severity names, as `Severity`'s serde spells them.
pub fn parse_severity(text: &str) -> Result<Severity, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not one of info, low, medium, high, critical"))
}

/// One alert record, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub incident_id: String,
    pub detector: String,
    /// Who raised it: `detector:scan`, `detector:identity_clone`, ...
    pub actor: String,
    /// The highest seen.
    pub severity: Severity,
    /// The highest seen.
    pub score: f64,
    /// The latest repeat's words.
    pub expected: String,
    pub observed: String,
    pub device: Option<Mac>,
    pub device_ip: Option<std::net::IpAddr>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Alerts of the incident this record stands for.
    pub count: u64,
    /// When the detector said the incident is over, unless it fired again since.
    #[serde(with = "time::serde::rfc3339::option")]
    pub calm_since: Option<OffsetDateTime>,
    pub state: State,
    pub resolution: Option<Resolution>,
    pub assignee: Option<String>,
}

/// One alert record with its evidence, responses and notes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub alert: Alert,
    /// Flows involved, `proto src:port -> dst:port`, first seen first (at most
    /// `MAX_FLOWS_PER_ALERT`).
    pub flows: Vec<String>,
    pub responses: Vec<Response>,
    /// Oldest first; notes are never edited or removed.
    pub notes: Vec<Note>,
    /// Whether its observations are learnt as the device's normal (`learn`).
    pub learned: bool,
    /// What the detector observed, which learning would take (at most
    /// `MAX_OBSERVATIONS_PER_ALERT`).
    pub observations: Vec<crate::event::Observation>,
}

/// An action taken because of the alert (`quarantine`, `block`, `release`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub reason: String,
}

/// An analyst's note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub author: String,
    pub text: String,
}

/// What an analyst changes at once (`PATCH /api/v1/alerts/{id}`); at least one field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub state: Option<State>,
    /// Required when `state` is `resolved`, refused otherwise.
    pub resolution: Option<Resolution>,
    /// `Some("")` unassigns.
    pub assignee: Option<String>,
    pub note: Option<String>,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsError {
    #[error("no alert {0}")]
    NotFound(i64),
    /// A malformed change or query; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The alert's state does not allow the change; nothing was changed.
    #[error("alert {id} is {from}: it cannot become {to} (open -> acknowledged -> resolved, resolved -> open)")]
    Transition { id: i64, from: State, to: State },
    /// Learning (or unlearning) does not apply to the alert as it is; nothing was changed.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Baseline(#[from] crate::baseline::store::StoreError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("alert store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("alert audit: {0}")]
    Audit(#[from] crate::inventory::InventoryError),
    #[error("cannot start the alert recorder thread: {0}")]
    Thread(std::io::Error),
}
