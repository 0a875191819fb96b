//! The semantic checks, each located at the value it refuses.

use gateway_ebpf::{PortRange, lane};

use crate::policy::{
    ErrorKind, PolicyId,
    load::parse_sources,
    located_errors,
    model::{Direction, Family, IcmpMatch, Protocol},
};

/// Errors of `text` as `(line, column, kind)`, file name `t.toml`.
fn errors(text: &str) -> Vec<(usize, usize, ErrorKind)> {
    located_errors(&[("t.toml", text)])
}

const CAMERA: &str = r#"
[[class]]
name = "camera"
id = 10

[[class.allow]]
nets = ["10.78.0.10/32"]
protocol = "tcp"
ports = [443]
"#;

#[test]
fn valid_class_loads_with_its_rule() {
    let policy = parse_sources(&[("t.toml".into(), CAMERA.into())]).expect("valid");
    let class = policy.class("camera").expect("camera");
    assert_eq!(class.policy_id, PolicyId(lane::FIRST_CLASS_POLICY + 10));
    assert_eq!(class.rules[0].protocol, Protocol::Tcp);
    assert_eq!(class.rules[0].ports, vec![PortRange { first: 443, last: 443 }]);
    assert_eq!(class.rules[0].at.line, 6);
}

#[test]
fn duplicate_class_points_at_second_name_and_first_definition() {
    let found = errors(&format!("{CAMERA}\n[[class]]\nname = \"camera\"\nid = 11\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    let (line, column, kind) = &found[0];
    assert_eq!((*line, *column), (12, 8));
    match kind {
        ErrorKind::DuplicateClass { name, first } => {
            assert_eq!(name, "camera");
            assert_eq!(first.line, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn duplicate_class_id_across_files_is_refused() {
    let found = located_errors(&[("a.toml", CAMERA), ("b.toml", "[[class]]\nname = \"plug\"\nid = 10\n")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (3, 6));
    assert!(matches!(&found[0].2, ErrorKind::DuplicateClassId { id: 10, other, .. } if other == "camera"));
}

#[test]
fn class_id_zero_and_too_large_are_out_of_range() {
    let found = errors("[[class]]\nname = \"a\"\nid = 0\n[[class]]\nname = \"b\"\nid = 70000\n");
    assert_eq!(found, vec![(3, 6, ErrorKind::ClassIdOutOfRange(0)), (6, 6, ErrorKind::ClassIdOutOfRange(70_000)),]);
}

#[test]
fn unknown_included_class_is_located_at_the_reference() {
    let found = errors(
        "[[class]]\nname = \"cam\"\nid = 1\ninclude = [\"base\", \"nope\"]\n[[class]]\nname = \"base\"\nid = 2\n",
    );
    assert_eq!(found, vec![(4, 20, ErrorKind::UnknownClass("nope".into()))]);
}

#[test]
fn include_cycle_is_refused() {
    let found = errors(
        "[[class]]\nname = \"a\"\nid = 1\ninclude = [\"b\"]\n[[class]]\nname = \"b\"\nid = 2\ninclude = [\"a\"]\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(_, _, kind)| matches!(kind, ErrorKind::IncludeCycle(..))));
}

#[test]
fn every_bad_value_in_a_rule_is_reported_with_its_column() {
    let text = r#"[[class]]
name = "cam"
id = 1
[[class.allow]]
nets = ["10.0.0.0/33", "10.1.2.3/8", "not-a-net", "2001:db8::/32"]
names = ["ok.example.com", "bad..example.com", "a.*.example.com"]
protocol = "tcp"
ports = [443, 70000, "90-80", "x", -1, true]
direction = "sideways"
[[class.allow]]
protocol = "icmp"
ports = [1]
nets = ["10.0.0.1"]
[[class.allow]]
protocol = "gre"
[[class.allow]]
description = "nothing"
"#;
    let found = errors(text);
    let at: Vec<(usize, usize)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(
        at,
        vec![
            (5, 9),
            (5, 24),
            (5, 38),
            (6, 28),
            (6, 48),
            (8, 15),
            (8, 22),
            (8, 31),
            (8, 36),
            (8, 40),
            (9, 13),
            (12, 10),
            (14, 1),
            (15, 12),
            (16, 1),
        ],
        "{found:#?}"
    );
    let kinds: Vec<&ErrorKind> = found.iter().map(|(_, _, kind)| kind).collect();
    assert!(matches!(kinds[0], ErrorKind::BadNetwork { .. }));
    assert!(matches!(kinds[1], ErrorKind::HostBitsSet { suggestion, .. } if suggestion == "10.0.0.0/8"));
    assert!(matches!(kinds[2], ErrorKind::BadNetwork { .. }));
    assert!(matches!(kinds[3], ErrorKind::BadDnsName { .. }));
    assert!(matches!(kinds[4], ErrorKind::BadDnsName { .. }));
    assert_eq!(kinds[5], &ErrorKind::PortOutOfRange(70_000));
    assert_eq!(kinds[6], &ErrorKind::ReversedPortRange { first: 90, last: 80 });
    assert!(matches!(kinds[7], ErrorKind::BadPort { .. }));
    assert_eq!(kinds[8], &ErrorKind::PortOutOfRange(-1));
    assert!(matches!(kinds[9], ErrorKind::BadPort { .. }));
    assert_eq!(kinds[10], &ErrorKind::BadDirection("sideways".into()));
    assert_eq!(kinds[11], &ErrorKind::PortsWithoutPortProtocol("icmp".into()));
    assert_eq!(kinds[12], &ErrorKind::EmptyRule);
    assert_eq!(kinds[13], &ErrorKind::BadProtocol("gre".into()));
    assert_eq!(kinds[14], &ErrorKind::EmptyRule);
}

#[test]
fn bad_and_ambiguous_matches_are_refused() {
    let text = r#"[[class]]
name = "a"
id = 1
[class.match]
macs = ["02:00:00:00:00:01", "zz"]
ouis = ["00:1a:2b", "00:1a"]
fingerprint_types = ["ip-camera", " "]
cert_subjects = [""]
[[class]]
name = "b"
id = 2
[class.match]
macs = ["02-00-00-00-00-01"]
ouis = ["001A2B"]
fingerprint_types = ["IP-Camera"]
"#;
    let found = errors(text);
    let summary: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|(l, c, kind)| {
            let name = match kind {
                ErrorKind::BadMac(_) => "mac",
                ErrorKind::BadOui(_) => "oui",
                ErrorKind::EmptyPattern(_) => "empty",
                ErrorKind::AmbiguousMatch { .. } => "ambiguous",
                _ => "other",
            };
            (*l, *c, name)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (5, 30, "mac"),
            (6, 21, "oui"),
            (7, 35, "empty"),
            (8, 18, "empty"),
            (13, 9, "ambiguous"),
            (14, 9, "ambiguous"),
            (15, 22, "ambiguous"),
        ]
    );
}

#[test]
fn fingerprint_types_the_model_cannot_produce_and_bad_confidences_are_refused() {
    let text = r#"[[class]]
name = "a"
id = 1
[class.match]
fingerprint_types = ["ip-camera", "D-Link", "EdimaxPlug1101W", "unknown", "camera", "tv"]
fingerprint_confidence = 1.5
"#;
    let found = errors(text);
    let kinds: Vec<&ErrorKind> = found.iter().map(|(_, _, kind)| kind).collect();
    assert_eq!(kinds.len(), 3, "{found:?}");
    assert!(matches!(kinds[0], ErrorKind::UnknownFingerprintType(name, _) if name == "camera"));
    assert!(matches!(kinds[1], ErrorKind::UnknownFingerprintType(name, _) if name == "tv"));
    assert_eq!(kinds[2], &ErrorKind::BadConfidence("1.5".into()));
    let message = kinds[0].to_string();
    assert!(message.contains("ip-camera") && message.contains("smart-plug"), "{message}");
    assert!(!message.contains(" tv"), "tv is not a type the shipped model produces: {message}");
    let ok = "[[class]]\nname = \"a\"\nid = 1\n[class.match]\nfingerprint_types = [\"ip-camera\"]\nfingerprint_confidence = 0.8\n";
    assert_eq!(errors(ok), vec![]);
}

#[test]
fn lanes_and_defaults_defined_twice_are_refused() {
    let lanes =
        "[lanes.onboarding]\n[[lanes.onboarding.allow]]\nnets = [\"10.77.0.1\"]\n[defaults]\nmalformed = \"drop\"\n";
    let found = located_errors(&[("a.toml", lanes), ("b.toml", lanes)]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(_, _, kind)| matches!(kind, ErrorKind::DuplicateSection { .. })));
}

#[test]
fn bad_verdicts_are_refused_and_quarantine_cannot_pass() {
    let found = errors("[defaults]\nmalformed = \"maybe\"\nquarantine = \"pass\"\npolicy_miss = \"redirect\"\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (2, 13));
    assert_eq!((found[1].0, found[1].1), (3, 14));
    assert!(matches!(&found[1].2, ErrorKind::BadVerdict { what: "quarantine", .. }));
}

#[test]
fn update_lane_must_exist_when_used() {
    let found =
        errors("[[class]]\nname = \"a\"\nid = 1\nupdate_lane = true\n[lanes.quarantine]\ninclude_update = true\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(_, _, kind)| *kind == ErrorKind::MissingUpdateLane));
    let misplaced = errors("[lanes.update]\ninclude_update = true\n");
    assert_eq!(misplaced, vec![(2, 18, ErrorKind::IncludeUpdateOutsideQuarantine)]);
}

#[test]
fn response_tables_are_kept_raw_for_the_response_engine() {
    let policy = parse_sources(&[("r.toml".into(), "[[response]]\nwhen = \"scan\"\naction = \"quarantine\"\n".into())])
        .expect("response tables are not checked here");
    assert_eq!(policy.responses.len(), 1);
    assert_eq!(policy.responses[0].value.get("action").and_then(|v| v.as_str()), Some("quarantine"));
}

#[test]
fn source_ports_and_icmp_types_are_checked_where_they_are_written() {
    let text = r#"[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.0.0.1"]
protocol = "icmp"
source_ports = [1]
icmp_types = ["8/0", "256", "3/300", "x", true]
[[class.allow]]
nets = ["10.0.0.1"]
source_ports = [5]
icmp_types = [8]
[[class.allow]]
nets = ["10.0.0.1"]
protocol = "udp"
source_ports = [70000, "9-1"]
icmp_types = ["0"]
"#;
    let found = errors(text);
    let summary: Vec<(usize, usize, &ErrorKind)> = found.iter().map(|(l, c, k)| (*l, *c, k)).collect();
    assert_eq!(
        summary,
        vec![
            (7, 17, &ErrorKind::SourcePortsWithoutPortProtocol("icmp".into())),
            (8, 22, &bad_icmp("256", "type 256 out of range 0..=255")),
            (8, 29, &bad_icmp("3/300", "code 300 out of range 0..=255")),
            (8, 38, &bad_icmp("x", "expected \"T\" or \"T/C\" (numbers)")),
            (8, 43, &bad_icmp("true", "expected \"T\" or \"T/C\"")),
            (11, 17, &ErrorKind::SourcePortsWithoutPortProtocol("any".into())),
            (12, 15, &ErrorKind::IcmpTypesWithoutIcmp("any".into())),
            (16, 17, &ErrorKind::PortOutOfRange(70_000)),
            (16, 24, &ErrorKind::ReversedPortRange { first: 9, last: 1 }),
            (17, 15, &ErrorKind::IcmpTypesWithoutIcmp("udp".into())),
        ],
        "{found:#?}"
    );
}

fn bad_icmp(input: &str, reason: &str) -> ErrorKind {
    ErrorKind::BadIcmpType { input: input.into(), reason: reason.into() }
}

#[test]
fn source_ports_and_icmp_types_reach_the_model_and_old_rules_keep_their_meaning() {
    let text = r#"[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.0.0.1"]
protocol = "tcp"
ports = [554]
direction = "inbound"
[[class.allow]]
nets = ["10.0.0.2"]
protocol = "udp"
ports = [123]
source_ports = ["1024-65535", 123]
[[class.allow]]
nets = ["10.0.0.3"]
protocol = "icmp"
icmp_types = ["8/0", 8, "3/4", "3/1"]
"#;
    let policy = parse_sources(&[("t.toml".into(), text.into())]).expect("valid");
    let rules = &policy.class("c").expect("c").rules;
    let all = PortRange { first: 0, last: u16::MAX };
    // `ports` on an inbound rule is the device's own port; nothing else changes.
    assert_eq!(
        (rules[0].ports.as_slice(), rules[0].source_ports.as_slice()),
        (&[PortRange { first: 554, last: 554 }][..], &[all][..])
    );
    assert_eq!(rules[0].direction, Direction::Inbound);
    assert!(rules[0].icmp.is_empty());
    assert_eq!(
        rules[1].source_ports,
        vec![PortRange { first: 123, last: 123 }, PortRange { first: 1024, last: 65_535 }]
    );
    // A whole type covers its codes.
    assert_eq!(
        rules[2].icmp,
        vec![
            IcmpMatch { kind: 3, code: Some(1) },
            IcmpMatch { kind: 3, code: Some(4) },
            IcmpMatch { kind: 8, code: None }
        ]
    );
    assert_eq!(rules[2].icmp[1].to_string(), "3/4");
}

#[test]
fn family_is_read_and_refuses_networks_of_the_other_family() {
    let text = r#"[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.0.0.1", "2001:db8::/32"]
family = "ipv4"
[[class.allow]]
names = ["a.example.com"]
family = "IPv6"
[[class.allow]]
names = ["b.example.com"]
family = "ipv5"
"#;
    let found = errors(text);
    let summary: Vec<(usize, usize, &ErrorKind)> = found.iter().map(|(l, c, k)| (*l, *c, k)).collect();
    assert_eq!(
        summary,
        vec![
            (5, 21, &ErrorKind::NetOutsideFamily { net: "2001:db8::/32".into(), family: "ipv4" }),
            (12, 10, &ErrorKind::BadFamily("ipv5".into())),
        ],
        "{found:#?}"
    );
    let valid = text.replace(", \"2001:db8::/32\"", "").replace("ipv5", "ipv4");
    let policy = parse_sources(&[("t.toml".into(), valid)]).expect("valid");
    let families: Vec<Option<Family>> = policy.class("c").expect("c").rules.iter().map(|rule| rule.family).collect();
    assert_eq!(families, [Some(Family::Ipv4), Some(Family::Ipv6), Some(Family::Ipv4)]);
}
