//! Bundle fan-out: every simulated gateway watches the `iotgw_policy` bucket as
//! `fleet::bundle_watch` does — its own NATS connection (as each gateway has), one watch on its
//! site's key and one on its group's, from the current value on — and decodes and verifies
//! each bundle it is given with the hub's public key. The hub then signs and publishes with
//! `hub::bundles` (what `iotgw hub policy publish` runs), the shipped `policies/` folder:
//!
//! - `bundle-group`: one bundle for the group every gateway is in;
//! - `bundle-sites`: one bundle per site, published one after the other.
//!
//! Measured per gateway: from the start of its bundle's publish (signing, PostgreSQL, bucket
//! put) to its receipt with the signature verified. What a real gateway does next (staging the
//! files on its disk, the policy checks, the swap) is not part of it.
use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use futures::StreamExt as _;
use iotgw::{
    fleet::{
        bundle::{Bundle, Scope},
        subjects,
    },
    hub::{Hub, bundles},
    ota::{keys, metadata::SigningKey},
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Instant,
};

use crate::{Spread, sim::Shape};

/// The group every simulated gateway is in.
const GROUP: &str = "fleet-bench";
const ACTOR: &str = "fleet-bench";
/// For all gateways to connect and watch, and for a bundle to reach all of them.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Gateways connecting and creating their watches at once (each watch is a JetStream API
/// request, which the server times out when thousands come together).
const SETTING_UP: usize = 50;

/// A failed watch is created again after this, doubling up to RETRY_MAX (`bundle_watch`'s).
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Watches that failed and were created again, by all gateways (printed with each line).
static REWATCHES: AtomicUsize = AtomicUsize::new(0);

/// A verified bundle a gateway was given.
struct Receipt {
    gateway: usize,
    scope: Scope,
    at: Instant,
}

/// Connects every gateway's watcher, publishes the group's bundle, then each site's.
pub async fn run(hub: &Hub, nats_url: &str, shape: Shape) {
    let dir = iotgw_test_support::services::scratch("fleet-bench-bundle");
    let signing_key = dir.join("bundle.pem");
    keys::save_new(&signing_key, &SigningKey::generate()).expect("bundle signing key");
    let verifying = keys::load_verifying(&keys::public_path(&signing_key)).expect("bundle public key");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let draft = || bundles::prepare(Some(&signing_key), &policies, ACTOR).expect("policies/ pass the checks");
    bundles::ensure_bucket(&hub.jetstream).await.expect("policy bucket");

    let (receipts_tx, mut receipts) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::channel(shape.gateways);
    let setting_up = Arc::new(Semaphore::new(SETTING_UP));
    let mut watchers = tokio::task::JoinSet::new();
    let started = Instant::now();
    for gateway in 0..shape.gateways {
        let (url, site, key) = (nats_url.to_owned(), shape.site(gateway), verifying);
        let (receipts, ready, setting_up) = (receipts_tx.clone(), ready_tx.clone(), setting_up.clone());
        watchers.spawn(async move {
            let permit = setting_up.acquire_owned().await.expect("semaphore");
            watch(url, gateway, site, key, (permit, ready), receipts).await;
        });
    }
    let deadline = Instant::now() + TIMEOUT;
    for _ in 0..shape.gateways {
        tokio::select! {
            _ = ready.recv() => {}
            ended = watchers.join_next() => panic!("a gateway's watcher stopped: {ended:?}"),
            () = tokio::time::sleep_until(deadline) => panic!("gateways not all watching after {TIMEOUT:?}"),
        }
    }
    println!(
        "bundle: {} gateways watching (own connection each, 2 watches: site and group) after {:.1} s",
        shape.gateways,
        started.elapsed().as_secs_f64()
    );

    let group = Scope::Group(GROUP.to_owned());
    let draft_group = draft();
    let published = Instant::now();
    let version = bundles::publish(hub, &group, draft_group).await.expect("publish the group bundle").version;
    let publish_took = published.elapsed();
    let reached: HashMap<Scope, Instant> = HashMap::from([(group.clone(), published)]);
    let times = collect(&mut receipts, &reached, shape.gateways, &mut watchers).await;
    report(&format!("bundle-group (group:{GROUP} v{version}, to all)"), times, publish_took);

    let sites: Vec<Scope> = (0..shape.gateways.div_ceil(shape.gateways_per_site))
        .map(|site| Scope::Site(shape.site(site * shape.gateways_per_site)))
        .collect();
    let drafts: Vec<_> = sites.iter().map(|_| draft()).collect();
    let mut published = HashMap::new();
    let first = Instant::now();
    for (scope, draft) in sites.iter().zip(drafts) {
        published.insert(scope.clone(), Instant::now());
        bundles::publish(hub, scope, draft).await.expect("publish a site bundle");
    }
    let publish_took = first.elapsed();
    let times = collect(&mut receipts, &published, shape.gateways, &mut watchers).await;
    report(&format!("bundle-sites ({} site bundles, one after the other)", sites.len()), times, publish_took);
    watchers.abort_all();
}

/// One gateway's watcher: connects, watches its site's key and its group's (holding
/// `setting_up` until then), and reports every bundle it verified. When watching fails (a
/// missed heartbeat, a JetStream request timed out, on a busy machine) it watches again after
/// a pause, doubling from RETRY_MIN to RETRY_MAX, as `bundle_watch` does, skipping the
/// revisions it has handled; such failures are counted in REWATCHES. Failing to connect, or a
/// bundle that does not decode or verify, ends the bench.
async fn watch(
    url: String,
    gateway: usize,
    site: String,
    key: ed25519_dalek::VerifyingKey,
    (setting_up, ready): (OwnedSemaphorePermit, mpsc::Sender<()>),
    receipts: mpsc::UnboundedSender<Receipt>,
) {
    let client = async_nats::connect(url).await.expect("gateway connection");
    let js = jetstream::new(client);
    let mut setting_up = Some((setting_up, ready));
    // Last revision handled per key.
    let mut handled: HashMap<String, u64> = HashMap::new();
    let mut retry = RETRY_MIN;
    loop {
        let error = follow(&js, &site, &mut setting_up, &mut handled, gateway, &key, &receipts).await;
        REWATCHES.fetch_add(1, Ordering::Relaxed);
        if REWATCHES.load(Ordering::Relaxed) == 1 {
            eprintln!("bundle: gateway {gateway}: {error}; watching again (as bundle_watch does)");
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Watches both keys (then lets the next gateway set up) and reports each new bundle, until
/// the watch fails: why.
async fn follow(
    js: &jetstream::Context,
    site: &str,
    setting_up: &mut Option<(OwnedSemaphorePermit, mpsc::Sender<()>)>,
    handled: &mut HashMap<String, u64>,
    gateway: usize,
    key: &ed25519_dalek::VerifyingKey,
    receipts: &mpsc::UnboundedSender<Receipt>,
) -> String {
    let store = match js.get_key_value(subjects::POLICY_BUCKET).await {
        Ok(store) => store,
        Err(error) => return format!("policy bucket: {error}"),
    };
    // One watch per key, as `bundle_watch` (nats-server 2.9 has one filter per consumer).
    let mut changes = futures::stream::SelectAll::new();
    for key in [subjects::site_bundle_key(site), subjects::group_bundle_key(GROUP)] {
        match store.watch_with_history(key).await {
            Ok(watch) => changes.push(watch),
            Err(error) => return format!("watch: {error}"),
        }
    }
    if let Some((permit, ready)) = setting_up.take() {
        drop(permit);
        ready.send(()).await.expect("ready");
    }
    while let Some(entry) = changes.next().await {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => return format!("bucket entry: {error}"),
        };
        if handled.get(&entry.key).is_some_and(|revision| *revision >= entry.revision) {
            continue;
        }
        handled.insert(entry.key.clone(), entry.revision);
        let bundle = Bundle::decode(&entry.value).expect("a bundle");
        bundle.verify(key).expect("the bundle verifies");
        let _ = receipts.send(Receipt { gateway, scope: bundle.scope, at: Instant::now() });
    }
    "the bucket watch ended".to_owned()
}

/// Waits until each of `gateways` has one of the bundles `published` (scope → publish start):
/// the time from its publish to each gateway's receipt.
async fn collect(
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
    published: &HashMap<Scope, Instant>,
    gateways: usize,
    watchers: &mut tokio::task::JoinSet<()>,
) -> Vec<Duration> {
    let mut times: Vec<Option<Duration>> = vec![None; gateways];
    let mut missing = gateways;
    let deadline = Instant::now() + TIMEOUT;
    while missing > 0 {
        tokio::select! {
            receipt = receipts.recv() => {
                let receipt = receipt.expect("watchers");
                let Some(start) = published.get(&receipt.scope) else { continue };
                let time = &mut times[receipt.gateway];
                assert!(time.is_none(), "gateway {} was given {} twice", receipt.gateway, receipt.scope);
                *time = Some(receipt.at - *start);
                missing -= 1;
            }
            ended = watchers.join_next() => panic!("a gateway's watcher stopped: {ended:?}"),
            () = tokio::time::sleep_until(deadline) => panic!("{missing} of {gateways} gateways without the bundle after {TIMEOUT:?}"),
        }
    }
    times.into_iter().flatten().collect()
}

fn report(line: &str, times: Vec<Duration>, publish_took: Duration) {
    let gateways = times.len();
    let spread = Spread::of(times);
    println!(
        "{line}: {gateways} gateways, from publish to verified receipt p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (publishing took {:.1} ms; watches created again after a failure so far: {})",
        spread.p50.as_secs_f64() * 1e3,
        spread.p99.as_secs_f64() * 1e3,
        spread.max.as_secs_f64() * 1e3,
        publish_took.as_secs_f64() * 1e3,
        REWATCHES.load(Ordering::Relaxed)
    );
}
