//! The policy step keeps the datapath's rules in step with the policy files and with DNS:
//! - reloads on SIGHUP or a change in the policy folder (a bad policy is refused whole and
//!   the running one stays in the maps);
//! - installs the policy bundles the fleet hub publishes (`fleet::bundle_watch` stages them),
//!   the same way: checked whole, then swapped in whole;
//! - puts the classes of the MUD files devices announced in force beside the files
//!   (`controller/mud.rs` asks; a class the policy refuses is answered with why);
//! - DNS answers devices receive to the queries they sent open the addresses of the names
//!   their policies allow (`policy::dns`); the others are counted per reason in `/metrics`
//!   and logged, escaped and rate-limited;
//! - rules with a `remote` get the addresses the gateway resolves (`policy::remote`),
//!   `manufacturer:` and `model:` ones those of the devices on MUD classes
//!   (`controller/mud_devices.rs`), rewritten when those change;
//! - addresses whose TTL ran out close again.
//!
//! Its heavy parts (reading, parsing and compiling the files, writing the rules: seconds for
//! 10,000 rules in a debug build) run on tokio's blocking pool (`off_worker`), so the API's
//! requests on the runtime's workers are not held up behind them; the step waits for each,
//! so reloads and writes stay one at a time and in order.
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use gateway_ebpf::GatewayConfig;
use tokio::sync::{mpsc, watch};

use crate::{
    api::{
        metrics::Metrics,
        policy_view::{PolicyInForce, SharedPolicy},
    },
    config::Config,
    datapath::{DeviceControl as _, events::PacketSample, maps::Maps},
    event::{EventBus, EventKind, GatewayEvent, Severity},
    fleet::bundle_watch::{InstallOutcome, InstallRequest, Installs},
    pipeline,
    policy::{
        CompiledPolicy, CompiledRule, DnsTracker, PolicyError, PolicyId, PolicyStore, PolicyWatcher, Verdicts,
        dns::{Outcome, Refused, policies_in_force, refusal_log::RefusalLog},
        remote::{MudDevice, remote_entries},
    },
    respond::ResponsePolicy,
    shutdown::Shutdown,
};

/// DNS samples (queries and answers) waiting for the policy step; beyond this they are
/// skipped (an answer whose query was skipped opens nothing; the next exchange for the same
/// name renews the rule).
pub const DNS_QUEUE: usize = 1_024;

/// The datapath configuration the programs enforce: interfaces from the gateway config,
/// default verdicts from the policy files.
pub fn datapath_config(config: &Config, verdicts: &Verdicts, quarantine_src_mac: [u8; 6]) -> GatewayConfig {
    let d = &config.datapath;
    GatewayConfig {
        malformed_verdict: verdicts.malformed,
        unknown_verdict: verdicts.unknown,
        policy_miss_verdict: verdicts.policy_miss,
        quarantine_verdict: verdicts.quarantine,
        sample_packets: u8::from(d.sample_packets),
        flow_events: 1,
        source_guard: config.source_guard.mode.code(),
        quarantine_dst_mac: d.quarantine_host_mac.map(|m| m.0).unwrap_or_default(),
        quarantine_src_mac,
        ..GatewayConfig::default()
    }
}

/// Writes a compiled policy into the datapath: rules (with `dns_entries`, the addresses
/// DNS-name rules currently resolve to (`DnsTracker::active`), and those of the remotes:
/// `devices` are the ones on MUD classes) first, then the verdicts and the interfaces
/// (`quarantine_src_mac` is the quarantine port's own MAC, read once at start-up). Blocks
/// (map writes, and 10,000 rules to diff at scale): the step calls it through `off_worker`.
pub fn apply_policy(
    maps: &Maps,
    config: &Config,
    policy: &CompiledPolicy,
    dns_entries: Vec<CompiledRule>,
    devices: &[MudDevice],
    quarantine_src_mac: [u8; 6],
) -> anyhow::Result<()> {
    let writing = std::time::Instant::now();
    let (mut dynamic, unresolved) = remote_entries(&policy.source, &config.policy.site(), devices);
    for reason in &unresolved {
        tracing::warn!(reason = %reason, "entries of rules with a remote were not written");
    }
    dynamic.extend(dns_entries);
    let (rules, refused) = policy.rules_with(&dynamic);
    if !refused.is_empty() {
        tracing::warn!(refused = refused.len(), "resolved entries beyond the datapath's limits were not written");
    }
    let report = maps.sync_policy(rules.iter().map(CompiledRule::to_abi)).context("writing policy rules")?;
    maps.write_config(&datapath_config(config, &policy.verdicts, quarantine_src_mac))
        .context("writing datapath config")?;
    tracing::info!(
        classes = policy.classes.len(),
        rules = policy.rules.len(),
        inserted = report.inserted,
        removed = report.removed,
        unchanged = report.unchanged,
        write_ms = writing.elapsed().as_millis() as u64,
        "policy applied"
    );
    Ok(())
}

/// Runs `work` on tokio's blocking pool and waits for it. A panic in `work` is the step's, as
/// when it ran on the step itself.
async fn off_worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => {
            std::panic::resume_unwind(error.try_into_panic().unwrap_or_else(|error| Box::new(error.to_string())))
        }
    }
}

/// Runs `work` on the policy store, off the runtime (`off_worker`).
async fn on_store<T: Send + 'static>(
    store: Arc<Mutex<PolicyStore>>,
    work: impl FnOnce(&mut PolicyStore) -> T + Send + 'static,
) -> T {
    // A panic while compiling leaves the store as it was (it swaps only a compiled policy
    // in), and is the step's own panic anyway (`off_worker`).
    off_worker(move || work(&mut store.lock().unwrap_or_else(PoisonError::into_inner))).await
}

/// The policy step's state and the parts it informs of a new policy.
pub(super) struct PolicySync {
    pub config: Arc<Config>,
    pub maps: Arc<Maps>,
    /// The quarantine port's MAC (zero without one), for every datapath config written.
    pub quarantine_src_mac: [u8; 6],
    /// Locked only by the work `on_store` runs on the blocking pool, one at a time.
    pub policy: Arc<Mutex<PolicyStore>>,
    pub dns: DnsTracker,
    /// DNS answers refused, per reason, and queries evicted.
    pub metrics: Arc<Metrics>,
    pub refusal_log: RefusalLog,
    /// The policy in force, for the class step.
    pub in_force: watch::Sender<Arc<CompiledPolicy>>,
    /// The policy in force and the last refusal, for the API.
    pub shared: Arc<SharedPolicy>,
    /// The response rules the pipeline runs (a reload whose rules are refused keeps them),
    /// for the API's snapshot.
    pub responses: ResponsePolicy,
    pub pipeline: mpsc::Sender<pipeline::Command>,
    pub bus: EventBus,
    /// Fleet policy bundles to install (`fleet::bundle_watch`), when the gateway takes them.
    pub bundles: Option<Installs>,
    /// The devices on MUD classes (`manufacturer:` and `model:` remotes).
    pub mud_devices: super::mud_devices::MudDevices,
}

impl PolicySync {
    /// Installs the SIGHUP handler and the folder watcher now (a hangup right after start-up
    /// is not lost) and returns the step, which runs until shutdown.
    pub fn run(
        mut self,
        mut dns_samples: mpsc::Receiver<PacketSample>,
        mut mud_classes: mpsc::Receiver<super::mud::GeneratedClasses>,
        mut shutdown: Shutdown,
    ) -> anyhow::Result<impl std::future::Future<Output = ()>> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let mut watcher = self.watcher();
        let mut bundles = self.bundles.take();
        let mut devices_changed = self.mud_devices.clone();
        Ok(async move {
            loop {
                let next_expiry = self.dns.next_expiry();
                let cause = tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = hangup.recv() => "SIGHUP",
                    Some(_) = async { match watcher.as_mut() { Some(w) => w.requests.recv().await, None => std::future::pending().await } } => {
                        if on_store(Arc::clone(&self.policy), |store| store.unchanged()).await {
                            tracing::debug!("policy files changed back to what is loaded; no reload");
                            continue;
                        }
                        "file change"
                    }
                    Some(request) = async { match bundles.as_mut() { Some(b) => b.recv().await, None => std::future::pending().await } } => {
                        self.install(request).await;
                        continue;
                    }
                    Some(request) = mud_classes.recv() => {
                        self.set_mud_classes(request).await;
                        continue;
                    }
                    Ok(()) = devices_changed.changed() => {
                        self.rewrite("the devices on MUD classes changed").await;
                        continue;
                    }
                    Some(sample) = dns_samples.recv() => {
                        self.dns_sample(&sample).await;
                        continue;
                    }
                    _ = async { match next_expiry { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => {
                        self.expire_dns().await;
                        continue;
                    }
                };
                self.reload(cause).await;
            }
        })
    }

    fn watcher(&self) -> Option<PolicyWatcher> {
        if !self.config.policy.watch {
            return None;
        }
        crate::policy::watch(&self.config.policy.dir)
            .inspect_err(|error| {
                tracing::warn!(%error, dir = %self.config.policy.dir.display(), "cannot watch the policy folder; SIGHUP still reloads");
            })
            .ok()
    }

    /// Queries are remembered; answers to them open the addresses of allowed names for the
    /// device's policies.
    async fn dns_sample(&mut self, sample: &PacketSample) {
        let maps = &self.maps;
        let policies = |mac| match maps.access(mac).ok().flatten() {
            Some(a) => policies_in_force(a.access, PolicyId(a.policy_id)),
            None => policies_in_force(crate::device::Access::Unknown, PolicyId::ONBOARDING),
        };
        match self.dns.sample(sample, policies, std::time::Instant::now()) {
            Outcome::Query { evicted } => self.metrics.record_dns_queries_evicted(evicted as u64),
            Outcome::Answer(update) => {
                self.metrics.record_dns_match(update.source);
                if update.added.is_empty() {
                    return;
                }
                tracing::info!(device = %sample.mac, added = update.added.len(), "DNS answer opened addresses of allowed names");
                self.rewrite("DNS answer").await;
            }
            Outcome::Refused(refused) => self.dns_refused(&refused),
            Outcome::Ignored(error) => {
                // A parser's message may quote the packet.
                let error = crate::untrusted::escape_bounded(&error.to_string(), 255);
                tracing::debug!(%error, device = %sample.mac, "DNS sample not followed");
            }
        }
    }

    /// Counts a refused answer and logs it, rate-limited, its claimed name escaped.
    fn dns_refused(&mut self, refused: &Refused) {
        self.metrics.record_dns_refusal(refused.reason);
        let Some(left_out) = self.refusal_log.admit(refused.reason, std::time::Instant::now()) else { return };
        let resolver = refused.resolver.map(|r| r.to_string()).unwrap_or_default();
        let (name, kind) = match &refused.question {
            Some(q) => (crate::untrusted::escape_bounded(&q.name, 255), q.kind.to_string()),
            None => (String::new(), String::new()),
        };
        tracing::warn!(
            reason = refused.reason.as_str(),
            device = %refused.device,
            %resolver,
            %name,
            %kind,
            left_out,
            "DNS answer refused: it opens nothing"
        );
    }

    /// Addresses whose TTL ran out close again.
    async fn expire_dns(&mut self) {
        if !self.dns.tick(std::time::Instant::now()).is_empty() {
            self.rewrite("DNS entries expired").await;
        }
    }

    /// Writes `policy` with the current DNS entries and devices on MUD classes, off the
    /// runtime.
    async fn write(&self, policy: Arc<CompiledPolicy>) -> anyhow::Result<()> {
        let devices = self.mud_devices.borrow().clone();
        let dns_entries = self.dns.active();
        let (maps, config, mac) = (Arc::clone(&self.maps), Arc::clone(&self.config), self.quarantine_src_mac);
        off_worker(move || apply_policy(&maps, &config, &policy, dns_entries, &devices, mac)).await
    }

    /// Rewrites the policy in force after its resolved entries changed (`cause`).
    async fn rewrite(&self, cause: &'static str) {
        let in_force = self.in_force.borrow().clone();
        if let Err(error) = self.write(in_force).await {
            tracing::error!(%error, cause, "rewriting the resolved policy entries");
        }
    }

    /// Reloads the policy files and tells every part; publishes a `PolicyChange` event.
    async fn reload(&mut self, cause: &str) {
        let loading = std::time::Instant::now();
        let loaded = on_store(Arc::clone(&self.policy), PolicyStore::reload).await;
        // With `write_ms` of "policy applied", where a reload's time goes (bench/scale).
        tracing::info!(
            cause,
            load_ms = loading.elapsed().as_millis() as u64,
            "policy files read, checked and compiled"
        );
        let (accepted, detail) = self.adopt(loaded, cause).await;
        let severity = if accepted { Severity::Info } else { Severity::Medium };
        self.bus.publish(GatewayEvent::new(
            severity,
            None,
            "policy-file",
            EventKind::PolicyChange { accepted, detail },
        ));
    }

    /// Installs the files a fleet bundle staged and answers the bundle watcher, which publishes
    /// the event with the bundle's actor.
    async fn install(&mut self, request: InstallRequest) {
        let installed = on_store(Arc::clone(&self.policy), PolicyStore::install).await;
        let swapped = installed.is_ok();
        let (accepted, detail) = self.adopt(installed, "fleet bundle").await;
        let _ = request.reply.send(InstallOutcome { swapped, accepted, detail });
    }

    /// Puts a new set of MUD classes in force with the files in force, and answers whether it
    /// did, or why not.
    async fn set_mud_classes(&mut self, request: super::mud::GeneratedClasses) {
        let sources = request.sources;
        let loaded = on_store(Arc::clone(&self.policy), move |store| store.set_generated(sources)).await;
        let (accepted, detail) = self.adopt(loaded, "MUD class").await;
        let severity = if accepted { Severity::Info } else { Severity::Medium };
        self.bus.publish(GatewayEvent::new(
            severity,
            None,
            crate::inventory::mud::ACTOR_MUD,
            EventKind::PolicyChange { accepted, detail: detail.clone() },
        ));
        let _ = request.reply.send(if accepted { Ok(()) } else { Err(detail) });
    }

    /// Puts a newly loaded policy in force in every part, or records why not: whether it was
    /// accepted, and what was done or why not.
    async fn adopt(&mut self, loaded: Result<Arc<CompiledPolicy>, Vec<PolicyError>>, cause: &str) -> (bool, String) {
        match loaded {
            Ok(compiled) => {
                self.in_force.send_replace(compiled.clone());
                self.dns.set_policy(&compiled);
                let outcome = self.write(Arc::clone(&compiled)).await;
                // `policy.reload` checked the response rules with the rest.
                let responses = crate::respond::rules::from_policy(&compiled.source);
                if let Ok(running) = &responses {
                    self.responses = running.clone();
                }
                // The API's view is built when it is read; its version hash (a pass over
                // every rule) is taken here, off the runtime too.
                let (policy, responses_shown) = (Arc::clone(&compiled), self.responses.clone());
                self.shared.set(off_worker(move || PolicyInForce::new(policy, responses_shown)).await);
                let refused = match (&outcome, &responses) {
                    (Err(error), _) => {
                        Some(format!("reload on {cause} could not be written to the datapath: {error:#}"))
                    }
                    (Ok(()), Err(error)) => {
                        Some(format!("reload on {cause}: response rules refused, the running ones stay: {error}"))
                    }
                    (Ok(()), Ok(_)) => None,
                };
                if let Ok(responses) = responses {
                    let _ = self.pipeline.send(pipeline::Command::SetPolicy(responses)).await;
                }
                match refused {
                    None => (
                        true,
                        format!(
                            "reloaded on {cause}: {} classes, {} rules",
                            compiled.classes.len(),
                            compiled.rules.len()
                        ),
                    ),
                    Some(detail) => {
                        tracing::error!(%detail, "policy reload only partly applied");
                        self.shared.refused(detail.clone());
                        (false, detail)
                    }
                }
            }
            Err(errors) => {
                for error in &errors {
                    tracing::error!(%error, "policy refused");
                }
                let detail = format!(
                    "reload on {cause} refused ({} error(s)), the running policy stays: {}",
                    errors.len(),
                    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                );
                self.shared.refused(detail.clone());
                tracing::warn!(cause, errors = errors.len(), %detail, "policy reload refused; the running policy stays");
                (false, detail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::api::tests::{Fixture, Server, VIEWER_TOKEN};

    /// Classes and rules of `large_policy`: the size of bench/scale's policy.
    const CLASSES: u32 = 10;
    const RULES_PER_CLASS: u32 = 1_000;

    /// Ten classes of 1,000 `/32` TCP rules each, as bench/scale writes them.
    fn large_policy() -> String {
        let mut text = String::new();
        for class in 0..CLASSES {
            text.push_str(&format!("[[class]]\nname = \"scale-{class}\"\nid = {}\n", class + 1));
            for rule in 0..RULES_PER_CLASS {
                let (hi, lo) = (rule / 250, rule % 250);
                text.push_str(&format!(
                    "[[class.allow]]\nnets = [\"10.{}.{hi}.{lo}/32\"]\nprotocol = \"tcp\"\nports = [443]\n",
                    100 + class
                ));
            }
        }
        text
    }

    /// While the step reloads 10,000 rules, the runtime still serves API requests: on a runtime
    /// of one thread, a request asked after the reload started is answered before it ends.
    /// With the compile on the runtime's thread, the request would wait for all of it.
    #[test]
    fn api_requests_are_answered_while_a_large_policy_compiles() {
        let dir = crate::api::tests::TempDir::new();
        std::fs::write(dir.0.join("scale.toml"), large_policy()).expect("policy file");
        let store = PolicyStore::open(&dir.0, crate::respond::rules::policy_errors).expect("the large policy loads");
        let store = Arc::new(Mutex::new(store));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let fixture = Fixture::new();
            let server = Server::start(fixture.directory(), false).await;
            let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
            let reloading = Instant::now();
            let reload = tokio::spawn(on_store(Arc::clone(&store), PolicyStore::reload));
            let response = client
                .get(format!("{}/api/v1/status", server.base))
                .bearer_auth(VIEWER_TOKEN)
                .send()
                .await
                .expect("status request");
            let answered = reloading.elapsed();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            let reload_ended = reload.is_finished();
            let reloaded = reload.await.expect("reload task").expect("the large policy reloads");
            let reload_took = reloading.elapsed();
            assert!(
                !reload_ended,
                "the request was answered after {answered:?}, once the reload had ended ({reload_took:?}): it waited for the compile"
            );
            assert!(reloaded.rules.len() >= (CLASSES * RULES_PER_CLASS) as usize, "{} rules", reloaded.rules.len());
            server.stop().await;
        });
    }
}
