//! Policy bundles from the hub reach a real controller over XDP, in the lab: nats-server runs
//! in the gateway's namespace (a site's broker), the controller takes `[fleet]` with a
//! `bundle_key`. A good bundle is installed by the policy step and written to the maps (the API
//! shows exactly the bundle's policy); a bundle with a bad signature and one that fails the
//! checks are refused while the policy in force stays; after a restart the controller keeps the
//! bundle it enforced.
//!
//! Run as root through `cargo xtask test`.
use std::{collections::BTreeMap, path::Path, time::Duration};

use iotgw::{
    fleet::{
        bundle::{Bundle, Scope},
        connect::{self, Endpoint},
    },
    ota::{keys, metadata::SigningKey},
};
use iotgw_test_support::services::{NatsServer, scratch};
use netns_tests::{
    api::{ApiClient, token_entry},
    controller::Controller,
    lab::Lab,
    policies::{LANES, SENSOR_CLASS, defaults},
};
use serde_json::Value;

const VIEWER_TOKEN: &str = "lab-viewer-5d2e81";
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `f` on a thread inside the namespace `ns` (setns changes only the calling thread), so
/// what it starts or connects to is there.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Lab::ns_path(ns);
    std::thread::spawn(move || {
        let handle = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// Puts a bundle under `key` in the policy bucket, created as the hub creates it.
fn put(ns: &str, url: &str, key: &str, bundle: &Bundle) {
    let (url, key, value) = (url.to_owned(), key.to_owned(), bundle.encode());
    in_ns(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        // Bounded as a whole: the client connects in the background and retries for ever.
        runtime.block_on(iotgw_test_support::wait::within("putting the bundle", Duration::from_secs(60), async {
            let endpoint = Endpoint { url: &url, name: "lab-hub", credentials: None, tls_ca: None, inbox_prefix: None };
            let client = connect::connect(&endpoint).await.expect("connect");
            let bucket = iotgw::hub::bundles::ensure_bucket(&async_nats::jetstream::new(client)).await.expect("bucket");
            bucket.put(key, value.into()).await.expect("put");
        }));
    });
}

fn policy_files(sensor: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("lanes.toml".to_owned(), LANES.to_owned()),
        ("sensor.toml".to_owned(), sensor.to_owned()),
        ("defaults.toml".to_owned(), defaults("drop")),
    ])
}

/// The sensor class, also allowed HTTP upstream; `net` lets a test write a bad network.
fn sensor_with_http(net: &str) -> String {
    format!("{SENSOR_CLASS}[[class.allow]]\nnets = [\"{net}\"]\nprotocol = \"tcp\"\nports = [80]\n")
}

/// The policy version the API shows for these files (a hash of what the datapath enforces).
fn version_of(files: &BTreeMap<String, String>) -> String {
    let sources: Vec<_> = files.iter().map(|(name, text)| (Path::new(name).to_owned(), text.clone())).collect();
    let compiled = iotgw::policy::check_sources(&sources, iotgw::respond::rules::policy_errors).expect("good policy");
    iotgw::api::policy_view::version(&compiled)
}

fn signed(version: u64, files: BTreeMap<String, String>, key: &SigningKey) -> Bundle {
    let mut bundle = Bundle::new(Scope::Site("s1".into()), version, 1_700_000_000_000, "alice", files);
    bundle.sign(key.inner()).expect("sign");
    bundle
}

fn wait_for_count(ctl: &Controller, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + APPLY_TIMEOUT;
    while ctl.log_count(needle) < count {
        assert!(std::time::Instant::now() < deadline, "{needle:?} not logged {count} time(s) in {APPLY_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hub_bundles_are_enforced_and_bad_ones_refused_while_the_policy_in_force_stays() {
    netns_tests::require_root();
    let lab = Lab::new(1);
    let nats = in_ns(&lab.gw, NatsServer::start);
    let url = nats.url();
    let key_dir = scratch("lab-bundle-key");
    let key = SigningKey::generate();
    keys::save_new(&key_dir.join("bundle.pem"), &key).expect("key pair");
    let fleet = format!(
        "\n[api]\ntokens = [{}]\n\n[fleet]\nnats_url = \"{url}\"\nsite = \"s1\"\ngateway = \"gw1\"\nbundle_key = \"{}\"\n",
        token_entry("vera", "viewer", VIEWER_TOKEN),
        key_dir.join("bundle.pub.pem").display()
    );
    let local = policy_files(SENSOR_CLASS);
    let files: Vec<(&str, &str)> = local.iter().map(|(name, text)| (name.as_str(), text.as_str())).collect();
    let mut ctl = Controller::start(&lab, &files, &fleet);
    let api = ApiClient::new(&lab.gw);
    let policies = || -> Value { api.get("/api/v1/policies", Some(VIEWER_TOKEN)).json() };
    assert_eq!(policies()["version"], version_of(&local).as_str());

    let good = policy_files(&sensor_with_http("10.78.0.2/32"));
    let applied = ctl.log_count("policy applied");
    put(&lab.gw, &url, "site.s1", &signed(1, good.clone(), &key));
    wait_for_count(&ctl, "Enforced(1)", 1);
    assert_eq!(ctl.log_count("policy applied"), applied + 1, "the bundle was written to the maps");
    assert_eq!(policies()["version"], version_of(&good).as_str(), "the API shows the bundle's policy");
    assert_eq!(policies()["last_refused"], Value::Null);

    let mut forged = signed(2, policy_files(SENSOR_CLASS), &key);
    forged.files.insert("sensor.toml".into(), sensor_with_http("0.0.0.0/0"));
    put(&lab.gw, &url, "site.s1", &forged);
    wait_for_count(&ctl, "signature does not verify", 1);

    let failing = signed(2, policy_files(&sensor_with_http("10.78.0.2/24")), &key);
    put(&lab.gw, &url, "site.s1", &failing);
    wait_for_count(&ctl, "policy bundle refused", 2);
    let shown = policies();
    let refused = shown["last_refused"].as_str().unwrap_or_else(|| panic!("no last_refused: {shown:#}"));
    assert!(refused.contains("sensor.toml:") && refused.contains("host bits"), "{refused}");
    assert_eq!(shown["version"], version_of(&good).as_str(), "the good bundle is still in force");
    assert_eq!(ctl.log_count("policy applied"), applied + 1, "nothing else reached the maps");

    ctl.kill9();
    ctl.spawn();
    wait_for_count(&ctl, "policy bundle", 1);
    assert_eq!(policies()["version"], version_of(&good).as_str(), "after a restart the bundle is still in force");
    assert_eq!(ctl.log_count("Enforced("), 0, "nothing was installed again");
    let _ = std::fs::remove_dir_all(key_dir);
}
