//! The policy in force as JSON, for the status API's `/policies` and for `iotgw policy show
//! --json`: classes with their match criteria and rules, lanes, defaults, and the compiled
//! datapath entries. Reads a `CompiledPolicy`; writes nothing.
use serde_json::{Value, json};

use super::{
    compile::CompiledPolicy,
    entries::{PortMatchKey, PortRangeKey, proto_name},
    model::{Lane, Rule},
};

/// Port ranges as `[first, last]` pairs.
fn port_pairs<R: Copy + Into<PortRangeKey>>(ranges: &[R]) -> Vec<Value> {
    ranges.iter().map(|range| (*range).into()).map(|range: PortRangeKey| json!([range.first, range.last])).collect()
}

/// Port matches as `{"opened_by", "device": [first, last], "remote": [first, last]}`.
fn match_list(matches: &[PortMatchKey]) -> Vec<Value> {
    matches
        .iter()
        .map(|admitted| {
            json!({
                "opened_by": admitted.opened_by(),
                "device": port_pairs(&[admitted.device]),
                "remote": port_pairs(&[admitted.remote]),
            })
        })
        .collect()
}

fn rule(rule: &Rule) -> Value {
    json!({
        "description": rule.description,
        "nets": rule.nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "names": rule.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "remote": rule.remote.as_ref().map(|target| target.remote.to_string()),
        "remote_within": rule.remote.iter().flat_map(|target| &target.within).map(ToString::to_string).collect::<Vec<_>>(),
        "protocol": rule.protocol.as_str(),
        "ports": port_pairs(&rule.ports),
        "source_ports": port_pairs(&rule.source_ports),
        "icmp_types": rule.icmp.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "direction": rule.direction.as_str(),
        "family": rule.family.map(|family| family.as_str()),
        "source": rule.at.to_string(),
    })
}

fn lane(lane: &Lane) -> Value {
    json!({
        "defined": lane.at.as_ref().map(ToString::to_string),
        "description": lane.description,
        "allow": lane.rules.iter().map(rule).collect::<Vec<_>>(),
    })
}

impl CompiledPolicy {
    /// Everything about the policy in force, as one JSON document.
    pub fn view(&self) -> Value {
        let source = &self.source;
        let classes: Vec<Value> = source
            .classes
            .iter()
            .map(|class| {
                json!({
                    "name": class.name,
                    "id": class.id.0,
                    "policy_id": class.policy_id.0,
                    "description": class.description,
                    "include": class.include,
                    "update_lane": class.update_lane,
                    "match": {
                        "macs": class.matcher.macs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "ouis": class.matcher.ouis.iter().map(hex::encode).collect::<Vec<_>>(),
                        "fingerprint_types": class.matcher.fingerprint_types,
                        "fingerprint_confidence": f64::from(class.matcher.fingerprint_confidence_percent) / 100.0,
                        "cert_subjects": class.matcher.cert_subjects,
                    },
                    "allow": class.rules.iter().map(rule).collect::<Vec<_>>(),
                    "source": class.at.to_string(),
                })
            })
            .collect();
        let entries: Vec<Value> = self
            .rules
            .iter()
            .map(|entry| {
                json!({
                    "policy_id": entry.policy_id.0,
                    "protocol": proto_name(entry.proto),
                    "net": entry.net.to_string(),
                    "matches": match_list(&entry.matches),
                })
            })
            .collect();
        let dns: Vec<Value> = self
            .dns_rules
            .iter()
            .map(|dns| {
                json!({
                    "policy_id": dns.policy_id.0,
                    "name": dns.pattern.to_string(),
                    "protocol": dns.protocol.as_str(),
                    "matches": match_list(&dns.matches_v4),
                    "matches_ipv6": match_list(&dns.matches_v6),
                })
            })
            .collect();
        json!({
            "files": source.files.iter().map(|file| file.display().to_string()).collect::<Vec<_>>(),
            "classes": classes,
            "lanes": {
                "onboarding": lane(&source.lanes.onboarding),
                "quarantine": lane(&source.lanes.quarantine),
                "update": lane(&source.lanes.update),
                "quarantine_includes_update": source.lanes.quarantine_includes_update,
            },
            "defaults": {
                "malformed": source.defaults.malformed.as_str(),
                "unknown_device": source.defaults.unknown_device.as_str(),
                "policy_miss": source.defaults.policy_miss.as_str(),
                "quarantine": source.defaults.quarantine.as_str(),
            },
            "entries": entries,
            "dns_rules": dns,
            "responses": self.responses.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn view_of_the_shipped_policies_names_classes_lanes_and_entries() {
        let compiled =
            crate::policy::check(&[concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")], crate::policy::no_extension)
                .expect("shipped policies");
        let view = compiled.view();
        let camera = view["classes"]
            .as_array()
            .and_then(|classes| classes.iter().find(|class| class["name"] == "camera"))
            .expect("camera in the view");
        assert_eq!(camera["policy_id"], 26);
        assert_eq!(camera["match"]["ouis"][0], "02005e");
        assert_eq!(camera["allow"][0]["direction"], "inbound");
        assert_eq!(view["lanes"]["onboarding"]["allow"][3]["ports"][0][0], 8443);
        assert_eq!(view["defaults"]["quarantine"], "redirect");
        assert_eq!(view["entries"].as_array().map(Vec::len), Some(compiled.rules.len()));
    }
}
