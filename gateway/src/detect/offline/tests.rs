//! Detection on the real captures of `../shared/datasets` (see its README). Each test says
//! how it learns and what it tests on; figures go to `bench/detection/RESULTS.md`. Run with
//! `-- --nocapture` to see them.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::*;
use crate::{
    baseline::{self, Baselines},
    detect::Config,
};

/// Alerts with the capture they came from.
type FileAlerts = Vec<(PathBuf, Alert)>;

/// Detectors that fire on something never seen while learning (as opposed to rates and ARP).
const NOVELTY: [DetectorKind; 2] = [DetectorKind::NewDestination, DetectorKind::LateralMovement];
const ATTACKER: Mac = Mac([0x98, 0x90, 0x96, 0x9a, 0x86, 0xdf]);

/// The dataset folder; the test fails when it is missing (see `test_datasets`).
fn dataset(name: &str) -> PathBuf {
    crate::test_datasets::dataset(name)
}

/// Time of a capture's first packet.
fn first_packet(path: &Path) -> std::time::Duration {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    reader.next_packet().and_then(Result::ok).map(|p| p.timestamp).unwrap_or_default()
}

/// Captures of a folder in the order they were taken.
fn chronological(dir: &Path) -> Vec<PathBuf> {
    let mut files = pcaps(dir);
    files.sort_by_key(|f| first_packet(f));
    files
}

fn pcaps(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    files
}

/// A detector with default settings that sets aside the router(s) of `files`.
fn detector_for(files: &[PathBuf], baseline: baseline::Config) -> Detector {
    let gateways = infer_gateways(files, &baseline).unwrap();
    println!("routers set aside: {gateways:?}");
    Detector::new(Config { gateway_macs: gateways, ..Default::default() }, Baselines::new(baseline))
}

fn flagged(alerts: &[(PathBuf, Alert)]) -> BTreeMap<Mac, BTreeSet<DetectorKind>> {
    let mut devices: BTreeMap<Mac, BTreeSet<DetectorKind>> = BTreeMap::new();
    for (_, alert) in alerts.iter().filter(|(_, a)| !a.resolved) {
        devices.entry(alert.mac).or_default().insert(alert.detector);
    }
    devices
}

/// Learns on `learn` (then ends learning), tests on `test`; returns the test alerts.
fn learn_then_test(learn: &[PathBuf], test: &[PathBuf]) -> (Detector, FileAlerts, FileAlerts) {
    let all: Vec<PathBuf> = learn.iter().chain(test).cloned().collect();
    let mut detector = detector_for(&all, learn_until_told(baseline::Config::default()));
    let learning_alerts = replay_files(&mut detector, learn).unwrap();
    let now = detector.now();
    end_learning(&mut detector, now);
    let test_alerts = replay_files(&mut detector, test).unwrap();
    (detector, learning_alerts, test_alerts)
}

fn print_alerts(title: &str, alerts: &[(PathBuf, Alert)]) {
    let summary = AlertSummary::new(alerts);
    println!("== {title}\n{}", summary.render());
}

#[test]
fn uq_port_scan_flags_the_attacker_and_no_benign_device() {
    let dir = dataset("uq-iot-attacks");
    // The capture is 34 s long and the scan starts at once: no device can be baselined, so
    // only the absolute limits (scan, flood, ARP) apply.
    let files = pcaps(&dir);
    let mut detector = detector_for(&files, baseline::Config::default());
    let alerts = replay_files(&mut detector, &files).unwrap();
    print_alerts("uq-iot-attacks", &alerts);
    let devices = flagged(&alerts);
    let seen = detector.baselines().devices().count();
    println!("uq-iot-attacks: {seen} devices seen, flagged {devices:?}");
    assert!(devices.get(&ATTACKER).is_some_and(|d| d.contains(&DetectorKind::Scan)), "{devices:?}");
    assert_eq!(devices.len(), 1, "benign devices flagged: {devices:?}");

    // The same through `analyze`, as `iotgw analyze` calls it (no learning captures).
    let analysis = analyze(&[], &files, baseline::Config::default(), Config::default()).unwrap();
    assert_eq!(analysis.alerts.devices.keys().copied().collect::<Vec<_>>(), vec![ATTACKER]);
    let text = analysis.render();
    assert!(text.contains("98:90:96:9a:86:df") && text.contains("scan score"), "{text}");
}

#[test]
fn analyze_learns_then_tests_nku_plug() {
    let dir = dataset("nku-lifecycle-demo");
    let files = chronological(&dir.join("xiaodu_plug_lifecycle"));
    let (learn, test): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|f| f.to_string_lossy().contains("_setup") || f.to_string_lossy().contains("_idle_"));
    let analysis = analyze(&learn, &test, baseline::Config::default(), Config::default()).unwrap();
    assert!(analysis.baselined >= 1, "{analysis:?}");
    assert_eq!(analysis.alerts.alerts, 0, "{}", analysis.render());
    assert!(analysis.render().starts_with("Detection: "));
}

/// One 71 s capture of ~15 devices, all benign: learn on the first 2/3 of its time (47 s,
/// one 10 s window is enough to baseline here), end learning there, test on the last 1/3.
fn kitsune_run(dir: &Path) -> (FileAlerts, FileAlerts) {
    // One 71 s capture of ~15 devices, all benign: learn on the first 2/3 of its time, end
    // learning there, test on the last 1/3.
    let files = pcaps(dir);
    let gateways = infer_gateways(&files, &baseline::Config::default()).unwrap();
    println!("routers set aside: {gateways:?}");
    let mut detector = Detector::new(
        Config { gateway_macs: gateways, ..Default::default() },
        Baselines::new(learn_until_told(baseline::Config { min_learning_windows: 1, ..Default::default() })),
    );
    let items: Vec<_> = files
        .iter()
        .flat_map(|f| crate::datapath::replay::CaptureReplay::open(f, REPLAY_INTERVAL).unwrap().collect::<Vec<_>>())
        .collect();
    let time = |item: &ReplayItem| match item {
        ReplayItem::Event(crate::datapath::events::DatapathEvent::Flow(f)) => f.time,
        ReplayItem::Event(crate::datapath::events::DatapathEvent::Sample(s)) => s.time,
        ReplayItem::Interval(c) => c.start,
    };
    let first = items.first().map(time).unwrap();
    let last = items.last().map(time).unwrap();
    let split = first + last.duration_since(first).unwrap() * 2 / 3;
    let (mut learning, mut testing) = (Vec::new(), Vec::new());
    let mut ended = false;
    for item in items {
        if !ended && time(&item) >= split {
            let baselined = end_learning(&mut detector, split);
            println!(
                "kitsune: learning ended at +{:?} with {baselined} devices baselined",
                split.duration_since(first).unwrap()
            );
            ended = true;
        }
        let alerts = handle_item(&mut detector, item).into_iter().map(|a| (files[0].clone(), a));
        if ended { testing.extend(alerts) } else { learning.extend(alerts) }
    }
    print_alerts("kitsune learning part", &learning);
    print_alerts("kitsune test part", &testing);
    (learning, testing)
}

#[test]
fn kitsune_prefix_raises_no_rate_or_arp_alert_once_learnt() {
    let dir = dataset("kitsune-mirai-prefix");
    let (learning, testing) = kitsune_run(&dir);
    assert!(flagged(&learning).is_empty(), "{:?}", flagged(&learning));
    for detectors in flagged(&testing).values() {
        assert!(detectors.iter().all(|d| NOVELTY.contains(d)), "{:?}", flagged(&testing));
    }
}

/// The strict claim; fails today on one camera's first HTTP connection to a hard-coded
/// resolver address in the last 24 s (47 s of learning cannot cover it).
#[test]
fn kitsune_prefix_raises_no_alert_once_learnt() {
    let dir = dataset("kitsune-mirai-prefix");
    let (_, testing) = kitsune_run(&dir);
    assert!(flagged(&testing).is_empty(), "{:?}", flagged(&testing));
}

#[test]
fn nku_lifecycle_raises_no_alert_once_learnt() {
    let dir = dataset("nku-lifecycle-demo");
    // Per device: learn on the setup and idle phases, test on every other phase (remote,
    // local, voice and physical switching, speaking, firmware update, deletion).
    let split = |folder: &str, learn: &[&str]| {
        let files = pcaps(&dir.join(folder));
        let (l, t): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            learn.iter().any(|phase| name.contains(phase))
        });
        (l, t)
    };
    for (folder, learn) in [
        ("xiaodu_plug_lifecycle", &["_setup", "_idle_"][..]),
        ("xiaobai_Y2camera_lifecycle", &["_setup", "_idle_"][..]),
    ] {
        let (learn, test) = split(folder, learn);
        let (detector, _, alerts) = learn_then_test(&learn, &test);
        print_alerts(folder, &alerts);
        let baselined: Vec<Mac> =
            detector.baselines().devices().filter(|(_, b)| b.baselined().is_some()).map(|(m, _)| m).collect();
        println!("{folder}: learnt on {} files, tested on {}, baselined {baselined:?}", learn.len(), test.len());
        assert!(flagged(&alerts).is_empty(), "{folder}: {:?}", flagged(&alerts));
    }
}

/// The IoT Sentinel captures were all taken on one lab network (10.10.10.0/24, one router),
/// so they are replayed as that one site: per device type, the earlier half of its setup
/// captures (by first-packet time) goes to learning, the later half to testing; all learning
/// captures are replayed in the order they were taken, learning ends, then all test captures.
/// Returns (types, test captures, test alerts per type).
fn iot_sentinel_run(dir: &Path) -> (usize, usize, Vec<(String, FileAlerts)>) {
    let mut types: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    types.sort();
    let (mut learn, mut test) = (Vec::new(), Vec::new());
    let mut type_of = BTreeMap::new();
    for device_type in &types {
        let files = chronological(device_type);
        let (l, t) = files.split_at(files.len() / 2);
        let name = device_type.file_name().unwrap().to_string_lossy().into_owned();
        println!("{name}: {} learning + {} test captures", l.len(), t.len());
        for file in l.iter().chain(t) {
            type_of.insert(file.clone(), name.clone());
        }
        learn.extend_from_slice(l);
        test.extend_from_slice(t);
    }
    learn.sort_by_key(|f| first_packet(f));
    test.sort_by_key(|f| first_packet(f));
    let (detector, learning_alerts, test_alerts) = learn_then_test(&learn, &test);
    print_alerts("iot-sentinel learning part", &learning_alerts);
    let baselined = detector.baselines().devices().filter(|(_, b)| b.baselined().is_some()).count();
    println!("iot-sentinel: {} learning + {} test captures, {baselined} devices baselined", learn.len(), test.len());
    let mut per_type: BTreeMap<String, FileAlerts> =
        types.iter().map(|t| (t.file_name().unwrap().to_string_lossy().into_owned(), Vec::new())).collect();
    for (file, alert) in test_alerts {
        per_type.get_mut(&type_of[&file]).unwrap().push((file, alert));
    }
    for (name, alerts) in &per_type {
        if !flagged(alerts).is_empty() {
            print_alerts(name, alerts);
        }
    }
    (types.len(), test.len(), per_type.into_iter().collect())
}

#[test]
fn iot_sentinel_setups_raise_no_rate_or_arp_alert_once_learnt() {
    let dir = dataset("iot-sentinel");
    let (types, test_files, per_type) = iot_sentinel_run(&dir);
    let with_alerts: Vec<_> =
        per_type.iter().filter(|(_, a)| !flagged(a).is_empty()).map(|(n, a)| (n.clone(), flagged(a))).collect();
    let count = |kind| per_type.iter().flat_map(|(_, a)| a).filter(|(_, a)| !a.resolved && a.detector == kind).count();
    let devices: usize = with_alerts.iter().map(|(_, d)| d.len()).sum();
    println!(
        "iot-sentinel: {types} types, {test_files} test captures, {} types ({devices} devices) with alerts, {} new_destination and {} lateral_movement alerts: {with_alerts:?}",
        with_alerts.len(),
        count(DetectorKind::NewDestination),
        count(DetectorKind::LateralMovement)
    );
    // Scans, floods, volume and ARP spoofing: none on benign setups. (New destinations and
    // new LAN peers do occur: setups reach cloud endpoints and phone apps at addresses the
    // earlier setups never used.)
    for (name, devices) in &with_alerts {
        for detectors in devices.values() {
            assert!(detectors.iter().all(|d| NOVELTY.contains(d)), "{name}: {devices:?}");
        }
    }
}

/// The strict claim: no alert at all. Fails today on cloud endpoints first reached in the test
/// half without a DNS answer naming them (see bench/detection/RESULTS.md).
#[test]
fn iot_sentinel_setups_raise_no_alert_once_learnt() {
    let dir = dataset("iot-sentinel");
    let (_, _, per_type) = iot_sentinel_run(&dir);
    let with_alerts: Vec<_> =
        per_type.iter().filter(|(_, a)| !flagged(a).is_empty()).map(|(n, a)| (n.clone(), flagged(a))).collect();
    assert!(with_alerts.is_empty(), "{with_alerts:#?}");
}
