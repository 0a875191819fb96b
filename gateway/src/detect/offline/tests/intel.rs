//! A capture checked against threat-intelligence lists, as `iotgw analyze --config` does:
//! the lists of `detect.threat_intel` are loaded as at run time and flag a device's flow to
//! a listed address, or to an address a DNS answer in the capture gave for a listed domain,
//! with no baseline. The capture is an Edimax plug's setup (IoT Sentinel): it asks for
//! `www.myedimax.com` (answered 122.248.252.67, UDP 8765) and later connects to
//! 54.217.230.12:8767 by address.
use std::path::Path;

use super::*;
use crate::detect::intel::{IntelFormat, IntelSource};

const PLUG: Mac = Mac([0x74, 0xda, 0x38, 0x4a, 0x76, 0x49]);
/// The capture's router, which answers the plug's DNS from 10.10.10.1. One setup capture is
/// too short for `infer_gateways` to find it, so it is named, as `detect.gateway_macs` would:
/// only a router's (or upstream) answers name addresses.
const ROUTER: Mac = Mac([0x00, 0xb5, 0x6d, 0x06, 0x08, 0xba]);

fn plug_setup() -> PathBuf {
    dataset("iot-sentinel").join("EdimaxPlug1101W/Setup-A-1-STA.pcap")
}

/// A folder of lists unique to this test, removed when dropped (also when the test fails).
struct Lists(iotgw_test_support::services::Scratch);

impl Lists {
    fn new(test: &str) -> Self {
        Lists(iotgw_test_support::services::scratch(&format!("offline-intel-{test}")))
    }

    fn source(&self, file: &str, text: &str, format: IntelFormat, column: Option<&str>) -> IntelSource {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        IntelSource { path, format, column: column.map(str::to_owned) }
    }
}

/// `analyze` over the plug's capture, nothing learnt, with `sources` in force.
fn analyze_with(sources: Vec<IntelSource>) -> Analysis {
    let detect = Config { threat_intel: sources, gateway_macs: vec![ROUTER], ..Default::default() };
    analyze(&[], &[plug_setup()], &[], baseline::Config::default(), detect).unwrap()
}

fn intel_alerts(analysis: &Analysis) -> Vec<&IncidentSummary> {
    let incidents = analysis.alerts.devices.values().flatten();
    incidents.filter(|i| i.detector == DetectorKind::ThreatIntel).collect()
}

#[test]
fn a_listed_address_in_a_csv_feed_flags_the_plug_without_a_baseline() {
    let lists = Lists::new("csv");
    let feed = "# first_seen,dst_ip,dst_port,malware\n2026-12-01,54.217.230.12,8767,test-c2\n2026-12-01,bogus,1,x\n";
    let analysis = analyze_with(vec![lists.source("feed.csv", feed, IntelFormat::Csv, Some("2"))]);
    let hits = intel_alerts(&analysis);
    assert_eq!(hits.len(), 1, "{}", analysis.render());
    assert_eq!(analysis.alerts.devices.keys().copied().collect::<Vec<_>>(), vec![PLUG]);
    assert!((hits[0].score - 1.0).abs() < 1e-9 && hits[0].observed.contains("54.217.230.12 is listed"));
    // The list as loaded is part of the report: one entry, the bad line refused.
    assert_eq!((analysis.threat_intel[0].entries, analysis.threat_intel[0].refused), (1, 1));
    let text = analysis.render();
    assert!(text.contains("feed.csv: 1 entries, 1 lines refused") && text.contains("threat_intel score"), "{text}");
}

#[test]
fn a_listed_domain_flags_the_address_its_answer_gave() {
    let lists = Lists::new("domain");
    let analysis = analyze_with(vec![lists.source("domains.txt", "myedimax.com\n", IntelFormat::Domain, None)]);
    let hits = intel_alerts(&analysis);
    assert_eq!(hits.len(), 1, "{}", analysis.render());
    assert!((hits[0].score - 0.9).abs() < 1e-9, "{:?}", hits[0]);
    assert!(hits[0].observed.contains("122.248.252.67 was resolved from www.myedimax.com"), "{}", hits[0].observed);
}

#[test]
fn unlisted_destinations_raise_nothing_and_an_unreadable_list_stops_the_analysis() {
    let lists = Lists::new("control");
    let analysis =
        analyze_with(vec![lists.source("c2.txt", "54.217.230.13\n198.51.100.0/24\n", IntelFormat::Ip, None)]);
    assert!(intel_alerts(&analysis).is_empty(), "{}", analysis.render());
    assert_eq!(analysis.threat_intel[0].entries, 2);
    let missing =
        IntelSource { path: Path::new("/nonexistent/iotgw/c2.txt").into(), format: IntelFormat::Ip, column: None };
    let detect = Config { threat_intel: vec![missing], ..Default::default() };
    let error = analyze(&[], &[plug_setup()], &[], baseline::Config::default(), detect).unwrap_err();
    assert!(matches!(error, AnalyzeError::Intel(_)) && error.to_string().contains("/nonexistent/iotgw/c2.txt"));
}
