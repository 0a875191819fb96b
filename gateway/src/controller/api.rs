//! The local API step: status, devices, alerts, actions, metrics and the policy in force over
//! HTTP(S), with the SOAR actions mounted on it (`/api/v1/soar`) and the web console beside it
//! (`/`, `/console/*`). The API and SOAR write through the same action lock and failure limiter.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    api::{ApiState, SharedPolicy, inventory_directory::InventoryDirectory, metrics::Metrics, model, soar},
    config::Config,
    datapath::{Control, loader::Attachment},
    event::EventBus,
    shutdown::Shutdown,
};

/// What the API shows and acts on.
pub(super) struct Parts {
    pub control: Control,
    pub metrics: Arc<Metrics>,
    pub policy: Arc<SharedPolicy>,
    pub bus: EventBus,
    /// Where the alert recorder's store announces what it committed (`ApiState::alert_changes`).
    pub alert_changes: crate::alerts::Changes,
    /// The detection loop, told of what analysts learn as normal (the API keeps it weakly).
    pub pipeline: tokio::sync::mpsc::Sender<crate::pipeline::Command>,
}

/// Binds the API (failing start-up when it cannot) and returns the server, which runs until
/// shutdown.
pub(super) async fn bind(
    config: &Config,
    attachments: &[Attachment],
    parts: Parts,
    shutdown: Shutdown,
) -> anyhow::Result<impl std::future::Future<Output = ()> + use<>> {
    let directory = InventoryDirectory::open(&config.store.path).context("opening the store for the API")?;
    let interfaces = attachments
        .iter()
        .map(|a| model::AttachedInterface {
            name: a.interface.clone(),
            role: if a.program == gateway_ebpf::programs::LAN_INGRESS { "lan".into() } else { "wan".into() },
            mode: a.mode.to_owned(),
        })
        .collect();
    let state = ApiState::new(&config.api, Arc::new(directory), parts.control.clone())
        .context("API tokens")?
        .with_alert_changes(parts.alert_changes)
        .with_metrics(parts.metrics)
        .with_policies(parts.policy)
        .with_events(parts.bus.clone())
        .with_alerts(
            crate::alerts::AlertStore::open(&config.store.path).context("opening the alert store for the API")?,
        )
        .with_ota(
            crate::store::open(&config.store.path, &[crate::ota::MIGRATIONS])
                .context("opening the OTA tables for the API")?,
        )
        .with_shutdown(shutdown.clone())
        .with_pipeline(&parts.pipeline)
        .with_interfaces(interfaces);
    let soar = soar::SoarState::new(&config.integrations, &config.store.path, parts.control, parts.bus)
        .context("opening the store for SOAR actions")?
        .with_action_lock(state.action_lock())
        .with_failure_limiter(state.failure_limiter());
    let app = crate::api::router(state).merge(crate::console::router()).nest("/api/v1/soar", soar::router(soar));
    let tls = crate::api::tls_config(&config.api).context("the API's TLS certificate")?;
    let listener = crate::api::bind(&config.api).await.context("binding the API")?;
    Ok(async move {
        if let Err(error) = crate::api::serve_on(listener, app, tls, shutdown).await {
            tracing::error!(%error, "API server stopped");
        }
    })
}
