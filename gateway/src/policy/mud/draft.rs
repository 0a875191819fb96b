//! Draft-era spellings of the ACL model (draft-ietf-netmod-acl-model before RFC 8519), as
//! files in the wild still use them (osMUD's examples), rewritten into RFC 8519's before the
//! importer reads them. Reads and rewrites the ACL list in place; says what it rewrote.
use serde_json::{Map, Value};

/// Renamed members: (draft, RFC 8519), per object kind.
const ACL_KEYS: &[(&str, &str)] = &[("acl-type", "type"), ("access-list-entries", "aces")];
const ACE_KEYS: &[(&str, &str)] = &[("rule-name", "name")];
const MATCH_KEYS: &[(&str, &str)] = &[("ipv4-acl", "ipv4"), ("ipv6-acl", "ipv6")];
/// Port matches the drafts put in the IP match, and where RFC 8519 puts them (the L4 match).
const PORT_KEYS: &[(&str, &str)] = &[
    ("source-port-range-or-operator", "source-port"),
    ("destination-port-range-or-operator", "destination-port"),
    ("source-port-range", "source-port"),
    ("destination-port-range", "destination-port"),
];

/// Rewrites the draft spellings in `acls` (the `acl` list); returns the spellings found.
/// A draft member whose RFC 8519 name is also present is left alone (and then refused by the
/// importer as an unknown field).
pub fn normalize(acls: &mut [Value]) -> Vec<&'static str> {
    let mut found = Vec::new();
    for acl in acls.iter_mut().filter_map(Value::as_object_mut) {
        rename(acl, ACL_KEYS, &mut found);
        let Some(aces) = acl.get_mut("aces").and_then(|aces| aces.get_mut("ace")).and_then(Value::as_array_mut) else {
            continue;
        };
        for ace in aces.iter_mut().filter_map(Value::as_object_mut) {
            rename(ace, ACE_KEYS, &mut found);
            if let Some(matches) = ace.get_mut("matches").and_then(Value::as_object_mut) {
                rename(matches, MATCH_KEYS, &mut found);
                move_ports(matches, &mut found);
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

fn rename(object: &mut Map<String, Value>, keys: &[(&'static str, &str)], found: &mut Vec<&'static str>) {
    for (draft, current) in keys {
        if object.contains_key(*current) {
            continue;
        }
        if let Some(value) = object.remove(*draft) {
            object.insert((*current).to_owned(), value);
            found.push(draft);
        }
    }
}

/// Moves port matches from the IP match into the TCP or UDP match its protocol names.
fn move_ports(matches: &mut Map<String, Value>, found: &mut Vec<&'static str>) {
    for version in ["ipv4", "ipv6"] {
        let Some(ip) = matches.get(version).and_then(Value::as_object) else { continue };
        let l4 = match ip.get("protocol").and_then(Value::as_u64) {
            Some(6) => "tcp",
            Some(17) => "udp",
            _ => continue,
        };
        let taken = |key: &str| matches.get(l4).and_then(|target| target.get(key)).is_some();
        // A port match the L4 match already has stays where it is (and is refused there).
        let movable: Vec<(&'static str, &'static str)> =
            PORT_KEYS.iter().filter(|(draft, current)| ip.contains_key(*draft) && !taken(current)).copied().collect();
        if movable.is_empty() {
            continue;
        }
        for (draft, current) in movable {
            let Some(value) = matches.get_mut(version).and_then(Value::as_object_mut).and_then(|ip| ip.remove(draft))
            else {
                continue;
            };
            let target = matches.entry(l4).or_insert_with(|| Value::Object(Map::new()));
            if let Some(target) = target.as_object_mut() {
                target.insert(current.to_owned(), value);
                found.push(draft);
            }
        }
    }
}
