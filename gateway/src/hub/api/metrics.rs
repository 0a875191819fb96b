//! `GET /metrics` at the hub: what ingest did since the hub started (`IngestStats`) and how far
//! behind it is, and the fleet's counts read from PostgreSQL at scrape time. OpenMetrics text
//! under the gateway's prefix (`iotgw_hub_*`), or classic Prometheus text when the client
//! prefers `text/plain` (`api::exposition`), with the gateway's rule: a token, unless
//! `[api] metrics_public`.
use axum::{
    Extension, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, Method, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::{HubApi, status};
use crate::{
    api::{
        ApiError,
        exposition::Exposition,
        metrics::{self, encode_one, gauge},
    },
    event::Severity,
    hub::ingest::{IngestSnapshot, Stage},
};

pub fn routes() -> Router<HubApi> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(
    State(state): State<HubApi>,
    connection: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    method: Method,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let peer = connection.map(|Extension(ConnectInfo(addr))| addr.ip());
    metrics::authorize_scrape(&state, state.hub.config.api.metrics_public, &method, &headers, peer)?;
    // Without PostgreSQL the scrape still tells what ingest does (failing batches, say).
    let fleet = match FleetCounts::read(state.pool()).await {
        Ok(fleet) => Some(fleet),
        Err(error) => {
            tracing::warn!(%error, "metrics: fleet counts not read");
            None
        }
    };
    let mut registry = Registry::with_prefix(metrics::NAMESPACE);
    registry.register_collector(Box::new(HubScrape { ingest: state.ingest_snapshot().await, fleet }));
    let text = metrics::encode_registry(&registry)
        .map_err(|error| ApiError::Internal(format!("metrics encoding: {error}")))?;
    let format = Exposition::negotiate(&headers);
    Ok(([(header::CONTENT_TYPE, format.content_type())], format.render(text)))
}

/// The fleet in PostgreSQL: counts over indexed or small tables only, as a scrape runs often.
#[derive(Debug)]
struct FleetCounts {
    gateways: u64,
    stale_gateways: u64,
    devices: u64,
    open_alerts: Vec<(Severity, u64)>,
    commands_pending: u64,
}

impl FleetCounts {
    async fn read(pool: &sqlx::PgPool) -> Result<Self, sqlx::Error> {
        let (gateways, stale_gateways) = status::gateway_counts(pool).await?;
        let (devices, commands_pending): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT coalesce(sum(devices), 0)::int8 FROM fleet_device_counts),
                    (SELECT count(*) FROM commands WHERE outcome IS NULL)",
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            gateways,
            stale_gateways,
            devices: devices.unsigned_abs(),
            open_alerts: status::open_alerts_by_severity(pool).await?,
            commands_pending: commands_pending.unsigned_abs(),
        })
    }
}

/// One scrape's values.
#[derive(Debug)]
struct HubScrape {
    ingest: IngestSnapshot,
    fleet: Option<FleetCounts>,
}

impl Collector for HubScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ingest = &self.ingest;
        for (name, help, value) in [
            ("hub_reports", "Reports ingest stored (a redelivered one counts again).", ingest.reports),
            (
                "hub_reports_refused",
                "Messages ingest refused: not a report, or not from their subject.",
                ingest.refused,
            ),
            (
                "hub_duplicate_events",
                "Events stored before (redeliveries and republished reports).",
                ingest.duplicate_events,
            ),
            ("hub_batches", "Ingest transactions committed.", ingest.batches),
            (
                "hub_failed_batches",
                "Ingest transactions that failed (their reports are redelivered).",
                ingest.failed_batches,
            ),
            ("hub_clone_alerts", "Certificate clone alerts raised.", ingest.clone_alerts),
        ] {
            encode_one(&mut encoder, name, help, ConstCounter::new(value))?;
        }
        encode_one(
            &mut encoder,
            "hub_consumer_pending",
            "Reports waiting in the stream for the hub.",
            gauge(ingest.pending),
        )?;
        encode_one(
            &mut encoder,
            "hub_ingest_lag_seconds",
            "Seconds from the broker storing the newest report of the last batch to its commit.",
            ConstGauge::new(ingest.lag_ms as f64 / 1_000.0),
        )?;
        let mut family = encoder.encode_descriptor(
            "hub_ingest_stage_seconds",
            "Seconds ingest spent in each stage: pull (waiting for the broker), decode, held (a decoded \
             batch waiting for the one before it), store (transactions), acknowledge.",
            None,
            MetricType::Counter,
        )?;
        for (stage, micros) in Stage::ALL.iter().zip(ingest.stage_us) {
            ConstCounter::new(micros as f64 / 1e6).encode(family.encode_family(&[("stage", stage.name())])?)?;
        }
        if let Some(fleet) = &self.fleet {
            encode_fleet(fleet, &mut encoder)?;
        }
        Ok(())
    }
}

fn encode_fleet(fleet: &FleetCounts, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    for (name, help, value) in [
        ("hub_gateways", "Gateways that ever reported.", fleet.gateways),
        ("hub_gateways_stale", "Gateways silent for longer than five minutes.", fleet.stale_gateways),
        ("hub_fleet_devices", "Devices seen anywhere in the fleet.", fleet.devices),
        ("hub_commands_pending", "Device commands the gateways have not answered yet.", fleet.commands_pending),
    ] {
        encode_one(encoder, name, help, gauge(value))?;
    }
    let mut family = encoder.encode_descriptor(
        "hub_open_alerts",
        "Alerts not yet resolved, by severity.",
        None,
        MetricType::Gauge,
    )?;
    for (severity, count) in &fleet.open_alerts {
        let labels = [("severity", metrics::severity_label(*severity))];
        gauge(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
