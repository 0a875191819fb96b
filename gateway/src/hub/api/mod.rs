//! The hub's HTTP API and console: the gateway API's shapes over the fleet's PostgreSQL store,
//! with `site` and `gateway` on every row and as filters, keyset cursors (`Next-Cursor`, as
//! `api::paging` says) and the same roles, tokens, users and console sessions (`api::gate`).
//! Served by the gateway's server (`api::serve`: limits, TLS, JSON errors) on the `[api]`
//! section of the hub's config; the console is the gateway's, which reads `scope: "fleet"` in
//! the status and shows the fleet's pages.
//!
//! `HubApi` also holds ingest's counters (`IngestStats`), which `status` and `metrics` show.
//!
//! Each module brings its routes (`routes()`); `router` merges them, so another part of the hub
//! adds its endpoints with one `.merge(...)` line there.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, extract::DefaultBodyLimit};

use super::{
    Hub,
    ingest::{self, IngestStats},
};
use crate::api::{self, ApiError, Authority, CredentialsError, Gate, ServeError};
use crate::fleet::subjects;

pub mod alerts;
pub mod audit;
pub mod commands;
pub mod devices;
pub mod events;
pub mod gateways;
pub mod metrics;
pub mod query;
pub mod status;

/// What the hub's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct HubApi {
    pub hub: Hub,
    ingest: Arc<IngestStats>,
    gate: Gate,
    started: Instant,
}

/// How long a request waits for the broker to say how far behind ingest is.
const BROKER_PATIENCE: Duration = Duration::from_secs(1);

impl HubApi {
    /// Loads the tokens and users of the hub's `[api]` section; `ingest` is what the hub's
    /// ingest task counts.
    pub fn new(hub: Hub, ingest: Arc<IngestStats>) -> Result<Self, CredentialsError> {
        let gate = Gate::new(&hub.config.api)?;
        Ok(Self { hub, ingest, gate, started: Instant::now() })
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.hub.pool
    }

    /// Ingest's counters, with `pending` the reports waiting in the stream for the hub now,
    /// as the broker says; as of ingest's last batch when the broker does not answer in time.
    pub async fn ingest_snapshot(&self) -> ingest::IngestSnapshot {
        let mut snapshot = self.ingest.snapshot();
        let ask = async {
            let stream = self.hub.jetstream.get_stream_no_info(subjects::REPORT_STREAM).await?;
            Ok::<_, async_nats::Error>(stream.consumer_info(ingest::CONSUMER).await?.num_pending)
        };
        match tokio::time::timeout(BROKER_PATIENCE, ask).await {
            Ok(Ok(pending)) => snapshot.pending = pending,
            Ok(Err(error)) => tracing::debug!(%error, "ingest backlog not read from the broker"),
            Err(_) => tracing::debug!("ingest backlog not read from the broker in time"),
        }
        snapshot
    }
}

impl Authority for HubApi {
    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn count_auth_failure(&self) {
        tracing::debug!("hub api: authentication refused");
    }

    /// Into `hub_audit`.
    async fn audit(&self, actor: String, action: &'static str, detail: String) -> Result<(), ApiError> {
        audit::record(self.pool(), &audit::Entry { actor: &actor, action, detail: &detail, ..Default::default() }).await
    }
}

/// Every route of the hub's API and its console.
pub fn router(state: HubApi) -> Router {
    Router::new()
        .merge(status::routes())
        .merge(gateways::routes())
        .merge(devices::routes())
        .merge(alerts::routes())
        .merge(events::routes())
        .merge(audit::routes())
        .merge(commands::routes())
        .merge(metrics::routes())
        .merge(api::signin::routes())
        .fallback(api::handlers::not_found)
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .with_state(state)
        .merge(crate::console::router())
}

/// Serves the hub's API and console on `[api] listen` until `shutdown` fires; `ingest` is
/// what the hub's ingest task counts.
pub async fn serve(hub: Hub, ingest: Arc<IngestStats>, shutdown: crate::shutdown::Shutdown) -> Result<(), ServeError> {
    let config: Arc<super::Config> = hub.config.clone();
    let state = HubApi::new(hub, ingest).map_err(|error| ServeError::Config(error.to_string()))?;
    api::serve(&config.api, router(state), shutdown).await
}

/// A store failure: logged in full, answered 500.
pub(crate) fn store_error(error: sqlx::Error) -> ApiError {
    ApiError::Internal(format!("fleet store: {error}"))
}
