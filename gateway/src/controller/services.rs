//! The services beside the packet path: identity (EST enrollment; access follows
//! certificates), integrations (SIEM/SOAR/ITSM sinks), OTA and, in a fleet, the hub's commands.
//! EST and OTA are for devices: they listen on the LAN side unless their `listen` says otherwise.
use anyhow::Context as _;

use crate::{
    config::Config, datapath::Control, datapath::interface, event::EventBus, integrations::Integrations,
    shutdown::Shutdown,
};

/// The running services, to drain at shutdown.
pub(super) struct Services {
    identity: Option<crate::identity::service::Running>,
    pub integrations: Integrations,
    ota: Option<crate::ota::Running>,
    fleet_commands: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the enabled services; fails start-up when one cannot start.
pub(super) async fn start(
    config: &Config,
    control: Control,
    bus: &EventBus,
    shutdown: &Shutdown,
) -> anyhow::Result<Services> {
    let lan_addresses = interface::interface_addresses(&config.datapath.lan_interface).unwrap_or_default();
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
    let integrations =
        crate::integrations::spawn(config.integrations.clone(), &config.store.path, bus.clone(), shutdown.clone())
            .context("starting integrations")?;
    let ota = if config.ota.enabled {
        let mut ota_config = config.ota.clone();
        ota_config.listen = interface::lan_side(ota_config.listen, &lan_addresses, crate::ota::DEFAULT_PORT);
        let running = crate::ota::spawn(&ota_config, &config.store.path, bus.clone(), shutdown.clone())
            .await
            .context("starting the OTA service")?;
        Some(running)
    } else {
        None
    };
    let fleet_commands = if config.fleet.enabled() {
        let client = crate::fleet::connect::connect_gateway(&config.fleet).await.context("connecting to the fleet")?;
        let spawned = crate::fleet::commands::spawn(
            &config.fleet,
            client,
            &config.store.path,
            control,
            bus.clone(),
            shutdown.clone(),
        );
        Some(spawned.context("starting fleet commands")?)
    } else {
        None
    };
    Ok(Services { identity, integrations, ota, fleet_commands })
}

impl Services {
    /// Waits for every service to stop (after the shutdown signal).
    pub async fn join(self) {
        if let Some(identity) = self.identity {
            identity.join().await;
        }
        self.integrations.join().await;
        if let Some(ota) = self.ota {
            let _ = ota.handle.await;
        }
        if let Some(fleet_commands) = self.fleet_commands {
            let _ = fleet_commands.await;
        }
    }
}
