//! Step 4: the verdict. Lanes and device-class policies are the same thing here: rules in
//! the `POLICY_V4`/`POLICY_V6` LPM tries, keyed by policy id, protocol and destination prefix,
//! each holding the destination port ranges allowed. The controller compiles the policy files
//! into these maps; nothing here is a built-in default.
use aya_ebpf::maps::lpm_trie::Key;
use gateway_ebpf::{
    DeviceEntry, DropReason, GatewayConfig, MAX_PORT_RANGES, POLICY_KEY_FIXED_BITS, PolicyKey, PolicyRule,
    device_state, lane, proto,
};

use crate::{POLICY_V4, POLICY_V6, decision::Decision, parse::Ip, wire::ipv4};

/// The verdict for an IP packet from a device (LAN side).
// A BPF subprogram, not inlined: keeps the lookups out of the parse paths the verifier walks.
#[inline(never)]
pub fn from_device(device: &DeviceEntry, ip: &Ip, config: &GatewayConfig) -> Decision {
    let to = Peer { addr: &ip.dst, port: ip.dst_port };
    match device.state {
        device_state::BLOCKED => Decision::drop(DropReason::Blocked),
        device_state::ENROLLED => {
            // Enrolled devices keep the onboarding lane (DHCP renewals, DNS, re-enrollment).
            if allows(device.policy_id, ip, &to) || allows(lane::ONBOARDING, ip, &to) {
                Decision::PASS
            } else {
                Decision::new(config.policy_miss_verdict, DropReason::PolicyDeny)
            }
        }
        device_state::QUARANTINED => {
            if allows(lane::QUARANTINE, ip, &to) {
                Decision::PASS
            } else {
                Decision::new(config.quarantine_verdict, DropReason::Quarantine)
            }
        }
        _ => {
            if allows(lane::ONBOARDING, ip, &to) {
                Decision::PASS
            } else {
                Decision::new(config.unknown_verdict, DropReason::NotEnrolled)
            }
        }
    }
}

/// The verdict for an IP packet from upstream towards a device (WAN side): isolated devices
/// receive only replies from what their lane allows.
#[inline(always)]
pub fn towards_device(device: &DeviceEntry, ip: &Ip) -> Decision {
    let isolated = Decision::drop(DropReason::ToIsolatedDevice);
    match device.state {
        device_state::BLOCKED => isolated,
        device_state::QUARANTINED => {
            // Replies come from the allowed peer's address and port.
            let from = Peer { addr: &ip.src, port: ip.src_port };
            if allows(lane::QUARANTINE, ip, &from) { Decision::PASS } else { isolated }
        }
        _ => Decision::PASS,
    }
}

/// The remote end a rule is checked against.
struct Peer<'a> {
    addr: &'a [u8; 16],
    port: u16,
}

/// Whether policy `policy_id` allows `ip.proto` to `peer`: a rule for the protocol itself,
/// or one for every protocol. The controller copies every `ANY` entry into the
/// `proto::FOLDED` protocols, so for those (nearly every packet) one lookup answers both.
#[inline(always)]
fn allows(policy_id: u32, ip: &Ip, peer: &Peer) -> bool {
    let own = rule_allows(lookup(policy_id, ip.proto, ip.version, peer.addr), ip, peer.port);
    own || (!is_folded(ip.proto) && rule_allows(lookup(policy_id, proto::ANY, ip.version, peer.addr), ip, peer.port))
}

#[inline(always)]
fn is_folded(ip_proto: u8) -> bool {
    proto::FOLDED.contains(&ip_proto)
}

#[inline(always)]
fn lookup(policy_id: u32, ip_proto: u8, version: u8, addr: &[u8; 16]) -> Option<&'static PolicyRule> {
    let policy_id = policy_id.to_be_bytes();
    if version == ipv4::VERSION {
        let key =
            PolicyKey::<4> { policy_id, proto: ip_proto, _pad: [0; 3], addr: [addr[0], addr[1], addr[2], addr[3]] };
        POLICY_V4.get(Key::new(POLICY_KEY_FIXED_BITS + 32, key))
    } else {
        let key = PolicyKey::<16> { policy_id, proto: ip_proto, _pad: [0; 3], addr: *addr };
        POLICY_V6.get(Key::new(POLICY_KEY_FIXED_BITS + 128, key))
    }
}

// A BPF subprogram, not inlined: one verified copy of the port-range loop for the four lookups.
#[inline(never)]
fn rule_allows(rule: Option<&PolicyRule>, ip: &Ip, port: u16) -> bool {
    let Some(rule) = rule else { return false };
    // Fragments carry no ports: allowed only by a rule that admits every port.
    let port_known = ip.is_fragment == 0;
    for i in 0..MAX_PORT_RANGES {
        if i as u32 >= rule.port_count {
            break;
        }
        // `get` bounds the index where it is used (see flow::count_drop).
        let Some(&range) = rule.ports.get(i) else { break };
        if port_known && range.first <= port && port <= range.last {
            return true;
        }
        if !port_known && range.first == 0 && range.last == u16::MAX {
            return true;
        }
    }
    false
}
