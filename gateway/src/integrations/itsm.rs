//! ITSM tickets in the shape of ServiceNow's table API: the first alert of an incident at or
//! above the configured severity opens a ticket (`POST {table}`), later alerts of the same
//! incident update it and its resolution closes it (`PATCH {table}/{sys_id}`). One ticket per
//! incident: the ticket row in `integration_tickets` is written *before* the POST, and a row
//! left without `sys_id` (crash, lost answer) is resolved by looking the ticket up by its
//! correlation field before ever posting again.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde_json::{Value, json};

use crate::event::{EventKind, GatewayEvent, Severity};

use super::{
    config::{ItsmConfig, SinkConfig},
    outbox::{Record, now_ms},
    render,
    transport::{Failure, Progress, TransportError, classify, http_client},
};

/// Where a ticket stands, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ticket {
    /// Creation was attempted; the ticket may or may not exist on the ITSM side.
    Opening,
    Open {
        sys_id: String,
    },
    Resolved {
        sys_id: String,
    },
}

/// What the next call to the ITSM is, for an alert and the ticket state.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Create,
    /// Find a ticket whose creation answer was lost, then create if there is none.
    FindOrCreate,
    Update {
        sys_id: String,
    },
    Resolve {
        sys_id: String,
    },
}

/// The decision, free of I/O.
pub fn step(ticket: Option<&Ticket>, severity: Severity, min_severity: Severity, resolved: bool) -> Step {
    match (ticket, resolved) {
        (None, false) if severity >= min_severity => Step::Create,
        (None, _) => Step::Nothing,
        (Some(Ticket::Opening), false) => Step::FindOrCreate,
        // Resolved before the ticket is confirmed: find it first; the resolution follows.
        (Some(Ticket::Opening), true) => Step::FindOrCreate,
        (Some(Ticket::Open { sys_id }), false) => Step::Update { sys_id: sys_id.clone() },
        (Some(Ticket::Open { sys_id }), true) => Step::Resolve { sys_id: sys_id.clone() },
        (Some(Ticket::Resolved { .. }), true) => Step::Nothing,
        (Some(Ticket::Resolved { sys_id }), false) => Step::Update { sys_id: sys_id.clone() },
    }
}

pub struct Itsm {
    sink: String,
    client: reqwest::Client,
    table_url: String,
    authorization: Option<String>,
    config: ItsmConfig,
    conn: Arc<Mutex<Connection>>,
}

impl Itsm {
    pub fn new(sink: &SinkConfig, store: PathBuf) -> Result<Self, TransportError> {
        let conn = crate::store::open(&store, &[super::MIGRATIONS])
            .map_err(|e| TransportError::Setup { sink: sink.name.clone(), message: e.to_string() })?;
        let authorization = sink.token.as_deref().map(|token| match token.split_once(':') {
            Some(_) => {
                use base64::Engine as _;
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(token))
            }
            None => format!("Bearer {token}"),
        });
        Ok(Self {
            sink: sink.name.clone(),
            client: http_client(sink)?,
            table_url: format!(
                "{}{}",
                sink.url.as_deref().unwrap_or_default().trim_end_matches('/'),
                sink.itsm.table_path
            ),
            authorization,
            config: sink.itsm.clone(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| "ticket store lock poisoned".to_owned())?;
            f(&conn).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn ticket(&self, incident: &str) -> Result<Option<Ticket>, String> {
        let (sink, incident) = (self.sink.clone(), incident.to_owned());
        self.db(move |conn| {
            conn.query_row(
                "SELECT state, sys_id FROM integration_tickets WHERE sink = ?1 AND incident_id = ?2",
                params![sink, incident],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()
        })
        .await
        .map(|row| {
            row.map(|(state, sys_id)| match (state.as_str(), sys_id) {
                ("resolved", Some(sys_id)) => Ticket::Resolved { sys_id },
                (_, Some(sys_id)) => Ticket::Open { sys_id },
                (_, None) => Ticket::Opening,
            })
        })
    }

    async fn record(&self, incident: &str, state: &'static str, sys_id: Option<String>) -> Result<(), String> {
        let (sink, incident) = (self.sink.clone(), incident.to_owned());
        self.db(move |conn| {
            conn.execute(
                "INSERT INTO integration_tickets (sink, incident_id, sys_id, state, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(sink, incident_id) DO UPDATE SET sys_id = COALESCE(excluded.sys_id, sys_id),
                 state = excluded.state, updated_ms = excluded.updated_ms",
                params![sink, incident, sys_id, state, now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, url).header(reqwest::header::ACCEPT, "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        request
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request.send().await.map_err(|e| Failure::Transient(format!("ITSM: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if let Some(failure) = classify(status, &text) {
            return Err(failure);
        }
        serde_json::from_str(&text).map_err(|e| Failure::Transient(format!("ITSM answer is not JSON: {e}")))
    }

    async fn find(&self, incident: &str) -> Result<Option<String>, Failure> {
        let query = format!("{}={incident}", self.config.correlation_field);
        let request = self.request(reqwest::Method::GET, &self.table_url).query(&[
            ("sysparm_query", query.as_str()),
            ("sysparm_limit", "1"),
            ("sysparm_fields", "sys_id"),
        ]);
        let answer = self.call(request).await?;
        Ok(answer["result"].as_array().and_then(|a| a.first()).and_then(|t| t["sys_id"].as_str()).map(str::to_owned))
    }

    async fn create(&self, event: &GatewayEvent, incident: &str) -> Result<String, Failure> {
        let mut body = fill(&self.config.fields, event);
        body.insert(self.config.correlation_field.clone(), json!(incident));
        let answer = self.call(self.request(reqwest::Method::POST, &self.table_url).json(&body)).await?;
        answer["result"]["sys_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::Transient("ITSM answer has no result.sys_id".into()))
    }

    async fn patch(
        &self,
        sys_id: &str,
        fields: &BTreeMap<String, String>,
        event: &GatewayEvent,
    ) -> Result<(), Failure> {
        let url = format!("{}/{sys_id}", self.table_url);
        self.call(self.request(reqwest::Method::PATCH, &url).json(&fill(fields, event))).await.map(|_| ())
    }

    /// Handles one event; `Err` leaves the ticket state consistent for a retry.
    async fn handle(&self, event: &GatewayEvent) -> Result<(), Failure> {
        let EventKind::Alert { incident_id, resolved, .. } = &event.kind else { return Ok(()) };
        let db = |e: String| Failure::Transient(format!("ticket store: {e}"));
        let ticket = self.ticket(incident_id).await.map_err(db)?;
        match step(ticket.as_ref(), event.severity, self.config.min_severity, *resolved) {
            Step::Nothing => Ok(()),
            Step::Create => {
                self.record(incident_id, "opening", None).await.map_err(db)?;
                let sys_id = self.create(event, incident_id).await?;
                self.record(incident_id, "open", Some(sys_id)).await.map_err(db)
            }
            Step::FindOrCreate => {
                let sys_id = match self.find(incident_id).await? {
                    Some(sys_id) => sys_id,
                    None => self.create(event, incident_id).await?,
                };
                self.record(incident_id, "open", Some(sys_id.clone())).await.map_err(db)?;
                if *resolved {
                    self.patch(&sys_id, &self.config.resolve_fields, event).await?;
                    self.record(incident_id, "resolved", None).await.map_err(db)?;
                }
                Ok(())
            }
            Step::Update { sys_id } => {
                self.patch(&sys_id, &self.config.update_fields, event).await?;
                // A new alert after resolution reopens the incident on our side, so its next
                // resolution closes the same ticket again.
                self.record(incident_id, "open", None).await.map_err(db)
            }
            Step::Resolve { sys_id } => {
                self.patch(&sys_id, &self.config.resolve_fields, event).await?;
                self.record(incident_id, "resolved", None).await.map_err(db)
            }
        }
    }

    pub async fn deliver(&mut self, batch: &[Record]) -> Progress {
        for (i, record) in batch.iter().enumerate() {
            if let Err(failure) = self.handle(&record.event).await {
                return Progress { delivered: i, failure: Some(failure) };
            }
        }
        Progress::all(batch.len())
    }
}

/// ServiceNow urgency/impact: 1 high, 2 medium, 3 low.
fn urgency(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "1",
        Severity::Medium => "2",
        Severity::Low | Severity::Info => "3",
    }
}

/// The mapped fields with placeholders replaced.
pub fn fill(fields: &BTreeMap<String, String>, event: &GatewayEvent) -> serde_json::Map<String, Value> {
    let (incident, detector, score, expected, observed) = match &event.kind {
        EventKind::Alert { incident_id, detector, score, expected, observed, .. } => {
            (incident_id.as_str(), detector.as_str(), format!("{score:.3}"), expected.as_str(), observed.as_str())
        }
        _ => ("", "", String::new(), "", ""),
    };
    let device = event.device.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
    let ip = event.device_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into());
    let time = event.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let values = [
        ("{incident_id}", incident),
        ("{detector}", detector),
        ("{device}", &device),
        ("{device_ip}", &ip),
        ("{severity}", render::severity_name(event.severity)),
        ("{urgency}", urgency(event.severity)),
        ("{impact}", urgency(event.severity)),
        ("{expected}", expected),
        ("{observed}", observed),
        ("{score}", &score),
        ("{actor}", &event.actor),
        ("{event_id}", &event.id),
        ("{time}", &time),
    ];
    fields
        .iter()
        .map(|(field, template)| {
            // One pass over the template, so a value containing "{device}" is not expanded.
            let mut out = String::with_capacity(template.len());
            let mut rest = template.as_str();
            while let Some(start) = rest.find('{') {
                out.push_str(&rest[..start]);
                rest = &rest[start..];
                match values.iter().find(|(key, _)| rest.starts_with(key)) {
                    Some((key, value)) => {
                        out.push_str(value);
                        rest = &rest[key.len()..];
                    }
                    None => {
                        out.push('{');
                        rest = &rest[1..];
                    }
                }
            }
            out.push_str(rest);
            (field.clone(), Value::String(out))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::render::fixtures;

    #[test]
    fn first_alert_creates_then_updates_then_resolves_once() {
        let min = Severity::High;
        assert_eq!(step(None, Severity::High, min, false), Step::Create);
        let open = Ticket::Open { sys_id: "s".into() };
        assert_eq!(step(Some(&open), Severity::High, min, false), Step::Update { sys_id: "s".into() });
        assert_eq!(step(Some(&open), Severity::High, min, true), Step::Resolve { sys_id: "s".into() });
        let done = Ticket::Resolved { sys_id: "s".into() };
        assert_eq!(step(Some(&done), Severity::High, min, true), Step::Nothing);
    }

    #[test]
    fn low_alert_opens_nothing_and_resolution_without_ticket_is_ignored() {
        assert_eq!(step(None, Severity::Medium, Severity::High, false), Step::Nothing);
        assert_eq!(step(None, Severity::Critical, Severity::High, true), Step::Nothing);
    }

    #[test]
    fn opening_ticket_is_looked_up_before_posting_again() {
        assert_eq!(step(Some(&Ticket::Opening), Severity::High, Severity::High, false), Step::FindOrCreate);
    }

    #[test]
    fn templates_fill_once_without_expanding_values() {
        let mut fields = BTreeMap::new();
        fields.insert("short_description".to_owned(), "{detector} on {device} {unknown}".to_owned());
        let mut event = fixtures::alert(false);
        if let EventKind::Alert { detector, .. } = &mut event.kind {
            *detector = "x{device}".into();
        }
        let filled = fill(&fields, &event);
        assert_eq!(filled["short_description"], "x{device} on 02:00:00:00:00:01 {unknown}");
    }
}
