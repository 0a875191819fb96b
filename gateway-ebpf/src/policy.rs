//! Step 4: the verdict. Lanes and device-class policies are the same thing here: rules in
//! the `POLICY_V4`/`POLICY_V6` LPM tries, keyed by policy id, protocol and destination prefix,
//! each holding the port combinations allowed (`PortMatch`: the remote's and the device's
//! port, for a connection opened by the device, the remote, or either). The controller compiles the policy files
//! into these maps; nothing here is a built-in default.
use aya_ebpf::maps::lpm_trie::Key;
use gateway_ebpf::{
    DeviceEntry, DropReason, GatewayConfig, MAX_PORT_MATCHES, POLICY_KEY_FIXED_BITS, PolicyKey, PolicyRule, PortRange,
    device_state, icmp_pair, lane, opener, proto,
};

use crate::{POLICY_V4, POLICY_V6, decision::Decision, parse::Ip, wire::ipv4};

/// The verdict for an IP packet from a device (LAN side), whose connection `opener` opened
/// (`opener::EITHER` when not known, see `flow`).
// A BPF subprogram, not inlined: keeps the lookups out of the parse paths the verifier walks.
#[inline(never)]
pub fn from_device(device: &DeviceEntry, ip: &Ip, opener: u8, config: &GatewayConfig) -> Decision {
    let to = Exchange {
        remote: &ip.dst,
        remote_port: ip.dst_port,
        device_port: ip.src_port,
        opener,
        ports_known: ip.is_fragment == 0,
    };
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
/// receive only what their lane allows, read from the remote's side (its address and port
/// are the packet's source).
#[inline(always)]
pub fn towards_device(device: &DeviceEntry, ip: &Ip) -> Decision {
    let isolated = Decision::drop(DropReason::ToIsolatedDevice);
    match device.state {
        device_state::BLOCKED => isolated,
        device_state::QUARANTINED => {
            let is_icmp = ip.proto == proto::ICMP || ip.proto == proto::ICMPV6;
            let from = Exchange {
                remote: &ip.src,
                remote_port: if is_icmp { paired_icmp(ip) } else { ip.src_port },
                device_port: if is_icmp { 0 } else { ip.dst_port },
                opener: opener_from_remote(ip),
                ports_known: ip.is_fragment == 0,
            };
            if allows(lane::QUARANTINE, ip, &from) { Decision::PASS } else { isolated }
        }
        _ => Decision::PASS,
    }
}

/// A remote's ICMP message (`type << 8 | code`) as the device's message it pairs with, which
/// is what rules name: a reply as the device's request, a request as the device's reply.
#[inline(always)]
fn paired_icmp(ip: &Ip) -> u16 {
    let (kind, code) = ((ip.dst_port >> 8) as u8, ip.dst_port & 0xff);
    let paired = match icmp_pair(ip.proto, kind) {
        Some((request, reply)) if request == kind => reply,
        Some((request, _)) => request,
        None => kind,
    };
    u16::from(paired) << 8 | code
}

/// Who opened the connection of a TCP packet from the remote, as far as it tells: its SYN
/// opens, its SYN-ACK answers the device's.
#[inline(always)]
fn opener_from_remote(ip: &Ip) -> u8 {
    match crate::parse::opener_from_device(ip) {
        opener::DEVICE => opener::REMOTE,
        opener::REMOTE => opener::DEVICE,
        _ => opener::EITHER,
    }
}

/// A packet as a rule reads it: the remote end, both ports and who opened the connection.
struct Exchange<'a> {
    remote: &'a [u8; 16],
    remote_port: u16,
    device_port: u16,
    /// `opener` bits.
    opener: u8,
    /// False for a non-first fragment, which carries no ports.
    ports_known: bool,
}

/// Whether policy `policy_id` allows `ip.proto` for `exchange`: a rule for the protocol
/// itself, or one for every protocol. The controller copies every `ANY` entry into the
/// `proto::FOLDED` protocols, so for those (nearly every packet) one lookup answers both.
#[inline(always)]
fn allows(policy_id: u32, ip: &Ip, exchange: &Exchange) -> bool {
    let own = rule_allows(lookup(policy_id, ip.proto, ip.version, exchange.remote), exchange);
    own || (!is_folded(ip.proto) && rule_allows(lookup(policy_id, proto::ANY, ip.version, exchange.remote), exchange))
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

// A BPF subprogram, not inlined: one verified copy of the match loop for the four lookups.
#[inline(never)]
fn rule_allows(rule: Option<&PolicyRule>, exchange: &Exchange) -> bool {
    let Some(rule) = rule else { return false };
    for i in 0..MAX_PORT_MATCHES {
        if i as u32 >= rule.match_count {
            break;
        }
        // `get` bounds the index where it is used (see flow::count_drop).
        let Some(&admitted) = rule.matches.get(i) else { break };
        if admitted.openers & exchange.opener == 0 {
            continue;
        }
        let (remote, device) = (admitted.remote, admitted.device);
        let found = if exchange.ports_known {
            within(remote, exchange.remote_port) && within(device, exchange.device_port)
        } else {
            remote == PortRange::ALL && device == PortRange::ALL
        };
        if found {
            return true;
        }
    }
    false
}

#[inline(always)]
fn within(range: PortRange, port: u16) -> bool {
    range.first <= port && port <= range.last
}
