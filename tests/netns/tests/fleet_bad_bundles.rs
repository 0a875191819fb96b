//! A bad policy bundle at every gateway of the fleet (issue 16's lab). Three lab gateways (real
//! XDP, each in its own namespaces) enforce a good bundle published by the hub to their group.
//! Then two bad ones go into the policy bucket for the same group: one signed with another key
//! than the hub's, one signed by the hub's key whose files fail `iotgw policy check`. Every
//! gateway refuses each, says exactly why in its health report (the hub's gateways API shows it),
//! and keeps the good bundle in force: through XDP, the port the good bundle opens still passes
//! and the port the bad bundles would open is still dropped.
//!
//! Run as root through `cargo xtask test`.
use std::{collections::BTreeMap, time::Duration};

use gateway_ebpf::reason;
use iotgw::{
    device::Mac,
    fleet::bundle::{Bundle, BundleError, Scope},
    ota::metadata::SigningKey,
};
use netns_tests::{
    fleet::{Fleet, GROUP, LabGateway, THREE_SITES, site_labs},
    packets,
    raw::RawSocket,
    scenario::{HEAD_END_IP, HEAD_END_PORT, POLICY},
};
use serde_json::Value;

/// The port the good bundle opens to the head-end, beyond the meter's own.
const GOOD_PORT: u16 = 8883;
/// The port the bad bundles would open.
const BAD_PORT: u16 = 80;
/// How long the sniffer upstream listens for a probe's frames.
const SETTLE: Duration = Duration::from_millis(700);

/// The scenario's meter policy without its response rules (nothing here may quarantine the
/// meter), its meter also allowed TCP to `extra` (network, port).
fn meter_policy(extra: &[(&str, u16)]) -> String {
    let without_responses = POLICY.split("[[response]]").next().expect("the scenario's policy");
    let (classes, defaults) = without_responses.split_once("\n[defaults]").expect("a [defaults] table");
    let rules: String = extra
        .iter()
        .map(|(net, port)| format!("[[class.allow]]\nnets = [\"{net}\"]\nprotocol = \"tcp\"\nports = [{port}]\n"))
        .collect();
    format!("{classes}\n{rules}\n[defaults]{defaults}")
}

fn head_end() -> String {
    format!("{}/32", std::net::Ipv4Addr::from(HEAD_END_IP))
}

/// A bundle for the lab's group, signed with `key`.
fn bundle(version: u64, policy: String, key: &SigningKey) -> Bundle {
    let files = BTreeMap::from([("scenario.toml".to_owned(), policy)]);
    let mut bundle = Bundle::new(Scope::Group(GROUP.to_owned()), version, 1_780_000_000_000, "mallory", files);
    bundle.sign(key.inner()).expect("signing");
    bundle
}

fn tcp_destination(frame: &[u8]) -> Option<u16> {
    packets::tcp(frame).map(|tcp| tcp.destination_port())
}

/// The TCP ports of `ports` a SYN from the meter to the head-end reaches upstream on.
fn passing(gateway: &mut LabGateway, ports: &[u16]) -> Vec<u16> {
    let upstream = RawSocket::open(&gateway.scenario.lab.up, "eth0");
    let arrived = std::thread::scope(|scope| {
        let sniffer = scope.spawn(|| {
            upstream.collect(SETTLE, |frame| tcp_destination(frame).is_some_and(|port| ports.contains(&port)))
        });
        std::thread::sleep(Duration::from_millis(100));
        for port in ports {
            gateway.scenario.connect_to(HEAD_END_IP, *port);
        }
        sniffer.join().expect("sniffer")
    });
    let mut passed: Vec<u16> = arrived.iter().filter_map(|frame| tcp_destination(frame)).collect();
    passed.sort_unstable();
    passed.dedup();
    passed
}

/// Every gateway passes the meter's port and the good bundle's, and XDP drops the bad port for
/// the policy (its drop counter grows by the probe).
fn good_bundle_in_force(gateways: &mut [LabGateway], when: &str) {
    for gateway in gateways {
        let meter = Mac(gateway.scenario.mac);
        let denied = gateway.scenario.ctl.device_drops(meter, reason::POLICY_DENY);
        let passed = passing(gateway, &[HEAD_END_PORT, GOOD_PORT, BAD_PORT]);
        assert_eq!(passed, [HEAD_END_PORT, GOOD_PORT], "{}/{} {when}", gateway.site, gateway.gateway);
        let denied_now = gateway.scenario.ctl.device_drops(meter, reason::POLICY_DENY);
        assert!(
            denied_now > denied,
            "{}/{} {when}: XDP did not drop port {BAD_PORT} for the policy",
            gateway.site,
            gateway.gateway
        );
    }
}

/// Waits until the hub shows every gateway enforcing v1 and refusing `version` for a reason
/// containing every one of `why`; returns the reasons.
fn wait_refused(fleet: &Fleet, version: u64, why: &[&str]) -> Vec<String> {
    let rows = fleet.wait_gateways(&format!("refusing v{version}"), |g| {
        g["policy_version"] == 1 && g["health"]["policy_refused"]["version"] == version
    });
    let reasons: Vec<String> =
        rows.iter().map(|g| g["health"]["policy_refused"]["reason"].as_str().unwrap_or_default().to_owned()).collect();
    for reason in &reasons {
        assert!(why.iter().all(|part| reason.contains(part)), "refused for {reason:?}, not for {why:?}");
    }
    reasons
}

#[test]
fn every_gateway_refuses_a_forged_and_a_failing_bundle_and_keeps_enforcing_the_good_one() {
    let fleet = Fleet::start(&THREE_SITES);
    let good = fleet.dir.join("good-bundle");
    std::fs::create_dir_all(&good).expect("bundle folder");
    std::fs::write(good.join("scenario.toml"), meter_policy(&[(&head_end(), GOOD_PORT)])).expect("good policy");
    fleet.publish_policy(&format!("group:{GROUP}"), &good, "olga");
    let labs = site_labs(THREE_SITES.len());
    let local = meter_policy(&[]);
    let mut gateways = fleet.start_gateways(&labs, &[("scenario.toml", &local)]);
    fleet.wait_gateways("enforcing the good bundle", |g| {
        g["policy_version"] == 1 && g["health"]["policy_refused"] == Value::Null
    });
    good_bundle_in_force(&mut gateways, "under the good bundle");

    // Signed with a key that is not the hub's: it would open the bad port.
    let opens_bad_port = meter_policy(&[(&head_end(), GOOD_PORT), (&head_end(), BAD_PORT)]);
    fleet.put_bundle(&bundle(2, opens_bad_port, &SigningKey::generate()));
    let bad_signature = format!("policy bundle group:{GROUP} v2 refused: {}", BundleError::BadSignature);
    let forged = wait_refused(&fleet, 2, &[&bad_signature]);
    assert!(forged.iter().all(|reason| *reason == bad_signature), "{forged:?}");
    good_bundle_in_force(&mut gateways, "after the forged bundle");

    // Signed by the hub's key, but the bad port's network has host bits set: the checks fail.
    let fails_checks = meter_policy(&[(&head_end(), GOOD_PORT), ("10.78.0.40/24", BAD_PORT)]);
    fleet.put_bundle(&bundle(3, fails_checks, &fleet.signing_key()));
    let failing = wait_refused(&fleet, 3, &[&format!("group:{GROUP} v3 refused"), "scenario.toml:", "host bits"]);
    good_bundle_in_force(&mut gateways, "after the bundle that fails the checks");

    for gateway in &gateways {
        let enforced = std::fs::read_to_string(gateway.scenario.ctl.policy_dir.join("scenario.toml")).expect("policy");
        assert!(
            enforced.contains(&format!("ports = [{GOOD_PORT}]"))
                && !enforced.contains(&format!("ports = [{BAD_PORT}]"))
        );
    }
    println!("fleet bad bundles: refused as {:?}", forged[0]);
    println!("fleet bad bundles: refused as {:?}", failing[0]);
}
