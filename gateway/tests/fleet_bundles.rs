//! Policy bundles reach a gateway through a real nats-server (JetStream KV, created as the hub
//! creates it): the watcher verifies each bundle and has it installed by a policy step that
//! serves install requests with the real `PolicyStore` (the controller's, without XDP). A good
//! bundle changes the policy in force and the files on disk; a bad signature, another key, the
//! wrong scope, an older version and a policy that fails the checks are each refused with their
//! reason while the policy in force stays; a watcher started late catches up to the latest
//! bundle and a restarted one re-applies nothing.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use iotgw::{
    event::{EventBus, EventKind, GatewayEvent},
    fleet::{
        SharedBundleStatus,
        bundle::{Bundle, Scope},
        bundle_watch::{self, InstallOutcome, Installs, Watcher},
        connect::{self, Endpoint},
    },
    policy::{CompiledPolicy, PolicyStore},
    shutdown,
};
use iotgw_test_support::services::{NatsServer, Scratch, scratch};
use tokio::sync::{broadcast, watch};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
const WAIT: Duration = Duration::from_secs(15);
const DOORBELL: &str = "[[class]]\nname = \"doorbell\"\nid = 99\n";
const LOCK: &str = "[[class]]\nname = \"lock\"\nid = 98\n";
/// Collides with the shipped camera class: fails the checks.
const DUPLICATE_CAMERA: &str = "[[class]]\nname = \"camera\"\nid = 97\n";

/// The shipped policy files plus `extra` (`name`, text).
fn policy_files(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for path in iotgw::policy::load::toml_files(Path::new(SHIPPED)).expect("policies/") {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        files.insert(name, std::fs::read_to_string(&path).expect("read"));
    }
    for (name, text) in extra {
        files.insert((*name).to_owned(), (*text).to_owned());
    }
    files
}

fn signed(scope: &Scope, version: u64, files: BTreeMap<String, String>, key: &ed25519_dalek::SigningKey) -> Bundle {
    let mut bundle = Bundle::new(scope.clone(), version, 1_700_000_000_000, "alice", files);
    bundle.sign(key).expect("sign");
    bundle
}

fn new_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
}

/// A policy folder (the shipped files), the policy step serving installs on it, and the bucket.
struct Gateway {
    _nats: NatsServer,
    dir: Scratch,
    js: jetstream::Context,
    bucket: kv::Store,
    key: ed25519_dalek::SigningKey,
    /// The policy in force, once `watch` started a policy step.
    in_force: Option<watch::Receiver<Arc<CompiledPolicy>>>,
    installs_served: Arc<AtomicUsize>,
    status: SharedBundleStatus,
    bus: EventBus,
    events: broadcast::Receiver<GatewayEvent>,
}

/// The policy step's part in a bundle install, as `controller::policy_sync` does it without
/// the datapath: `PolicyStore::install`, then the answer.
fn serve_installs(
    mut store: PolicyStore,
    mut requests: Installs,
) -> (watch::Receiver<Arc<CompiledPolicy>>, Arc<AtomicUsize>) {
    let (in_force, in_force_rx) = watch::channel(store.current());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            count.fetch_add(1, Ordering::SeqCst);
            let outcome = match store.install() {
                Ok(compiled) => {
                    let detail = format!("{} classes", compiled.classes.len());
                    in_force.send_replace(compiled);
                    InstallOutcome { swapped: true, accepted: true, detail }
                }
                Err(errors) => InstallOutcome {
                    swapped: false,
                    accepted: false,
                    detail: errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                },
            };
            let _ = request.reply.send(outcome);
        }
    });
    (in_force_rx, served)
}

impl Gateway {
    async fn start() -> Self {
        let nats = NatsServer::start();
        let url = nats.url();
        let client = connect::connect(&Endpoint {
            url: &url,
            name: "test",
            credentials: None,
            tls_ca: None,
            inbox_prefix: None,
        })
        .await
        .expect("connect");
        let js = jetstream::new(client);
        let bucket = iotgw::hub::bundles::ensure_bucket(&js).await.expect("bucket");
        let dir = scratch("bundle-policies");
        for (name, text) in policy_files(&[]) {
            std::fs::write(dir.join(name), text).expect("write");
        }
        let bus = EventBus::default();
        let events = bus.subscribe();
        Self {
            _nats: nats,
            dir,
            js,
            bucket,
            key: new_key(),
            in_force: None,
            installs_served: Arc::default(),
            status: SharedBundleStatus::default(),
            bus,
            events,
        }
    }

    /// Starts a watcher for site `s1` and `groups`, with a fresh policy step over the folder;
    /// returns what stops it.
    fn watch(&mut self, groups: &[&str]) -> shutdown::Trigger {
        let store = PolicyStore::open(&self.dir, iotgw::respond::rules::policy_errors).expect("policy folder");
        let (installs, requests) = tokio::sync::mpsc::channel(1);
        let (in_force, served) = serve_installs(store, requests);
        self.in_force = Some(in_force);
        self.installs_served = served;
        let mut precedence = vec![Scope::Site("s1".into())];
        precedence.extend(groups.iter().map(|group| Scope::Group((*group).into())));
        let watcher = Watcher::new(
            self.key.verifying_key(),
            precedence,
            &self.dir,
            self.status.clone(),
            self.bus.clone(),
            installs,
        );
        let (trigger, shutdown) = shutdown::channel();
        tokio::spawn(watcher.run(self.js.clone(), shutdown));
        trigger
    }

    async fn put(&self, key: &str, bundle: &Bundle) {
        self.bucket.put(key, bundle.encode().into()).await.expect("put");
    }

    /// The next policy change the watcher published: (accepted, detail, actor).
    async fn next_change(&mut self) -> (bool, String, String) {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("bus");
                if let EventKind::PolicyChange { accepted, detail } = event.kind {
                    return (accepted, detail, event.actor);
                }
            }
        };
        tokio::time::timeout(WAIT, wait).await.expect("a policy change within the wait")
    }

    fn classes(&self) -> Vec<String> {
        let in_force = self.in_force.as_ref().expect("a policy step");
        in_force.borrow().classes.iter().map(|class| class.name.clone()).collect()
    }

    fn on_disk(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    fn enforced(&self) -> (Option<u64>, Option<String>) {
        let status = self.status.lock().unwrap();
        (status.enforced, status.refused.as_ref().map(|r| r.reason.clone()))
    }
}

#[tokio::test]
async fn a_good_bundle_is_enforced_and_every_bad_one_is_refused_while_it_stays() {
    let mut gateway = Gateway::start().await;
    let _watching = gateway.watch(&[]);
    let site = Scope::Site("s1".into());

    let v1 = signed(&site, 1, policy_files(&[("zz-doorbell.toml", DOORBELL)]), &gateway.key);
    gateway.put("site.s1", &v1).await;
    let (accepted, detail, actor) = gateway.next_change().await;
    assert!(accepted, "{detail}");
    assert_eq!(actor, "hub:alice");
    assert!(detail.contains("site:s1 v1 enforced"), "{detail}");
    assert!(gateway.classes().contains(&"doorbell".to_owned()));
    assert!(gateway.on_disk("zz-doorbell.toml"));
    assert_eq!(gateway.enforced(), (Some(1), None));

    let v2 = signed(&site, 2, policy_files(&[("zz-lock.toml", LOCK)]), &gateway.key);
    let mut altered = v2.clone();
    altered.files.insert("zz-lock.toml".into(), DOORBELL.into());
    let other_key = signed(&site, 2, policy_files(&[("zz-lock.toml", LOCK)]), &new_key());
    let wrong_scope = signed(&Scope::Group("retail".into()), 2, policy_files(&[]), &gateway.key);
    let refusals = [
        (altered, "signature does not verify"),
        (other_key, "signature does not verify"),
        (wrong_scope, "it was put under site.s1, not group.retail"),
    ];
    for (bundle, reason) in refusals {
        gateway.put("site.s1", &bundle).await;
        let (accepted, detail, _) = gateway.next_change().await;
        assert!(!accepted && detail.contains(reason), "{detail} should say {reason}");
        assert_eq!(gateway.enforced(), (Some(1), Some(detail)));
        assert!(gateway.classes().contains(&"doorbell".to_owned()), "the enforced policy stays");
        assert!(gateway.on_disk("zz-doorbell.toml") && !gateway.on_disk("zz-lock.toml"));
    }

    gateway.put("site.s1", &v2).await;
    let (accepted, detail, _) = gateway.next_change().await;
    assert!(accepted, "{detail}");
    assert!(gateway.classes().contains(&"lock".to_owned()) && !gateway.classes().contains(&"doorbell".to_owned()));
    assert!(!gateway.on_disk("zz-doorbell.toml"), "the bundle replaces the whole folder");
    assert_eq!(gateway.enforced(), (Some(2), None), "a good bundle clears the refusal");

    let older = signed(&site, 1, policy_files(&[("zz-doorbell.toml", DOORBELL)]), &gateway.key);
    gateway.put("site.s1", &older).await;
    let (accepted, detail, actor) = gateway.next_change().await;
    assert!(!accepted && detail.contains("older than the enforced v2"), "{detail}");
    assert_eq!(actor, "hub:alice");

    let failing = signed(&site, 3, policy_files(&[("zz-camera.toml", DUPLICATE_CAMERA)]), &gateway.key);
    gateway.put("site.s1", &failing).await;
    let (accepted, detail, _) = gateway.next_change().await;
    assert!(!accepted && detail.contains("duplicate class \"camera\""), "{detail}");
    assert!(detail.contains("zz-camera.toml:2:8"), "says where: {detail}");
    assert_eq!(gateway.status.lock().unwrap().refused.as_ref().map(|r| r.version), Some(3));
    assert_eq!(gateway.enforced().0, Some(2));
    assert!(gateway.classes().contains(&"lock".to_owned()), "the enforced policy stays");
    assert!(!gateway.on_disk("zz-camera.toml") && gateway.on_disk("zz-lock.toml"));
    let reloaded = iotgw::policy::reload(&gateway.dir, iotgw::respond::rules::policy_errors).expect("folder intact");
    assert!(reloaded.class("lock").is_some());
}

#[tokio::test]
async fn a_late_watcher_catches_up_to_the_latest_and_a_restart_reapplies_nothing() {
    let mut gateway = Gateway::start().await;
    let site = Scope::Site("s1".into());
    let v1 = signed(&site, 1, policy_files(&[("zz-doorbell.toml", DOORBELL)]), &gateway.key);
    let v2 = signed(&site, 2, policy_files(&[("zz-lock.toml", LOCK)]), &gateway.key);
    gateway.put("site.s1", &v1).await;
    gateway.put("site.s1", &v2).await;

    let first = gateway.watch(&["retail"]);
    let (accepted, detail, _) = gateway.next_change().await;
    assert!(accepted && detail.contains("site:s1 v2 enforced"), "{detail}");
    assert_eq!(gateway.installs_served.load(Ordering::SeqCst), 1, "straight to the latest");
    assert_eq!(bundle_watch::read_enforced(&gateway.dir).map(|e| (e.scope, e.version)), Some((site.clone(), 2)));
    first.trigger();

    // Restarted: v2 is already enforced; a group bundle is overridden by the site's; only the
    // next site bundle is installed.
    let _second = gateway.watch(&["retail"]);
    let group = signed(&Scope::Group("retail".into()), 7, policy_files(&[]), &gateway.key);
    gateway.put("group.retail", &group).await;
    let v3 = signed(&site, 3, policy_files(&[]), &gateway.key);
    gateway.put("site.s1", &v3).await;
    let (accepted, detail, _) = gateway.next_change().await;
    assert!(accepted && detail.contains("site:s1 v3 enforced"), "{detail}");
    assert_eq!(gateway.installs_served.load(Ordering::SeqCst), 1, "neither v2 again nor the group's");
    assert_eq!(gateway.enforced(), (Some(3), None));
}

#[tokio::test]
async fn a_group_bundle_is_enforced_until_the_site_has_its_own() {
    let mut gateway = Gateway::start().await;
    let _watching = gateway.watch(&["retail"]);
    let group = signed(&Scope::Group("retail".into()), 4, policy_files(&[("zz-lock.toml", LOCK)]), &gateway.key);
    gateway.put("group.retail", &group).await;
    let (accepted, detail, _) = gateway.next_change().await;
    assert!(accepted && detail.contains("group:retail v4 enforced"), "{detail}");
    let site = signed(&Scope::Site("s1".into()), 1, policy_files(&[("zz-doorbell.toml", DOORBELL)]), &gateway.key);
    gateway.put("site.s1", &site).await;
    let (accepted, detail, _) = gateway.next_change().await;
    assert!(accepted && detail.contains("site:s1 v1 enforced"), "{detail}");
    assert!(gateway.classes().contains(&"doorbell".to_owned()));
    assert_eq!(gateway.enforced(), (Some(1), None));
}
