//! Detection on the real captures of `../shared/datasets` (see its README). Each test says
//! how it learns and what it tests on; figures go to `bench/detection/RESULTS.md`. Run with
//! `-- --nocapture` to see them.
//!
//! The captures are split once, by device, into a **development** part, where rules and
//! thresholds are chosen, and a **test** part, which is only reported (`DEVELOPMENT_TYPES`,
//! `TEST_TYPES` and the per-dataset tests below say which is which).
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

/// IoT Sentinel types of the development part: the families whose alerts the novelty rules
/// were written for (Edimax, WeMo, Hue, MAX; `detect::novelty`), where thresholds are chosen.
pub const DEVELOPMENT_TYPES: [&str; 12] = [
    "EdimaxCam1",
    "EdimaxCam2",
    "EdimaxPlug1101W",
    "EdimaxPlug2101W",
    "HueBridge",
    "HueSwitch",
    "MAXGateway",
    "WeMoInsightSwitch",
    "WeMoInsightSwitch2",
    "WeMoLink",
    "WeMoSwitch",
    "WeMoSwitch2",
];
/// IoT Sentinel types of the test part: no rule or threshold was chosen on them. (Pairs
/// sharing a MAC, D-LinkDoorSensor/D-LinkHomeHub and HueBridge/HueSwitch, stay together.)
pub const TEST_TYPES: [&str; 19] = [
    "Aria",
    "D-LinkCam",
    "D-LinkDayCam",
    "D-LinkDoorSensor",
    "D-LinkHomeHub",
    "D-LinkSensor",
    "D-LinkSiren",
    "D-LinkSwitch",
    "D-LinkWaterSensor",
    "EdnetCam1",
    "EdnetCam2",
    "EdnetGateway",
    "HomeMaticPlug",
    "Lightify",
    "SmarterCoffee",
    "TP-LinkPlugHS100",
    "TP-LinkPlugHS110",
    "Withings",
    "iKettle2",
];

/// The generic type of an IoT Sentinel folder's device, from the shipped taxonomy
/// (`gateway/models/taxonomy.toml`, the model's own source) through the folder's product
/// (`EdimaxCam1` → `EdimaxCam`, as training names it): the level policy and the crowd
/// baseline key on. Generic type, not product, not OUI, was chosen on the development part:
/// keyed by product, an Edimax plug's and a WeMo switch's clouds were news to the sibling
/// product of the same family.
fn generic_type(folder: &str) -> &'static str {
    let folders: Vec<String> = DEVELOPMENT_TYPES.iter().chain(&TEST_TYPES).map(|t| t.to_string()).collect();
    let product = crate::fingerprint::training::type_label(folder, &folders);
    let taxonomy = crate::fingerprint::taxonomy::Taxonomy::shipped();
    let generic = taxonomy.products.get(&product).map(|p| p.generic.as_str());
    generic.unwrap_or_else(|| panic!("{folder} ({product}) is not in the shipped taxonomy"))
}

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
    let analysis = analyze(&[], &files, &[], baseline::Config::default(), Config::default()).unwrap();
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
    let analysis = analyze(&learn, &test, &[], baseline::Config::default(), Config::default()).unwrap();
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
        ReplayItem::Event(event) => event.time(),
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

/// Per device: learn on the setup and idle phases, test on every other phase (remote, local,
/// voice and physical switching, speaking, firmware update, deletion).
fn nku_run(folder: &str) {
    let files = pcaps(&dataset("nku-lifecycle-demo").join(folder));
    let (learn, test): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        name.contains("_setup") || name.contains("_idle_")
    });
    let (detector, learning, alerts) = learn_then_test(&learn, &test);
    print_alerts(folder, &alerts);
    let baselined: Vec<Mac> =
        detector.baselines().devices().filter(|(_, b)| b.baselined().is_some()).map(|(m, _)| m).collect();
    println!("{folder}: learnt on {} files, tested on {}, baselined {baselined:?}", learn.len(), test.len());
    assert!(flagged(&learning).is_empty(), "{folder} while learning: {:?}", flagged(&learning));
    assert!(flagged(&alerts).is_empty(), "{folder}: {:?}", flagged(&alerts));
}

/// Development part.
#[test]
fn nku_plug_raises_no_alert_once_learnt() {
    nku_run("xiaodu_plug_lifecycle");
}

/// Test part.
#[test]
fn nku_camera_raises_no_alert_once_learnt() {
    nku_run("xiaobai_Y2camera_lifecycle");
}

/// What one IoT Sentinel part raised: while learning, and per type once learnt.
struct SentinelRun {
    test_files: usize,
    learning: FileAlerts,
    per_type: Vec<(String, FileAlerts)>,
}

/// The IoT Sentinel captures were all taken on one lab network (10.10.10.0/24, one router),
/// so each part is replayed as one site: per device type, the earlier half of its setup
/// captures (by first-packet time) goes to learning, the later half to testing; all learning
/// captures are replayed in the order they were taken, learning ends, then all test captures.
/// Each device is given its folder's generic type as its class (`generic_type`; the
/// classifier names the product 94 % right on these types: `bench/fingerprint/RESULTS.md`).
fn iot_sentinel_run(dir: &Path, types: &[&str]) -> SentinelRun {
    let (mut learn, mut test) = (Vec::new(), Vec::new());
    let mut type_of = BTreeMap::new();
    let mut classes = Vec::new();
    for name in types {
        let folder = dir.join(name);
        let files = chronological(&folder);
        let (l, t) = files.split_at(files.len() / 2);
        println!("{name}: {} learning + {} test captures", l.len(), t.len());
        for file in l.iter().chain(t) {
            type_of.insert(file.clone(), name.to_string());
        }
        let mac = std::fs::read_to_string(folder.join("_iotdevice-mac.txt")).unwrap();
        let generic = generic_type(name);
        classes.push(Input::Class { mac: mac.trim().parse().unwrap(), class: generic.to_owned() });
        learn.extend_from_slice(l);
        test.extend_from_slice(t);
    }
    learn.sort_by_key(|f| first_packet(f));
    test.sort_by_key(|f| first_packet(f));
    let all: Vec<PathBuf> = learn.iter().chain(&test).cloned().collect();
    let mut detector = detector_for(&all, learn_until_told(baseline::Config::default()));
    for class in &classes {
        detector.handle(class);
    }
    let learning = replay_files(&mut detector, &learn).unwrap();
    let now = detector.now();
    end_learning(&mut detector, now);
    let test_alerts = replay_files(&mut detector, &test).unwrap();
    print_alerts("iot-sentinel learning part", &learning);
    let baselined = detector.baselines().devices().filter(|(_, b)| b.baselined().is_some()).count();
    println!("iot-sentinel: {} learning + {} test captures, {baselined} devices baselined", learn.len(), test.len());
    let mut per_type: BTreeMap<String, FileAlerts> = types.iter().map(|t| (t.to_string(), Vec::new())).collect();
    for (file, alert) in test_alerts {
        per_type.get_mut(&type_of[&file]).unwrap().push((file, alert));
    }
    for (name, alerts) in &per_type {
        if !flagged(alerts).is_empty() {
            print_alerts(name, alerts);
        }
    }
    SentinelRun { test_files: test.len(), learning, per_type: per_type.into_iter().collect() }
}

/// Prints a part's figures; returns the types with alerts once learnt.
fn sentinel_report(part: &str, run: &SentinelRun) -> Vec<(String, BTreeMap<Mac, BTreeSet<DetectorKind>>)> {
    let with_alerts: Vec<_> =
        run.per_type.iter().filter(|(_, a)| !flagged(a).is_empty()).map(|(n, a)| (n.clone(), flagged(a))).collect();
    let open = |alerts: &FileAlerts| alerts.iter().filter(|(_, a)| !a.resolved).count();
    let count: usize = run.per_type.iter().map(|(_, a)| open(a)).sum();
    println!(
        "iot-sentinel {part} part: {} types, {} test captures; once learnt {count} alerts on {} types: {with_alerts:?}; while learning {} alerts: {:?}",
        run.per_type.len(),
        run.test_files,
        with_alerts.len(),
        open(&run.learning),
        flagged(&run.learning)
    );
    with_alerts
}

/// Alerts while learning other than ARP conflicts between devices in setup mode (see
/// RESULTS.md): what the detectors that need no baseline raised on benign setups.
fn learning_alerts_beyond_arp(run: &SentinelRun) -> BTreeMap<Mac, BTreeSet<DetectorKind>> {
    let mut devices = flagged(&run.learning);
    devices.values_mut().for_each(|d| d.retain(|k| *k != DetectorKind::ArpSpoof));
    devices.retain(|_, d| !d.is_empty());
    devices
}

#[test]
fn development_and_test_parts_hold_every_iot_sentinel_type_once() {
    let dir = dataset("iot-sentinel");
    let mut folders: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut parts: Vec<String> = DEVELOPMENT_TYPES.iter().chain(&TEST_TYPES).map(|t| t.to_string()).collect();
    parts.sort();
    assert_eq!(parts, folders);
}

#[test]
fn every_iot_sentinel_folder_takes_its_generic_type_from_the_shipped_taxonomy() {
    let types: BTreeMap<&str, &str> =
        DEVELOPMENT_TYPES.iter().chain(&TEST_TYPES).map(|f| (*f, generic_type(f))).collect();
    // Units of one product share it; each level is what the taxonomy file says.
    assert_eq!((types["EdimaxCam1"], types["EdimaxCam2"]), ("ip-camera", "ip-camera"));
    assert_eq!((types["WeMoInsightSwitch"], types["WeMoInsightSwitch2"]), ("smart-plug", "smart-plug"));
    assert_eq!((types["Withings"], types["Aria"], types["D-LinkSiren"]), ("scale", "scale", "siren"));
    // The sensor paired through the hub is seen at the hub's MAC: what a policy sees is a hub.
    assert_eq!(types["D-LinkDoorSensor"], "hub");
    let taxonomy = crate::fingerprint::taxonomy::Taxonomy::shipped();
    assert!(types.values().all(|g| taxonomy.generic_types.iter().any(|t| t == g)), "{types:?}");
}

/// The development part's one residual: the setup phone of the MAX captures opening the
/// MAX's web page at a LAN address it never used (score 0.5). Replayed alone, this part has
/// too few setups for the phone to have used HTTP with two devices while learning (the rule
/// that lets an app reach one more); with every setup it had (RESULTS.md).
#[test]
fn iot_sentinel_development_part_raises_only_the_known_residual_once_learnt() {
    let run = iot_sentinel_run(&dataset("iot-sentinel"), &DEVELOPMENT_TYPES);
    let setup_phone: Mac = "38:0b:40:ef:85:41".parse().unwrap();
    let residual = vec![(
        "MAXGateway".to_owned(),
        BTreeMap::from([(setup_phone, BTreeSet::from([DetectorKind::LateralMovement]))]),
    )];
    assert_eq!(sentinel_report("development", &run), residual);
    assert!(learning_alerts_beyond_arp(&run).is_empty(), "{:?}", learning_alerts_beyond_arp(&run));
}

/// The reported claim: no alert on the types no rule was chosen on.
#[test]
fn iot_sentinel_test_part_raises_no_alert_once_learnt() {
    let run = iot_sentinel_run(&dataset("iot-sentinel"), &TEST_TYPES);
    assert!(sentinel_report("test", &run).is_empty());
    assert!(learning_alerts_beyond_arp(&run).is_empty(), "{:?}", learning_alerts_beyond_arp(&run));
}

mod intel;
mod scenarios;
