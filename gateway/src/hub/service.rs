//! The running hub (`iotgw hub --config FILE`): connect to the broker, make sure the streams
//! exist (and the policy bundle bucket), bring PostgreSQL's schema up to date, then ingest reports and serve the fleet API
//! until SIGINT/SIGTERM, when each task finishes what it holds within a grace period.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use super::{Config, Hub, api, ingest, store, streams};
use crate::{
    fleet::connect::{self, Endpoint},
    shutdown,
};

/// Client name the broker shows for the hub.
pub const CLIENT_NAME: &str = "iotgw-hub";
/// How long tasks get to finish after the shutdown signal (ingest commits the batch in hand).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the hub until shutdown. `config` was loaded and checked (`Config::load`).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let endpoint = Endpoint {
        url: &config.nats_url,
        name: CLIENT_NAME,
        credentials: config.credentials.as_deref(),
        tls_ca: config.tls_ca.as_deref(),
        inbox_prefix: None,
    };
    let client = connect::connect(&endpoint).await?;
    tracing::info!(url = %config.nats_url, name = CLIENT_NAME, "broker connection");
    let jetstream = async_nats::jetstream::new(client.clone());
    let command_ttl = Duration::from_secs(config.command_ttl_secs);
    streams::ensure(&jetstream, &config.streams, command_ttl)
        .await
        .map_err(|e| anyhow::anyhow!("creating the JetStream streams: {e}"))?;
    // Made now, not at the first publish, so gateways can watch it from the start.
    super::bundles::ensure_bucket(&jetstream)
        .await
        .map_err(|e| anyhow::anyhow!("creating the policy bundle bucket: {e}"))?;
    // Each ingest writer holds a connection while it stores; the API keeps its own share.
    let connections = store::SHARED_CONNECTIONS + u32::try_from(config.ingest.writers).unwrap_or(u32::MAX);
    let pool = store::open_sized(&config.database_url, connections)
        .await
        .context("opening PostgreSQL and migrating its schema")?;
    tracing::info!(migrations = store::MIGRATOR.iter().count(), "PostgreSQL schema up to date");
    let consumer = ingest::consumer(&jetstream, &config.ingest)
        .await
        .map_err(|e| anyhow::anyhow!("creating the consumer {}: {e}", ingest::CONSUMER))?;
    let hub = Hub { config: Arc::new(config), pool, jetstream };

    let (trigger, shutdown) = shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();
    let ingest_stats = Arc::new(ingest::IngestStats::default());
    tasks.spawn(ingest::run(hub.clone(), consumer, ingest_stats.clone(), shutdown.clone()));
    let (api_hub, api_shutdown) = (hub.clone(), shutdown.clone());
    tasks.spawn(async move {
        // Ends early only when it cannot serve (address taken, bad TLS files).
        if let Err(error) = api::serve(api_hub, ingest_stats, api_shutdown).await {
            tracing::error!(%error, "the fleet API stopped");
        }
    });

    // Every task runs until shutdown: one that ends (panics) before stops the hub rather than
    // leave it serving without ingesting.
    let failed = tokio::select! {
        () = shutdown::signal() => None,
        ended = tasks.join_next() => Some(ended),
    };
    trigger.trigger();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    // Acknowledgements still in the client's buffer reach the broker before it closes.
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "acknowledgements not flushed; those reports will be redelivered");
    }
    hub.pool.close().await;
    match drained {
        Ok(()) => tracing::info!("all tasks stopped"),
        Err(_) => tracing::warn!(grace = ?SHUTDOWN_GRACE, "tasks did not stop in time; exiting anyway"),
    }
    match failed {
        None => Ok(()),
        Some(Some(Err(error))) => Err(anyhow::anyhow!("a hub task failed: {error}")),
        Some(_) => Err(anyhow::anyhow!("a hub task stopped before shutdown")),
    }
}
