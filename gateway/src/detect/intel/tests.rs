use super::*;

/// A scratch file in a folder of its own, both removed on drop (also when the test fails).
struct ScratchFile(iotgw_test_support::services::Scratch);

impl ScratchFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = iotgw_test_support::services::scratch(&format!("intel-{name}"));
        std::fs::write(dir.join("list"), text).expect("scratch file");
        Self(dir)
    }

    fn source(&self, format: IntelFormat, column: Option<&str>) -> IntelSource {
        IntelSource { path: self.0.join("list"), format, column: column.map(str::to_owned) }
    }
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn an_ip_list_takes_addresses_and_networks_and_counts_bad_lines() {
    let file = ScratchFile::new(
        "ips",
        "# C2 servers\n203.0.113.7\n\n198.51.100.0/24  # a bulletproof host\n2001:db8:bad::/48\nnot-an-ip\n1.2.3.4 5.6.7.8\n300.1.1.1\n",
    );
    let list = load(&file.source(IntelFormat::Ip, None)).unwrap();
    assert_eq!((list.entries(), list.refused), (3, 3), "{list:?}");
    assert_eq!(list.refused_examples[0], "line 6: not-an-ip");
    let intel = ThreatIntel::new(vec![list]);
    assert_eq!(intel.lookup(addr("203.0.113.7"), None).unwrap().entry, "203.0.113.7");
    assert_eq!(intel.lookup(addr("198.51.100.99"), None).unwrap().entry, "198.51.100.0/24");
    assert!(intel.lookup(addr("2001:db8:bad:1::9"), None).unwrap().by_address);
    assert!(intel.lookup(addr("203.0.113.8"), Some("203.0.113.7")).is_none());
}

#[test]
fn a_domain_list_or_hosts_file_lists_subdomains_too() {
    let file = ScratchFile::new(
        "domains",
        "evil.example\n0.0.0.0 cnc.mirai.example # sinkholed\nBAD.Example.\n-- \nlocalhost\nexample..com\n",
    );
    let list = load(&file.source(IntelFormat::Domain, None)).unwrap();
    assert_eq!((list.entries(), list.refused), (3, 3), "{list:?}");
    let intel = ThreatIntel::new(vec![list]);
    let hit = intel.lookup(addr("192.0.2.1"), Some("a.b.evil.example.")).unwrap();
    assert_eq!((hit.entry.as_str(), hit.by_address), ("evil.example", false));
    assert!(intel.lookup(addr("192.0.2.1"), Some("cnc.mirai.example")).is_some());
    assert!(intel.lookup(addr("192.0.2.1"), Some("bad.example")).is_some());
    assert!(intel.lookup(addr("192.0.2.1"), Some("notevil.example")).is_none());
    assert!(intel.lookup(addr("192.0.2.1"), Some("mirai.example")).is_none());
    assert!(intel.lookup(addr("192.0.2.1"), None).is_none());
}

#[test]
fn a_csv_feed_is_read_by_header_name() {
    let file = ScratchFile::new(
        "feed.csv",
        "first_seen,indicator,threat\n2026-12-01,203.0.113.50,mirai\n2026-12-01,http://cnc.bad.example:8080/bins/x.arm,mozi\n2026-12-02,http://[2001:db8::66]/a,x\n2026-12-02\n2026-12-03,???,y\n",
    );
    let list = load(&file.source(IntelFormat::Csv, Some("indicator"))).unwrap();
    assert_eq!((list.entries(), list.refused), (3, 2), "{list:?}");
    let intel = ThreatIntel::new(vec![list]);
    assert!(intel.lookup(addr("203.0.113.50"), None).is_some());
    assert!(intel.lookup(addr("192.0.2.1"), Some("cnc.bad.example")).is_some());
    assert!(intel.lookup(addr("2001:db8::66"), None).is_some());
}

#[test]
fn a_csv_feed_with_its_header_commented_out_is_read_by_position() {
    // abuse.ch's Feodo Tracker layout.
    let file = ScratchFile::new(
        "feodo.csv",
        "# Feodo Tracker\n# \"first_seen_utc\",\"dst_ip\",\"dst_port\",\"c2_status\"\n\"2026-12-01 10:00:00\",\"45.9.148.3\",\"443\",\"online\"\n\"2026-12-01 11:00:00\",\"45.9.148.4\",\"8080\",\"offline\"\n",
    );
    let list = load(&file.source(IntelFormat::Csv, Some("2"))).unwrap();
    assert_eq!((list.entries(), list.refused), (2, 0), "{list:?}");
    assert!(ThreatIntel::new(vec![list]).lookup(addr("45.9.148.4"), None).is_some());
}

#[test]
fn unreadable_sources_and_missing_columns_are_errors_and_bad_settings_are_named() {
    let missing = IntelSource { path: "/nonexistent/iotgw-intel.txt".into(), format: IntelFormat::Ip, column: None };
    assert!(matches!(load(&missing), Err(IntelError::Read { .. })));
    let file = ScratchFile::new("nocol.csv", "a,b\n1.2.3.4,x\n");
    assert!(matches!(load(&file.source(IntelFormat::Csv, Some("indicator"))), Err(IntelError::NoColumn { .. })));
    assert_eq!(file.source(IntelFormat::Csv, None).problems().len(), 1);
    assert_eq!(file.source(IntelFormat::Ip, Some("2")).problems().len(), 1);
    assert!(file.source(IntelFormat::Csv, Some("2")).problems().is_empty());
}

#[test]
fn refused_lines_are_quoted_escaped() {
    let file = ScratchFile::new("hostile", "evil\u{202e}example.com\r\nfake\nline\u{2028}x\n");
    let list = load(&file.source(IntelFormat::Domain, None)).unwrap();
    assert_eq!(list.refused, 3);
    assert!(list.refused_examples.iter().all(|e| crate::untrusted::is_safe(e)), "{:?}", list.refused_examples);
}

#[test]
fn a_reloaded_list_replaces_the_one_from_its_file() {
    let file = ScratchFile::new("reload", "203.0.113.7\n");
    let source = file.source(IntelFormat::Ip, None);
    let mut intel = load_all(std::slice::from_ref(&source)).unwrap();
    std::fs::write(&source.path, "203.0.113.8\n").unwrap();
    intel.replace(load(&source).unwrap());
    assert_eq!(intel.lists().len(), 1);
    assert!(intel.lookup(addr("203.0.113.7"), None).is_none());
    assert!(intel.lookup(addr("203.0.113.8"), None).is_some());
}
