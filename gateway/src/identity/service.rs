//! The identity component's async side: opens the core, starts the EST server and the access
//! task, and turns outcomes into `GatewayEvent`s.
//!
//! Reads the store file and the CA files (through `core`), the datapath (through
//! `DeviceControl::access`); writes the device table (`DeviceControl::set_access`) and
//! publishes on the `EventBus`. SQLite and map calls run on the blocking pool, never on the
//! async workers.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::{sync::Notify, task::JoinHandle};

use super::{
    Config,
    core::{Authenticated, Enrolled, Identity, IdentityError},
    enforce::{Change, Enforcer},
    est,
    resolve::{MacResolver, NeighborTable, NoResolver},
};
use crate::{
    datapath::{AccessLedger, Control, DeviceControl},
    device::{Access, Mac},
    event::{EventBus, EventKind, GatewayEvent, Severity},
    shutdown::Shutdown,
};

/// Why the identity service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("CA: {0}")]
    Ca(#[from] super::ca::CaError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// Neither `identity.listen` nor a LAN interface address says where to listen.
    #[error("identity.listen is unset and the LAN interface has no address to bind the EST server to")]
    NoListenAddress,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The CA bundle cannot be encoded for `/cacerts`.
    #[error("CA bundle: {0}")]
    Bundle(#[from] super::pkcs7::WireError),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Join(String),
}

/// What the EST handlers and the access task share.
pub struct Shared {
    pub(crate) core: Mutex<Identity>,
    pub(crate) bus: EventBus,
    /// Wakes the access task at once after an enrollment, renewal or authentication.
    pub(crate) changed: Notify,
    pub(crate) resolver: Box<dyn MacResolver>,
    /// The `/cacerts` answer (certs-only PKCS#7 DER), fixed for the life of the process.
    pub(crate) cacerts: Vec<u8>,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Identity> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back on
        // drop), so a poisoned lock is still safe to use.
        self.core.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running service.
pub struct Running {
    /// Where the EST server listens (the real port when the config asked for port 0).
    pub local_addr: SocketAddr,
    /// The issuing CA certificate, the trust anchor devices need.
    pub ca_cert: CertificateDer<'static>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every task has stopped (after shutdown).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the identity service: the EST server on `config.listen` and the access task that
/// keeps the device table in line with the registry (enrollment, renewal, expiry,
/// revocation, decommission, clone holds — including changes made by `iotgw pki` on the store
/// file) within `config.reconcile_interval_ms`.
pub async fn spawn(
    config: &Config,
    store_path: &Path,
    control: Control,
    bus: EventBus,
    shutdown: Shutdown,
) -> Result<Running, ServiceError> {
    let resolver: Box<dyn MacResolver> =
        if config.resolve_macs { Box::new(NeighborTable::default()) } else { Box::new(NoResolver) };
    spawn_with_resolver(config, store_path, control, bus, shutdown, resolver).await
}

/// `spawn`, with the peer-address → MAC lookup given (tests, DHCP-lease tables).
pub async fn spawn_with_resolver(
    config: &Config,
    store_path: &Path,
    control: Control,
    bus: EventBus,
    shutdown: Shutdown,
    resolver: Box<dyn MacResolver>,
) -> Result<Running, ServiceError> {
    let (config_for_open, path): (Config, PathBuf) = (config.clone(), store_path.to_owned());
    let identity = blocking(move || super::open(&config_for_open, &path)).await??;
    let tls =
        est::tls_config(identity.ca(), identity.manufacturers(), &config.server_names, OffsetDateTime::now_utc())?;
    let ca_cert = identity.ca().cert_der().clone();
    let cacerts = super::pkcs7::certs_only(&identity.ca().bundle())?;
    let listen = config.listen.ok_or(ServiceError::NoListenAddress)?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| ServiceError::Bind { addr: listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServiceError::Bind { addr: listen, source })?;
    tracing::info!(addr = %local_addr, "identity: EST server listening");
    let limits = est::Limits {
        handshake: StdDuration::from_millis(config.handshake_timeout_ms),
        headers: StdDuration::from_millis(config.header_timeout_ms),
        connection: StdDuration::from_millis(config.connection_timeout_ms),
        admission: super::admission::Admission::new(config.admission_limits()),
    };
    let shared = Arc::new(Shared { core: Mutex::new(identity), bus, changed: Notify::new(), resolver, cacerts });
    let enforcer = Enforcer::new(config.enrolled_policy_id);
    // Its own connection: access changes are recorded (and audited) in the inventory.
    let path = store_path.to_owned();
    let ledger: Box<dyn AccessLedger> = Box::new(blocking(move || crate::inventory::Ledger::open(&path)).await??);
    let interval = StdDuration::from_millis(config.reconcile_interval_ms);
    let tasks = vec![
        tokio::spawn(est::serve(listener, tls, shared.clone(), limits, shutdown.clone())),
        tokio::spawn(access_task(shared, control, enforcer, ledger, interval, shutdown)),
    ];
    Ok(Running { local_addr, ca_cert, tasks })
}

/// Runs `work` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ServiceError::Join(e.to_string()))
}

/// Keeps the device table in line with the registry: on every tick (expiry, CLI changes seen
/// through the store file) and at once when an EST handler changed something.
async fn access_task(
    shared: Arc<Shared>,
    control: Control,
    enforcer: Enforcer,
    ledger: Box<dyn AccessLedger>,
    interval: StdDuration,
    mut shutdown: Shutdown,
) {
    let enforcer = Arc::new(Mutex::new((enforcer, ledger)));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.changed.notified() => {}
            () = shutdown.wait() => break,
        }
        let (shared, control, enforcer) = (shared.clone(), control.clone(), enforcer.clone());
        let outcome = blocking(move || {
            let mut guard = enforcer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (enforcer, ledger) = &mut *guard;
            reconcile(&shared, &*control, enforcer, ledger.as_mut(), OffsetDateTime::now_utc())
        })
        .await;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "identity: access check failed"),
            Err(error) => tracing::error!(%error, "identity: access task failed"),
        }
    }
    tracing::info!("identity: access task stopped");
}

/// Who the store's audit names for identity's access changes.
pub const ACTOR_IDENTITY: &str = "identity";

/// One pass: desired access from the registry, applied to the datapath and recorded in the
/// store. Returns the changes that took effect.
pub fn reconcile(
    shared: &Shared,
    control: &dyn DeviceControl,
    enforcer: &mut Enforcer,
    ledger: &mut dyn AccessLedger,
    now: OffsetDateTime,
) -> Result<Vec<Change>, IdentityError> {
    let desired = shared.lock().desired_access(now)?;
    let plan = enforcer.plan(&desired, |mac| control.access(mac).ok().flatten());
    Ok(apply(plan, control, enforcer, ledger, &shared.bus))
}

/// Writes each planned change to the device table, records it through `ledger` (the same
/// audited path as the API's and respond's changes, so a restart restores it), and publishes
/// its event.
pub fn apply(
    plan: Vec<Change>,
    control: &dyn DeviceControl,
    enforcer: &mut Enforcer,
    ledger: &mut dyn AccessLedger,
    bus: &EventBus,
) -> Vec<Change> {
    let mut applied = Vec::with_capacity(plan.len());
    for change in plan {
        match control.set_access(change.mac, change.to) {
            Ok(()) => {
                enforcer.applied(&change);
                tracing::info!(device = %change.mac, access = %change.to.access, "identity: access changed");
                let (_, _, reason) = describe(&change);
                if let Err(error) = ledger.record_change(change.mac, change.to, ACTOR_IDENTITY, reason) {
                    // Enforced all the same (a clone block must not wait for the disk); a
                    // restart before the next change would not restore it.
                    tracing::error!(device = %change.mac, %error, "identity: access changed but not recorded in the store");
                }
                bus.publish(access_event(&change));
                applied.push(change);
            }
            // Not recorded as applied: the next tick tries again.
            Err(error) => tracing::warn!(device = %change.mac, %error, "identity: cannot set access"),
        }
    }
    applied
}

/// The action name, severity and reason of an access change.
fn describe(change: &Change) -> (&'static str, Severity, &'static str) {
    match change.to.access {
        Access::Enrolled => ("enroll", Severity::Info, "holds a valid certificate and authenticated with it"),
        Access::Blocked => ("block", Severity::High, "suspected identity cloning, held until an operator decides"),
        Access::Onboarding => {
            ("onboard", Severity::Low, "no valid certificate (expired, revoked, suspended or not yet used)")
        }
        _ => ("unenroll", Severity::Low, "identity decommissioned or hold released"),
    }
}

fn access_event(change: &Change) -> GatewayEvent {
    let (action, severity, reason) = describe(change);
    GatewayEvent::new(
        severity,
        Some(change.mac),
        "identity",
        EventKind::Action { action: action.into(), reason: reason.into() },
    )
}

/// Events for a certificate issued by simpleenroll or simplereenroll.
pub(crate) fn publish_issued(bus: &EventBus, enrolled: &Enrolled, renewal: bool) {
    let detail = format!(
        "certificate {} issued to device {} (MAC {}), valid until {}{}",
        enrolled.issued.serial,
        enrolled.device,
        enrolled.mac,
        enrolled.issued.not_after,
        if enrolled.superseded.is_empty() {
            String::new()
        } else {
            format!(", superseding {:?}", enrolled.superseded.iter().map(ToString::to_string).collect::<Vec<_>>())
        }
    );
    let action = if renewal { "certificate_renewed" } else { "certificate_issued" };
    bus.publish(GatewayEvent::new(
        Severity::Info,
        Some(enrolled.mac),
        "enrollment",
        EventKind::Audit { action: action.into(), detail },
    ));
}

pub(crate) fn publish_authenticated(bus: &EventBus, auth: &Authenticated) {
    if auth.from != auth.to {
        bus.publish(GatewayEvent::new(
            Severity::Info,
            Some(auth.mac),
            "mtls",
            EventKind::Lifecycle { from: auth.from.to_string(), to: auth.to.to_string() },
        ));
    }
}

/// Events for a refused request; a suspected clone is an alert.
pub(crate) fn publish_refusal(bus: &EventBus, error: &IdentityError, peer: Option<Mac>, endpoint: &str) {
    if let IdentityError::CloneSuspected { seen, device, bound } = error {
        bus.publish(GatewayEvent::new(
            Severity::Critical,
            Some(*seen),
            "detector:identity_clone",
            EventKind::Alert {
                incident_id: uuid::Uuid::new_v4().to_string(),
                detector: "identity_clone".into(),
                score: 1.0,
                expected: format!("device {device} presents its certificate from MAC {bound}"),
                observed: format!("MAC {seen} presented device {device}'s certificate; MACs {seen} and {bound} blocked until an operator releases them"),
                flows: Vec::new(),
                resolved: false,
            },
        ));
        return;
    }
    bus.publish(GatewayEvent::new(
        Severity::Low,
        peer,
        "enrollment",
        // Refusals quote what the requester sent (SANs, tokens' names): escaped (`untrusted`).
        EventKind::Audit {
            action: format!("{endpoint}_refused"),
            detail: crate::untrusted::escape(&error.to_string()).into_owned(),
        },
    ));
}

/// The alert for a source refused by the EST listener's per-source limits: a device that
/// hammers enrollment (or something spoofing one) is worth an analyst's look.
pub(crate) fn publish_admission_alert(
    bus: &EventBus,
    peer: std::net::IpAddr,
    mac: Option<Mac>,
    why: super::admission::Refusal,
    refused: u64,
) {
    let who = match mac {
        Some(mac) => format!("{peer} (MAC {mac})"),
        None => peer.to_string(),
    };
    bus.publish(GatewayEvent::new(
        Severity::High,
        mac,
        "detector:est_flood",
        EventKind::Alert {
            incident_id: uuid::Uuid::new_v4().to_string(),
            detector: "est_flood".into(),
            score: 0.8,
            expected: "a device opens one or two EST connections to enroll or renew".into(),
            observed: format!(
                "{who} refused {refused} time(s) by the EST listener's per-source limits ({why}); its other connections keep their place, other devices enroll normally"
            ),
            flows: Vec::new(),
            resolved: false,
        },
    ));
}

#[cfg(test)]
mod tests {
    use gateway_ebpf::lane;

    use super::*;
    use crate::datapath::MemoryDatapath;

    #[test]
    fn identitys_access_changes_are_recorded_and_audited_in_the_inventory() {
        let control = MemoryDatapath::default();
        let mut inventory = crate::inventory::Inventory::new(
            crate::store::open_in_memory(&[crate::inventory::MIGRATIONS]).expect("store"),
            crate::inventory::Vendors::empty(),
            None,
        );
        let mut enforcer = Enforcer::new(lane::FIRST_CLASS_POLICY);
        let (enrolled, clone) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let plan = enforcer.plan(&[(enrolled, Access::Enrolled), (clone, Access::Blocked)], |_| None);
        let applied = apply(plan, &control, &mut enforcer, &mut inventory, &EventBus::default());
        assert_eq!(applied.len(), 2);
        // What a restart restores is what identity enforced.
        let stored = inventory.enforced().expect("enforced");
        for (mac, entry) in &stored {
            assert_eq!(control.access(*mac).expect("table").as_ref(), Some(entry));
        }
        assert_eq!(stored.iter().map(|(_, e)| e.access).collect::<Vec<_>>(), [Access::Enrolled, Access::Blocked]);
        let audit = inventory.audit_log(Some(clone), 10).expect("audit");
        let change = audit.iter().find(|a| a.action == "access_changed").expect("access change audited");
        assert_eq!(change.actor, ACTOR_IDENTITY);
        assert!(change.detail.starts_with("unknown -> blocked: suspected identity cloning"), "{}", change.detail);
    }
}
