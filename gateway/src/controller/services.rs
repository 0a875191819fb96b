//! The services beside the packet path: identity (EST enrollment; access follows
//! certificates), integrations (SIEM/SOAR/ITSM sinks), the fleet (reports to the hub's broker,
//! signed policy bundles and commands from it) and OTA. EST and OTA are for devices: they listen on the LAN side unless their `listen` says
//! otherwise; the fleet connects outbound only.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    api::metrics::Metrics,
    config::Config,
    datapath::{Control, interface, loader::Attachment},
    event::EventBus,
    fleet::{self, wire::MapFill},
    integrations::Integrations,
    shutdown::Shutdown,
};

/// The running services, to drain at shutdown.
pub(super) struct Services {
    identity: Option<crate::identity::service::Running>,
    pub integrations: Integrations,
    pub fleet: Option<fleet::Running>,
    ota: Option<crate::ota::Running>,
    bundles: Option<tokio::task::JoinHandle<()>>,
    fleet_commands: Option<tokio::task::JoinHandle<()>>,
    /// The fleet policy bundles the watcher asks the policy step to install.
    pub bundle_installs: Option<crate::fleet::bundle_watch::Installs>,
}

/// What the fleet's health report reads of the datapath: the XDP mode of the first attached
/// program and the fill of every sized map, as the metrics step last read it (reading it
/// again would copy the flow table out a second time).
pub(super) fn health_sources(metrics: &Arc<Metrics>, attachments: &[Attachment]) -> fleet::health::Sources {
    let metrics = metrics.clone();
    fleet::health::Sources {
        bundle: fleet::SharedBundleStatus::default(),
        xdp_mode: attachments.first().map(|a| a.mode.to_owned()),
        map_fill: Box::new(move || {
            let fill = |f: crate::datapath::fill::MapFill| MapFill {
                map: f.map.to_owned(),
                entries: f.entries,
                capacity: f.capacity,
            };
            metrics.map_fill().into_iter().map(fill).collect()
        }),
    }
}

/// Starts the enabled services; fails start-up when one cannot start.
pub(super) async fn start(
    config: &Config,
    control: Control,
    fleet_health: fleet::health::Sources,
    bus: &EventBus,
    shutdown: &Shutdown,
) -> anyhow::Result<Services> {
    let lan_addresses = interface::interface_addresses(&config.datapath.lan_interface).unwrap_or_default();
    // The bundle watcher writes what the health report reads.
    let bundle_status = fleet_health.bundle.clone();
    let identity = if config.identity.enabled {
        let mut identity_config = config.identity.clone();
        identity_config.listen =
            interface::lan_side(identity_config.listen, &lan_addresses, crate::identity::DEFAULT_PORT);
        let running = crate::identity::service::spawn(
            &identity_config,
            &config.store.path,
            control.clone(),
            bus.clone(),
            shutdown.clone(),
        )
        .await
        .context("starting the identity service")?;
        Some(running)
    } else {
        None
    };
    // One broker connection serves the fleet's parts (its credentials allow one inbox prefix).
    // The publisher is one more outbox consumer: made first, so the outbox hosts it.
    let client = if config.fleet.enabled() {
        Some(fleet::connect::connect_gateway(&config.fleet).await.context("connecting to the fleet broker")?)
    } else {
        None
    };
    let fleet = client.clone().map(|client| fleet::Fleet::new(&config.fleet, client));
    let consumers = fleet.iter().map(fleet::Fleet::publisher).collect();
    let integrations = crate::integrations::spawn_with(
        config.integrations.clone(),
        &config.store.path,
        bus.clone(),
        shutdown.clone(),
        consumers,
    )
    .context("starting integrations")?;
    let fleet = match fleet {
        Some(fleet) => {
            let outbox = integrations
                .consumer(fleet::publisher::CONSUMER)
                .context("the outbox did not start the fleet publisher")?;
            let parts = fleet::Parts { store: config.store.path.clone(), outbox, health: fleet_health };
            Some(fleet.spawn(parts, shutdown.clone()))
        }
        None => None,
    };
    let ota = if config.ota.enabled {
        let mut ota_config = config.ota.clone();
        ota_config.listen = interface::lan_side(ota_config.listen, &lan_addresses, crate::ota::DEFAULT_PORT);
        let running =
            crate::ota::spawn(&ota_config, &config.identity, &config.store.path, bus.clone(), shutdown.clone())
                .await
                .context("starting the OTA service")?;
        Some(running)
    } else {
        None
    };
    let (bundles, bundle_installs) = match &client {
        Some(client) => fleet::bundle_watch::spawn(
            &config.fleet,
            client.clone(),
            &config.policy.dir,
            bus.clone(),
            bundle_status,
            shutdown.clone(),
        )
        .context("starting the policy bundle watcher")?
        .unzip(),
        None => (None, None),
    };
    let fleet_commands = match client {
        Some(client) => Some(
            fleet::commands::spawn(&config.fleet, client, &config.store.path, control, bus.clone(), shutdown.clone())
                .context("starting fleet commands")?,
        ),
        None => None,
    };
    Ok(Services { identity, integrations, fleet, ota, bundles, bundle_installs, fleet_commands })
}

impl Services {
    /// Waits for every service to stop (after the shutdown signal).
    pub async fn join(self) {
        if let Some(identity) = self.identity {
            identity.join().await;
        }
        self.integrations.join().await;
        if let Some(fleet) = self.fleet {
            fleet.join().await;
        }
        if let Some(ota) = self.ota {
            let _ = ota.handle.await;
        }
        if let Some(bundles) = self.bundles {
            let _ = bundles.await;
        }
        if let Some(fleet_commands) = self.fleet_commands {
            let _ = fleet_commands.await;
        }
    }
}
