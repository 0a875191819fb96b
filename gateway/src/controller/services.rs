//! The services beside the packet path: identity (EST enrollment; access follows
//! certificates), integrations (SIEM/SOAR/ITSM sinks), OTA and the fleet's policy bundles.
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
    bundles: Option<tokio::task::JoinHandle<()>>,
    /// The fleet policy bundles the watcher asks the policy step to install.
    pub bundle_installs: Option<crate::fleet::bundle_watch::Installs>,
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
            control,
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
    let bundle_status = crate::fleet::SharedBundleStatus::default();
    let (bundles, bundle_installs) = crate::fleet::bundle_watch::spawn(
        &config.fleet,
        &config.policy.dir,
        bus.clone(),
        bundle_status,
        shutdown.clone(),
    )
    .await
    .context("starting the policy bundle watcher")?
    .unzip();
    Ok(Services { identity, integrations, ota, bundles, bundle_installs })
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
        if let Some(bundles) = self.bundles {
            let _ = bundles.await;
        }
    }
}
