//! One MUD file per feature (`policy/testdata/*.mud.json`, written from RFC 8520's examples
//! and the YANG models), each with the exact rules its import must produce.
use gateway_ebpf::{lane, proto};

use super::*;
use crate::policy::check_text;

fn testdata(name: &str) -> String {
    let path = format!("{}/src/policy/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The imported class's rules, one line each: every key but the description, sorted, as TOML.
fn allow_lines(toml_text: &str) -> Vec<String> {
    let value: toml::Value = toml::from_str(toml_text).expect("imported TOML parses");
    let class = &value["class"][0];
    let Some(rules) = class.get("allow").and_then(toml::Value::as_array) else { return Vec::new() };
    rules
        .iter()
        .map(|rule| {
            let table = rule.as_table().expect("a table");
            let mut keys: Vec<&String> = table.keys().filter(|key| *key != "description").collect();
            keys.sort();
            keys.iter().map(|key| format!("{key}={}", table[*key])).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn refused_lines(imported: &[Refusal]) -> Vec<String> {
    imported.iter().map(|r| format!("{}/{} {}", r.acl, r.ace, r.field)).collect()
}

#[test]
fn rfc8520_example_imports_pairs_as_connections_and_refuses_the_lone_to_device_ace() {
    let imported = import(&testdata("lightbulb.mud.json"), "lightbulb", 40).expect("imports");
    assert_eq!(
        allow_lines(&imported.toml),
        [
            r#"direction="outbound" names=["test.example.com"] ports=[443] protocol="tcp""#,
            r#"direction="outbound" nets=["198.51.100.123/32"] ports=[123] protocol="udp""#,
            r#"direction="both" nets=["0.0.0.0/0"] protocol="tcp" remote="my-controller""#,
        ]
    );
    // The management ACE opens connections to the device, but nothing lets the device answer.
    assert_eq!(refused_lines(&imported.refused), ["mud-76100-v4to/mgmt-todev (from-device twin)"]);
    assert!(imported.notes.iter().any(|note| note.contains("mud-76100-v4fr/block-telnet")), "{:?}", imported.notes);
    assert!(imported.toml.contains("controllers = []"));
    assert!(imported.toml.contains("MUD ACE mud-76100-v6fr/cl0-frdev, mud-76100-v4fr/cl0-frdev"), "{}", imported.toml);
    let compiled = check_text(&imported.toml);
    assert_eq!(compiled.source.classes[0].description.as_deref(), Some("The BMS Example Light Bulb"));
    assert_eq!(compiled.dns_rules.len(), 1);
    let id = crate::policy::PolicyId(lane::FIRST_CLASS_POLICY + 40);
    let ntp = compiled.rules.iter().find(|rule| rule.net.to_string() == "198.51.100.123/32").expect("ntp entry");
    assert_eq!((ntp.policy_id, ntp.proto), (id, proto::UDP));
}

#[test]
fn draft_container_of_mudgee_files_is_read_with_a_note() {
    let imported = import(&testdata("draft-container.mud.json"), "plug", 41).expect("imports");
    assert!(imported.notes[0].contains("draft-era container"), "{:?}", imported.notes);
    assert!(imported.refused.is_empty(), "{:?}", imported.refused);
    assert_eq!(
        allow_lines(&imported.toml),
        [
            r#"direction="outbound" nets=["198.51.100.123/32"] ports=[123] protocol="udp""#,
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[53] protocol="udp" remote="gateway""#,
        ]
    );
}

#[test]
fn device_side_ports_and_direction_initiated_are_kept() {
    let imported = import(&testdata("device-ports.mud.json"), "sensor", 42).expect("imports");
    assert!(imported.refused.is_empty(), "{:?}", imported.refused);
    assert_eq!(
        allow_lines(&imported.toml),
        [
            // Remotes open HTTPS to the device's own 443: inbound, never "every port".
            r#"direction="inbound" nets=["203.0.113.0/24"] ports=[443] protocol="tcp""#,
            r#"direction="outbound" nets=["203.0.113.7/32"] ports=["5683-5684"] protocol="udp" source_ports=[5683]"#,
        ]
    );
}

#[test]
fn icmp_type_and_code_are_kept_and_replies_pair_with_requests() {
    let imported = import(&testdata("icmp.mud.json"), "pinger", 43).expect("imports");
    assert!(imported.refused.is_empty(), "{:?}", imported.refused);
    assert_eq!(
        allow_lines(&imported.toml),
        [
            r#"direction="outbound" icmp_types=["8/0"] nets=["198.51.100.0/24"] protocol="icmp""#,
            r#"direction="outbound" icmp_types=["128"] nets=["2001:db8:64::/48"] protocol="icmp""#,
        ]
    );
}

#[test]
fn a_file_of_lone_to_device_aces_is_refused_naming_them() {
    match import(&testdata("lone-to-device.mud.json"), "listener", 44) {
        Err(MudError::NothingRepresentable(refused)) => {
            assert_eq!(refused_lines(&refused), ["v4-to/syslog-in (from-device twin)"]);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn ipv6_acls_stay_ipv6_and_a_one_family_name_opens_its_aaaa_answers_only() {
    let imported = import(&testdata("ipv6-only.mud.json"), "six", 45).expect("imports");
    assert!(imported.refused.is_empty(), "{:?}", imported.refused);
    assert_eq!(
        allow_lines(&imported.toml),
        [
            r#"direction="outbound" nets=["::/0"] ports=[443] protocol="tcp""#,
            r#"direction="outbound" family="ipv6" names=["cloud.example.com"] ports=[8883] protocol="tcp""#,
            r#"direction="outbound" nets=["::/0"] ports=[5353] protocol="udp" remote="local-networks""#,
        ]
    );
    let compiled = check_text(&imported.toml);
    assert!(compiled.rules.iter().all(|rule| rule.net.addr().is_ipv6()), "{:#?}", compiled.rules);
    let [name] = compiled.dns_rules.as_slice() else { panic!("{:#?}", compiled.dns_rules) };
    assert!(name.matches_v4.is_empty() && !name.matches_v6.is_empty(), "{name:#?}");
}

#[test]
fn abstractions_become_remotes_the_gateway_resolves() {
    let imported = import(&testdata("abstractions.mud.json"), "bulb", 46).expect("imports");
    assert_eq!(
        allow_lines(&imported.toml),
        [
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[5353] protocol="udp" remote="local-networks""#,
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[53] protocol="udp" remote="gateway""#,
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[123] protocol="udp" remote="gateway""#,
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[8443] protocol="tcp" remote="controller:https://lighting.example.com/hub-class""#,
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[9000] protocol="tcp" remote="my-controller""#,
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[5683] protocol="udp" remote="manufacturer:lighting.example.com""#,
            r#"direction="outbound" nets=["0.0.0.0/0"] ports=[5684] protocol="udp" remote="manufacturer:switches.example.net""#,
            r#"direction="inbound" nets=["0.0.0.0/0"] ports=[80] protocol="tcp" remote="model:https://lighting.example.com/remote3000""#,
            r#"direction="outbound" nets=["10.77.255.255/32"] ports=[9999] protocol="udp" remote="local-networks""#,
        ]
    );
    // A controller by URI is the site's; `my-controller` the class's own list.
    assert!(imported.refused.is_empty(), "{:?}", imported.refused);
    let notes = imported.notes.join("\n");
    assert!(notes.contains("\"https://lighting.example.com/hub-class\" in `[policy] controllers`"), "{notes}");
    assert!(notes.contains("\"my-controller\" in the class's `controllers`"), "{notes}");
}

#[test]
fn non_ip_aces_need_no_rule_and_an_ip_ethertype_gives_the_family() {
    let imported = import(&testdata("link-layer.mud.json"), "plug", 52).expect("imports");
    assert_eq!(allow_lines(&imported.toml), [r#"direction="outbound" nets=["0.0.0.0/0"] ports=[123] protocol="udp""#]);
    assert_eq!(refused_lines(&imported.refused), ["fr-eth/arp-to-siblings matches/ietf-mud:mud"]);
    let note = imported.notes.iter().find(|note| note.contains("non-IP")).expect("a note");
    assert!(
        note.contains("fr-eth/arp (EtherType 0x0806)") && note.contains("fr-eth/eapol (EtherType 0x888e)"),
        "{note}"
    );
    // An EtherType that contradicts the IP match is no valid file.
    let sample = testdata("link-layer.mud.json");
    let contradiction = sample.replacen("\"ethertype\": \"ipv4\" }", "\"ethertype\": \"ipv4\" }, \"ipv6\": {}", 1);
    assert_ne!(contradiction, sample);
    let error = import(&contradiction, "plug", 52).expect_err("contradiction");
    assert!(error.to_string().contains("/matches/eth/ethertype"), "{error}");
}

#[test]
fn duplicate_acl_names_refuse_the_file_and_empty_lists_are_valid() {
    let error = import(&testdata("duplicate-acl.mud.json"), "twice", 47).expect_err("duplicate");
    assert_eq!(error.to_string(), "/ietf-access-control-list:acls/acl/1/name: duplicate ACL name \"v4-fr\"");
    let imported = import(&testdata("empty-acls.mud.json"), "quiet", 48).expect("valid and empty");
    assert_eq!((imported.rules, imported.refused.len()), (0, 0));
    assert!(allow_lines(&imported.toml).is_empty());
    check_text(&imported.toml);
}

#[test]
fn an_accept_after_an_overlapping_drop_is_refused() {
    let imported = import(&testdata("drop-shadow.mud.json"), "shadow", 49).expect("imports");
    assert_eq!(refused_lines(&imported.refused), ["v4-fr/all-tcp-to-lab actions/forwarding"]);
    assert!(imported.refused[0].reason.contains("deny-first/no-telnet"), "{}", imported.refused[0]);
    assert_eq!(
        allow_lines(&imported.toml),
        [r#"direction="outbound" nets=["203.0.113.53/32"] ports=[53] protocol="udp""#]
    );
}

#[test]
fn unrepresentable_fields_are_refused_by_name() {
    let sample = testdata("draft-container.mud.json");
    let cases = [
        (
            "\"protocol\": 17, \"destination-ipv4-network\"",
            "\"protocol\": 17, \"ttl\": 3, \"destination-ipv4-network\"",
            "matches/ipv4/ttl",
        ),
        (
            "\"ipv4\": { \"protocol\": 17 },\n                         \"udp\": { \"destination-port\"",
            "\"ipv4\": { \"protocol\": 17, \"source-ipv4-network\": \"10.77.0.5/32\" },\n                         \"udp\": { \"destination-port\"",
            "matches/ipv4/source-ipv4-network",
        ),
        (
            "\"controller\": \"urn:ietf:params:mud:dns\" },\n                         \"ipv4\": { \"protocol\": 17 },\n                         \"udp\": { \"destination",
            "\"controller\": \"urn:ietf:params:mud:dns\" },\n                         \"eth\": { \"destination-mac-address\": \"ff:ff:ff:ff:ff:ff\" },\n                         \"ipv4\": { \"protocol\": 17 },\n                         \"udp\": { \"destination",
            "matches/eth/destination-mac-address",
        ),
    ];
    for (from, to, field) in cases {
        let changed = sample.replacen(from, to, 1);
        assert_ne!(changed, sample, "{field}");
        let imported = import(&changed, "plug", 41).expect("imports the rest");
        assert!(imported.refused.iter().any(|refusal| refusal.field == field), "{field}: {:?}", imported.refused);
    }
    // An EtherType the IP match implies is no refusal.
    let implied = sample.replacen(
        "\"ipv4\": { \"protocol\": 17, \"destination",
        "\"eth\": { \"ethertype\": \"0x0800\" }, \"ipv4\": { \"protocol\": 17, \"destination",
        1,
    );
    assert_ne!(implied, sample);
    assert!(import(&implied, "plug", 41).expect("imports").refused.is_empty());
}

#[test]
fn malformed_mud_is_refused_with_the_json_path() {
    let sample = testdata("lightbulb.mud.json");
    assert!(matches!(import("{", "x", 1), Err(MudError::Json(_))));
    let not_mud = import("{\"foo\": 1}", "x", 1).expect_err("not MUD");
    assert!(not_mud.to_string().starts_with("/ietf-mud:mud:"), "{not_mud}");
    let dangling = sample.replace("\"name\": \"mud-76100-v4to\",", "\"name\": \"renamed\",");
    assert_ne!(dangling, sample);
    let error = import(&dangling, "x", 1).expect_err("missing ACL");
    assert!(error.to_string().contains("\"mud-76100-v4to\" is referenced but not defined"), "{error}");
    let bad_net = sample.replacen("198.51.100.123/32", "198.51.100.300/32", 1);
    assert!(import(&bad_net, "x", 1).expect_err("bad network").to_string().contains("source-ipv4-network"));
    let bad_port = sample.replacen("\"port\": 123", "\"port\": 70000", 1);
    assert!(import(&bad_port, "x", 1).expect_err("bad port").to_string().contains("not a port"));
    let duplicate_ace = sample.replacen("\"name\": \"ntp-todev\"", "\"name\": \"cl0-todev\"", 1);
    assert!(import(&duplicate_ace, "x", 1).expect_err("duplicate ACE").to_string().contains("duplicate ACE name"));
    let version = sample.replace("\"mud-version\": 1", "\"mud-version\": 2");
    assert!(import(&version, "x", 1).is_err());
    let both = sample.replacen(
        "\"ietf-access-control-list:acls\": {",
        "\"ietf-access-control-list:access-lists\": {}, \"ietf-access-control-list:acls\": {",
        1,
    );
    assert!(import(&both, "x", 1).expect_err("two containers").to_string().contains("given twice"));
}

#[test]
fn bad_class_name_or_id_is_refused_by_the_policy_check() {
    let sample = testdata("lightbulb.mud.json");
    assert!(matches!(import(&sample, "bad name", 1), Err(MudError::Check(_))));
    assert!(matches!(import(&sample, "ok", 0), Err(MudError::Check(_))));
}

#[test]
fn extensions_are_refused_and_a_file_of_only_them_imports_nothing() {
    match import(&testdata("extension-only.mud.json"), "printer", 50) {
        Err(MudError::NothingRepresentable(refused)) => {
            assert_eq!(refused.len(), 1);
            assert_eq!(
                refused[0].to_string(),
                "extensions/example-broadcast-discovery: MUD extension not represented (what it allows is not granted)"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn draft_acl_members_are_read_as_rfc_8519_with_a_note() {
    let imported = import(&testdata("draft-members.mud.json"), "thermostat", 51).expect("imports");
    assert!(imported.refused.is_empty(), "{:?}", imported.refused);
    assert_eq!(
        allow_lines(&imported.toml),
        [r#"direction="outbound" nets=["203.0.113.10/32"] ports=[8883] protocol="tcp""#]
    );
    let note = imported.notes.iter().find(|note| note.contains("draft-era ACL members")).expect("a note");
    assert!(note.contains("access-list-entries") && note.contains("destination-port-range-or-operator"), "{note}");
}
