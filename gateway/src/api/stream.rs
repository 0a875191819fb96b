//! `GET /api/v1/stream`: live updates for the console as server-sent events, so new alerts
//! and state changes appear without a reload. An ordinary authenticated GET (bearer token, or
//! whatever else `ApiState::authenticate` accepts).
//!
//! Events, each a JSON object in `data`:
//! - `alert` `{id, state, device, severity}`: an alert record changed. Taken from the alert
//!   stores' `Changes` broadcast, which announces a change only after its commit, so a GET
//!   that follows the event sees it.
//! - `device` `{mac, state}`: a device appeared or its access changed (the inventory's
//!   `device_added`, an `Action` or a `Lifecycle` event on the bus); `state` is read from the
//!   inventory once the event arrives, after the change was recorded.
//! - `audit` `{id, device, action}`: something worth an audit record happened (every bus event
//!   but alerts); `id` is the event's.
//! - `resync`: this client fell too far behind and missed events: read the pages again.
//! - A `: keep-alive` comment every `KEEP_ALIVE`.
//!
//! Bounded per client: a client reads the shared broadcasts (`EventBus`, `alerts::Changes`)
//! through receivers of fixed capacity, never a queue of its own; one that lags gets `resync`.
//! The stream ends when the server shuts down (`ApiState::with_shutdown`).
use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use utoipa::ToSchema;

use super::{ApiState, auth::Caller, directory::DeviceDirectory, handlers::blocking, model::ErrorBody};
use crate::{
    alerts::AlertChanged,
    device::Mac,
    event::{EventKind, GatewayEvent},
    shutdown::Shutdown,
};

/// How often an idle stream sends a comment, so proxies and the browser keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The inventory's audit action for a device seen for the first time.
const DEVICE_ADDED: &str = "device_added";

/// `event: alert`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AlertEvent {
    pub id: i64,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    #[schema(value_type = Option<String>, example = "98:90:96:9a:86:df")]
    pub device: Option<Mac>,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
}

/// `event: device`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeviceEvent {
    #[schema(value_type = String, example = "98:90:96:9a:86:df")]
    pub mac: Mac,
    /// The device's access state now: `unknown`, `onboarding`, `enrolled`, `quarantined` or
    /// `blocked`.
    pub state: String,
}

/// `event: audit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEvent {
    /// The event's id.
    pub id: String,
    #[schema(value_type = Option<String>)]
    pub device: Option<Mac>,
    /// What happened: the audit action, the action taken, the lifecycle step or the policy
    /// outcome (`device_added`, `quarantine`, `enrolled->revoked`, `refused`, ...).
    pub action: String,
}

/// One client's view of the live sources.
struct Live {
    bus: Receiver<GatewayEvent>,
    alerts: Receiver<AlertChanged>,
    directory: std::sync::Arc<dyn DeviceDirectory>,
    shutdown: Option<Shutdown>,
    /// Events made from one bus event, sent before the next is read (at most two).
    ready: VecDeque<Event>,
}

fn event(name: &str, data: &impl Serialize) -> Event {
    // Plain data of our own types: serialising cannot fail; an empty object if it ever did.
    Event::default().event(name).json_data(data).unwrap_or_else(|_| Event::default().event(name).data("{}"))
}

fn resync() -> Event {
    Event::default().event("resync").data("{}")
}

async fn until_shutdown(shutdown: &mut Option<Shutdown>) {
    match shutdown {
        Some(shutdown) => shutdown.wait().await,
        None => std::future::pending().await,
    }
}

impl Live {
    /// The next event for the client, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ready) = self.ready.pop_front() {
                return Some(ready);
            }
            tokio::select! {
                () = until_shutdown(&mut self.shutdown) => return None,
                changed = self.alerts.recv() => match changed {
                    Ok(changed) => return Some(event("alert", &AlertEvent {
                        id: changed.id,
                        state: changed.state.as_str().to_owned(),
                        device: changed.device,
                        severity: crate::integrations::render::severity_name(changed.severity).to_owned(),
                    })),
                    Err(RecvError::Lagged(_)) => return Some(resync()),
                    Err(RecvError::Closed) => return None,
                },
                published = self.bus.recv() => match published {
                    Ok(published) => self.take(published).await,
                    Err(RecvError::Lagged(_)) => return Some(resync()),
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// Queues what a bus event means for the console.
    async fn take(&mut self, published: GatewayEvent) {
        if matches!(published.kind, EventKind::Alert { .. }) {
            // Alerts come from the stores' announcements, once committed.
            return;
        }
        let device_changed = match &published.kind {
            EventKind::Action { .. } | EventKind::Lifecycle { .. } => true,
            EventKind::Audit { action, .. } => action == DEVICE_ADDED,
            _ => false,
        };
        if let Some(mac) = published.device.filter(|_| device_changed) {
            let directory = self.directory.clone();
            match blocking(move || Ok(directory.device(mac)?)).await {
                Ok(Some(record)) => self
                    .ready
                    .push_back(event("device", &DeviceEvent { mac, state: record.summary.state.as_str().to_owned() })),
                // Not in the inventory: nothing a page shows changed.
                Ok(None) => {}
                // The console reads the page again rather than miss the change.
                Err(error) => {
                    tracing::warn!(%error, "event stream: cannot read the device's state");
                    self.ready.push_back(resync());
                }
            }
        }
        let audit = AuditEvent { id: published.id.clone(), device: published.device, action: published.action_name() };
        self.ready.push_back(event("audit", &audit));
    }
}

/// Live updates as server-sent events: `alert`, `device`, `audit`, `resync`, and a
/// `: keep-alive` comment every 15 s.
#[utoipa::path(
    get, path = "/api/v1/stream", tag = "status",
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "Server-sent events until the client leaves or the server stops: \
                `event: alert` with an AlertEvent (sent once the record is committed), \
                `event: device` with a DeviceEvent (a new device or an access change), \
                `event: audit` with an AuditEvent, `event: resync` (events were dropped for \
                this slow client: read the pages again), and a `: keep-alive` comment every 15 s."),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribed before the response starts: nothing after the request is missed.
    let live = Live {
        bus: state.events.subscribe(),
        alerts: state.alert_changes.subscribe(),
        directory: state.directory.clone(),
        shutdown: state.shutdown.clone(),
        ready: VecDeque::new(),
    };
    let events = futures::stream::unfold(live, |mut live| async move {
        let next = live.next().await?;
        Some((Ok(next), live))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}
