use std::net::Ipv4Addr;

use dhcproto::{Encodable as _, Encoder, v4};
use gateway_ebpf::SynFingerprint;

use super::{ingest::is_flow_source_address, *};
use crate::{
    datapath::{
        DeviceAccess,
        events::{DatapathEvent, FlowObservation, PacketSample, SampleKind},
        traffic::TrafficCounters,
    },
    device::Access,
};

const HUE: &str = "00:17:88:24:76:ff";

/// A folder removed when dropped (also when the test fails).
struct TempDir(iotgw_test_support::services::Scratch);

impl TempDir {
    fn new(name: &str) -> Self {
        Self(iotgw_test_support::services::scratch(&format!("inventory-{name}")))
    }
}

fn vendors(dir: &std::path::Path) -> Vendors {
    std::fs::write(
        dir.join("oui.csv"),
        "Registry,Assignment,Organization Name,Organization Address\nMA-L,001788,Philips Lighting BV,Eindhoven NL\n",
    )
    .unwrap();
    Vendors::load(dir).unwrap()
}

fn t(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn flow(mac: Mac, dst_port: u16, seconds: u64) -> DatapathEvent {
    let mut syn = SynFingerprint {
        window: 14_600,
        mss: 1460,
        ttl: 64,
        window_scale: 4,
        option_count: 3,
        dont_fragment: 1,
        ..Default::default()
    };
    syn.option_kinds[..3].copy_from_slice(&[2, 1, 3]);
    DatapathEvent::Flow(FlowObservation {
        time: t(seconds),
        mac,
        src: IpAddr::V4(Ipv4Addr::new(10, 10, 10, 6)),
        dst: IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
        src_port: 40_000,
        dst_port,
        proto: gateway_ebpf::proto::TCP,
        frame_bytes: 74,
        tcp_flags: 0x02,
        syn: Some(syn),
        verdict: gateway_ebpf::verdict::PASS,
        reason: gateway_ebpf::reason::NONE,
        access: Access::Unknown,
    })
}

fn dhcp_request(mac: Mac, hostname: &str) -> DatapathEvent {
    let mut message = v4::Message::default();
    message.set_chaddr(&mac.0);
    let opts = message.opts_mut();
    opts.insert(v4::DhcpOption::MessageType(v4::MessageType::Request));
    opts.insert(v4::DhcpOption::ParameterRequestList(vec![v4::OptionCode::SubnetMask, v4::OptionCode::Router]));
    opts.insert(v4::DhcpOption::Hostname(hostname.into()));
    let mut data = Vec::new();
    message.encode(&mut Encoder::new(&mut data)).unwrap();
    DatapathEvent::Sample(PacketSample {
        time: t(1),
        mac,
        kind: SampleKind::Dhcp,
        data,
        payload_offset: 0,
        frame_bytes: 342,
        verdict: gateway_ebpf::verdict::PASS,
    })
}

#[test]
fn inventory_survives_reopen_with_devices_fingerprints_and_audit() {
    let dir = TempDir::new("reopen");
    let path = dir.0.join("store.db");
    let mac: Mac = HUE.parse().unwrap();
    {
        let mut inventory = Inventory::new(crate::store::open(&path, &[MIGRATIONS]).unwrap(), vendors(&dir.0), None);
        let changes = inventory.handle(&flow(mac, 443, 0)).unwrap();
        assert!(changes.contains(&InventoryChange::NewDevice { mac, vendor: Some("Philips Lighting BV".into()) }));
        assert!(changes.contains(&InventoryChange::NewAddress { mac, ip: "10.10.10.6".parse().unwrap() }));
        assert!(
            changes.iter().any(|c| matches!(c, InventoryChange::NewFingerprint { kind: FingerprintKind::TcpSyn, .. }))
        );
        let changes = inventory.handle(&dhcp_request(mac, "Philips-hue")).unwrap();
        assert!(changes.contains(&InventoryChange::HostnameChanged {
            mac,
            hostname: "Philips-hue".into(),
            previous: None
        }));
        // The same flow again is no news.
        assert!(inventory.handle(&flow(mac, 443, 2)).unwrap().is_empty());
    }
    let inventory = Inventory::new(crate::store::open(&path, &[MIGRATIONS]).unwrap(), Vendors::empty(), None);
    let devices = inventory.devices().unwrap();
    assert_eq!(devices.len(), 1);
    let device = &devices[0];
    assert_eq!(device.vendor.as_deref(), Some("Philips Lighting BV"));
    assert_eq!(device.hostname.as_deref(), Some("Philips-hue"));
    assert_eq!(device.ips, vec!["10.10.10.6".parse::<IpAddr>().unwrap()]);
    assert_eq!(device.flows_total, 2);
    assert_eq!(device.first_seen, datetime(millis(t(0))));
    assert_eq!(device.last_seen, datetime(millis(t(2))));
    let detail = inventory.device(mac).unwrap().unwrap();
    let kinds: Vec<_> = detail.fingerprints.iter().map(|f| (f.kind, f.value.as_str())).collect();
    assert!(kinds.contains(&(FingerprintKind::DhcpParameterList, "1,3")));
    assert!(kinds.contains(&(FingerprintKind::TcpSyn, "64:14600:1460:4:mss,nop,ws:df")));
    let syn = detail.fingerprints.iter().find(|f| f.kind == FingerprintKind::TcpSyn).unwrap();
    assert_eq!(syn.count, 2);
    let actions: Vec<_> = inventory.audit_log(Some(mac), 100).unwrap().into_iter().map(|a| a.action).collect();
    assert_eq!(actions, vec!["hostname_changed", "address_added", "device_added"]);
    // JSON as the API will serve it.
    let json = serde_json::to_value(&detail).unwrap();
    assert_eq!(json["mac"], HUE);
    assert_eq!(json["access"], "unknown");
    assert!(json["first_seen"].as_str().unwrap().starts_with("2023-11-14T"));
}

#[test]
fn dhcp_hostname_with_a_forged_line_is_stored_escaped_and_renders_on_one_line() {
    let dir = TempDir::new("forged-hostname");
    let mut inventory =
        Inventory::new(crate::store::open(&dir.0.join("store.db"), &[MIGRATIONS]).unwrap(), Vendors::empty(), None);
    let mac: Mac = HUE.parse().unwrap();
    let hostile = "cam\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\u{2028}x\u{202e}gpj.exe";
    let escaped = "cam\\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\\u2028x\\u202egpj.exe";
    let changes = inventory.handle(&dhcp_request(mac, hostile)).unwrap();
    let change = changes
        .iter()
        .find(|c| matches!(c, InventoryChange::HostnameChanged { .. }))
        .expect("the host name was recorded");
    assert_eq!(change, &InventoryChange::HostnameChanged { mac, hostname: escaped.into(), previous: None });
    assert_eq!(inventory.devices().unwrap()[0].hostname.as_deref(), Some(escaped));
    let audit = inventory.audit_log(Some(mac), 10).unwrap();
    assert!(audit.iter().all(|a| crate::untrusted::is_safe(&a.detail)), "{audit:?}");
    let event = change.to_gateway_event().expect("host name changes are published");
    crate::integrations::render::fixtures::assert_renders_safely(&event, escaped);
}

#[test]
fn a_second_connection_reads_what_the_inventory_writes() {
    let dir = TempDir::new("reader");
    let path = dir.0.join("store.db");
    let mut inventory = Inventory::new(crate::store::open(&path, &[MIGRATIONS]).unwrap(), Vendors::empty(), None);
    let reader = crate::store::open(&path, &[MIGRATIONS]).unwrap();
    let mac: Mac = HUE.parse().unwrap();
    assert!(query::devices(&reader).unwrap().is_empty());
    inventory.handle(&flow(mac, 443, 0)).unwrap();
    assert_eq!(query::devices(&reader).unwrap()[0].mac, mac);
    assert_eq!(query::flows(&reader, mac, 10).unwrap().len(), 1);
    assert_eq!(query::audit_log(&reader, Some(mac), 10).unwrap().len(), 2);
}

#[test]
fn recorded_access_with_policy_and_class_is_what_a_restart_enforces() {
    let dir = TempDir::new("enforced");
    let path = dir.0.join("store.db");
    let (blocked, quarantined, seen): (Mac, Mac, Mac) =
        ("02:00:00:00:00:01".parse().unwrap(), "02:00:00:00:00:02".parse().unwrap(), HUE.parse().unwrap());
    {
        let mut inventory = Inventory::new(crate::store::open(&path, &[MIGRATIONS]).unwrap(), Vendors::empty(), None);
        inventory.handle(&flow(seen, 443, 0)).unwrap();
        let enrolled = DeviceAccess { access: Access::Enrolled, policy_id: 36, class_id: 20 };
        assert_eq!(inventory.record_access(blocked, enrolled, "identity", "enrolled").unwrap(), Access::Unknown);
        let block = DeviceAccess { access: Access::Blocked, ..enrolled };
        assert_eq!(inventory.record_access(blocked, block, "api:alice", "stolen").unwrap(), Access::Enrolled);
        let quarantine = DeviceAccess { access: Access::Quarantined, policy_id: 17, class_id: 1 };
        inventory.record_access(quarantined, quarantine, "respond:scan", "incident 7").unwrap();
        // `set_access` keeps the recorded policy and class.
        inventory.set_access(quarantined, Access::Quarantined, "api:bob", "again").unwrap();
    }
    let inventory = Inventory::new(crate::store::open(&path, &[MIGRATIONS]).unwrap(), Vendors::empty(), None);
    assert_eq!(
        inventory.enforced().unwrap(),
        vec![
            (blocked, DeviceAccess { access: Access::Blocked, policy_id: 36, class_id: 20 }),
            (quarantined, DeviceAccess { access: Access::Quarantined, policy_id: 17, class_id: 1 }),
        ],
        "devices only seen are not in the device table"
    );
    let trail: Vec<_> = inventory
        .audit_log(Some(blocked), 10)
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "access_changed")
        .map(|a| (a.actor, a.detail))
        .collect();
    assert_eq!(
        trail,
        vec![
            ("api:alice".to_owned(), "enrolled -> blocked: stolen".to_owned()),
            ("identity".to_owned(), "unknown -> enrolled: enrolled".to_owned()),
        ]
    );
}

#[test]
fn set_access_records_who_and_previous_state_and_refuses_bad_input() {
    let dir = TempDir::new("access");
    let mut inventory =
        Inventory::new(crate::store::open(&dir.0.join("store.db"), &[MIGRATIONS]).unwrap(), Vendors::empty(), None);
    let mac: Mac = "02:00:00:00:00:01".parse().unwrap();
    assert_eq!(inventory.set_access(mac, Access::Quarantined, "detector:scan", "incident 7").unwrap(), Access::Unknown);
    assert_eq!(inventory.set_access(mac, Access::Quarantined, "api:alice", "again").unwrap(), Access::Quarantined);
    assert_eq!(inventory.set_access(mac, Access::Enrolled, "api:alice", "released").unwrap(), Access::Quarantined);
    let before = inventory.audit_log(None, 100).unwrap();
    assert!(matches!(
        inventory.set_access(mac, Access::Blocked, "", "x"),
        Err(InventoryError::Invalid { field: "actor", .. })
    ));
    assert!(matches!(inventory.set_firmware(mac, "1.0\n", "ota"), Err(InventoryError::Invalid { .. })));
    assert!(matches!(
        inventory.set_firmware(mac, &"9".repeat(MAX_TEXT + 1), "ota"),
        Err(InventoryError::Invalid { .. })
    ));
    assert_eq!(inventory.audit_log(None, 100).unwrap(), before, "refused calls change nothing");
    inventory.set_identity(mac, "CN=plug-17,O=Acme", "dev-17", "enrollment").unwrap();
    inventory.set_firmware(mac, "2.4.1", "ota").unwrap();
    inventory.set_class(mac, "smart-plug", "policy-file").unwrap();
    inventory.set_lifecycle(mac, "enrolled", "enrollment").unwrap();
    inventory.audit("policy-file", None, "policy_reloaded", "3 classes").unwrap();
    let device = inventory.device(mac).unwrap().unwrap().device;
    assert_eq!(device.access, Access::Enrolled);
    assert!(device.locally_administered);
    assert_eq!(device.vendor, None);
    assert_eq!(device.cert_subject.as_deref(), Some("CN=plug-17,O=Acme"));
    assert_eq!(device.firmware_version.as_deref(), Some("2.4.1"));
    assert_eq!(device.class.as_deref(), Some("smart-plug"));
    assert_eq!(device.lifecycle.as_deref(), Some("enrolled"));
    let log = inventory.audit_log(Some(mac), 100).unwrap();
    let summary: Vec<_> = log.iter().rev().map(|a| (a.actor.as_str(), a.action.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            ("detector:scan", "device_added"),
            ("detector:scan", "access_changed"),
            ("api:alice", "access_changed"),
            ("enrollment", "identity_changed"),
            ("ota", "firmware_changed"),
            ("policy-file", "class_changed"),
            ("enrollment", "lifecycle_changed"),
        ]
    );
    assert!(log.iter().any(|a| a.actor == "detector:scan" && a.detail == "unknown -> quarantined: incident 7"));
    assert!(log.iter().any(|a| a.detail == "quarantined -> enrolled: released"));
    assert_eq!(inventory.audit_log(None, 100).unwrap()[0].action, "policy_reloaded");
}

#[test]
fn changes_become_audit_events_except_fingerprint_values() {
    let mac: Mac = HUE.parse().unwrap();
    let event =
        InventoryChange::NewDevice { mac, vendor: Some("Philips Lighting BV".into()) }.to_gateway_event().unwrap();
    assert_eq!(event.device, Some(mac));
    assert_eq!(event.actor, ACTOR_INVENTORY);
    assert_eq!(event.kind_name(), "audit");
    let kind = FingerprintKind::DnsName;
    assert!(InventoryChange::NewFingerprint { mac, kind, value: "a.example".into() }.to_gateway_event().is_none());
}

#[test]
fn flows_are_kept_per_device_up_to_the_bound() {
    let config = Config { flows_per_device: 5, ..Config::default() };
    let mut inventory = Inventory::new(crate::store::open_in_memory(&[MIGRATIONS]).unwrap(), Vendors::empty(), None)
        .with_config(&config);
    let mac: Mac = HUE.parse().unwrap();
    let events: Vec<_> = (0..12).map(|i| flow(mac, 1000 + i, u64::from(i))).collect();
    inventory.handle_batch(&events).unwrap();
    let flows = inventory.flows(mac, 100).unwrap();
    assert_eq!(flows.iter().map(|f| f.dst_port).collect::<Vec<_>>(), vec![1011, 1010, 1009, 1008, 1007]);
    assert_eq!(flows[0].verdict, "pass");
    assert_eq!(flows[0].reason, "none");
    assert_eq!(inventory.flows(mac, 2).unwrap().len(), 2);
    assert_eq!(inventory.device(mac).unwrap().unwrap().device.flows_total, 12);
}

#[test]
fn traffic_adds_up_per_bucket_and_in_totals() {
    let mut inventory = Inventory::new(crate::store::open_in_memory(&[MIGRATIONS]).unwrap(), Vendors::empty(), None);
    let mac: Mac = HUE.parse().unwrap();
    let counters = TrafficCounters { tx_bytes: 100, tx_packets: 2, rx_bytes: 50, rx_packets: 1 };
    inventory.record_traffic(mac, t(0), &counters).unwrap();
    inventory.record_traffic(mac, t(30), &counters).unwrap();
    inventory.record_traffic(mac, t(60), &counters).unwrap();
    let rows = inventory.traffic(mac, 10).unwrap();
    assert_eq!(rows.len(), 2, "two one-minute buckets");
    assert_eq!(rows.iter().map(|r| r.tx_bytes).sum::<u64>(), 300);
    let totals = inventory.device(mac).unwrap().unwrap().device.traffic;
    assert_eq!(totals, TrafficTotals { tx_bytes: 300, tx_packets: 6, rx_bytes: 150, rx_packets: 3 });
}

#[test]
fn malformed_sample_changes_nothing() {
    let mut inventory = Inventory::new(crate::store::open_in_memory(&[MIGRATIONS]).unwrap(), Vendors::empty(), None);
    let mac: Mac = HUE.parse().unwrap();
    for kind in [SampleKind::Dhcp, SampleKind::Dns, SampleKind::Tls, SampleKind::Arp] {
        let garbage = DatapathEvent::Sample(PacketSample {
            time: t(0),
            mac,
            kind,
            data: vec![0x16, 0x03, 0xff],
            payload_offset: 0,
            frame_bytes: 60,
            verdict: gateway_ebpf::verdict::PASS,
        });
        assert!(inventory.handle(&garbage).unwrap().is_empty());
    }
    assert!(inventory.devices().unwrap().is_empty());
    assert!(inventory.audit_log(None, 10).unwrap().is_empty());
    assert_eq!(inventory.stats().unparsed_samples, 4);
}

#[test]
fn router_forwarded_public_sources_are_not_device_addresses() {
    let mac: Mac = HUE.parse().unwrap();
    assert!(is_flow_source_address(&mac, &"192.168.1.20".parse().unwrap()));
    assert!(is_flow_source_address(&mac, &"fe80::1".parse().unwrap()));
    assert!(is_flow_source_address(&mac, &"2001:db8::217:88ff:fe24:76ff".parse().unwrap()), "EUI-64 of the MAC");
    assert!(!is_flow_source_address(&mac, &"2001:db8::1".parse().unwrap()));
    assert!(!is_flow_source_address(&mac, &"93.184.216.34".parse().unwrap()));
    assert!(!is_flow_source_address(&mac, &"0.0.0.0".parse().unwrap()));
}
