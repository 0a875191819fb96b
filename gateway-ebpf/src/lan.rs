//! The LAN program: frames from the devices, through every step in order. `ingress` is the
//! entry and `verdict::exit` the one exit; `try_ingress` runs the steps and returns the
//! decision, or why the frame could not be judged.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{
    DeviceEntry, DropReason, GatewayConfig, MacKey, SynFingerprint, counter, device_state, opener, proto, sample_kind,
    source_guard as source_guard_mode,
};

use crate::{
    PARSED, classify, count,
    decision::Decision,
    events,
    flow::{self, Table, V4, V6},
    parse, policy, source_guard, verdict,
    wire::{ether_type, icmpv6, port, tls},
};

/// The LAN program's entry: the frame's sender, then the steps, then the one exit.
#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> u32 {
    count(counter::LAN_PACKETS);
    let Some(config) = crate::configured() else { return xdp_action::XDP_PASS };
    // A runt has no sender to count against.
    let Some(sender) = parse::src_mac(ctx) else { return verdict::exit(ctx, None, Err(DropReason::Runt), config) };
    let mac = MacKey::new(sender);
    let (frame_bytes, now) = ((ctx.data_end() - ctx.data()) as u64, flow::now());
    let device = classify::sender(&mac, frame_bytes, now);
    let counted = flow::Counted::new(&mac, &device);
    // A frame that is not what its headers claim still counts against its sender.
    let judged = try_ingress(ctx, counted, &device, frame_bytes, now, config)
        .inspect_err(|_| flow::count_tx(counted, 0, frame_bytes, now));
    verdict::exit(ctx, Some(counted), judged, config)
}

/// Steps 1 to 5 for a frame from `device` (its entry read and its budgets counted): its
/// decision, or why it cannot be judged.
#[inline(always)]
fn try_ingress(
    ctx: &XdpContext,
    counted: flow::Counted,
    device: &DeviceEntry,
    frame_bytes: u64,
    now: u64,
    config: &GatewayConfig,
) -> Result<Decision, DropReason> {
    let mac = counted.mac;
    let link = parse::link(ctx)?;

    if !parse::is_ip(&link) {
        // ARP, and the link-layer protocols that stay on the LAN (LLDP, EAPOL for 802.1X
        // onboarding).
        flow::count_tx(counted, 0, frame_bytes, now);
        if device.state == device_state::BLOCKED {
            return Ok(Decision::drop(DropReason::Blocked));
        }
        if config.sample_packets != 0 {
            let kind = match link.ether_type {
                ether_type::ARP => Some(sample_kind::ARP),
                // The MUD URL TLV (RFC 8520 §10).
                ether_type::LLDP => Some(sample_kind::LLDP),
                _ => None,
            };
            if let Some(kind) = kind {
                let (l3, state) = (link.l3_offset, device.state);
                events::sample(ctx, mac, kind, l3, l3, state, &Decision::PASS, now);
            }
        }
        return Ok(Decision::PASS);
    }

    let parsed = parse::ip(ctx, &link)?;
    // Through the per-CPU slot (see `PARSED`): from here on every parse path is one state.
    let Some(slot) = PARSED.get_ptr_mut(0) else { return Ok(Decision::PASS) };
    // SAFETY: this CPU's slot, used only by this program run (XDP does not nest on a CPU).
    let ip = unsafe {
        *slot = parsed;
        &*slot
    };
    flow::count_tx(counted, ip.proto, frame_bytes, now);
    // Checked here, not in `drops`: with the check off a frame pays no call (bench/xdp).
    if config.source_guard != source_guard_mode::OFF && source_guard::drops(mac, ip, config) {
        return Ok(Decision::drop(DropReason::SpoofedSource));
    }

    let seen = Seen { mac, device, ip, frame_bytes, now };
    let decision = flow_then_policy(ctx, &seen, config);

    if config.sample_packets != 0 {
        if let Some(kind) = sample_kind_of(ctx, ip) {
            events::sample(ctx, mac, kind, link.l3_offset, ip.payload_offset, device.state, &decision, now);
        }
    }
    Ok(decision)
}

/// An IP packet as the flow step sees it (by reference: a BPF call takes five arguments).
struct Seen<'a> {
    mac: &'a MacKey,
    device: &'a DeviceEntry,
    ip: &'a parse::Ip,
    frame_bytes: u64,
    now: u64,
}

/// Steps 3 and 4 for an IP packet: the flow first, then the policy. An established flow
/// whose cached decision is still valid skips the LPM lookups (see `flow`); otherwise the
/// policy decides, for the opener the packet or its flow names, the flow caches the result
/// (`record`), and a new flow is reported.
// A BPF subprogram, not inlined: its paths (cached or not, new flow or not, event or not) all
// end in one return value, so the verifier checks the steps after it once, not once per path.
#[inline(never)]
fn flow_then_policy(ctx: &XdpContext, seen: &Seen, config: &GatewayConfig) -> Decision {
    let (ip, device, generation) = (seen.ip, seen.device, config.policy_generation);
    // A SYN or SYN-ACK tells who opens: never answered from the cache (see `flow`).
    let told = parse::opener_from_device(ip);
    let known = if flow::is_v4(ip) {
        established::<V4>(seen, generation, told)
    } else {
        established::<V6>(seen, generation, told)
    };
    let opened_by = match known {
        Known::Cached(decision) => return decision,
        Known::Decide { opener } => opener,
    };
    let decision = policy::from_device(device, ip, opened_by, config);
    // Here, not where a flow opens: the fingerprint's frame and `record`'s (holding an IPv6
    // key) would not fit one above the other in XDP's 512 bytes.
    let syn = if parse::is_syn(ip) { parse::syn_fingerprint(ctx, ip) } else { SynFingerprint::default() };
    if flow::is_v4(ip) {
        record::<V4>(seen, &decision, &syn, config);
    } else {
        record::<V6>(seen, &decision, &syn, config);
    }
    decision
}

/// What the flow table says of a packet before the policy is asked.
#[derive(Clone, Copy)]
enum Known {
    /// The flow's cached decision holds: reused, and the packet accounted to the flow.
    Cached(Decision),
    /// The policy decides, for this opener (`opener`).
    Decide { opener: u8 },
}

/// The packet's flow in table `T`: its cached decision, reused when still valid (the packet
/// accounted), or who opened it as far as the packet and the flow tell.
// Not inlined, one copy per table (see `flow::Table`); holds the entry only within.
#[inline(never)]
fn established<T: Table>(seen: &Seen, generation: u32, told: u8) -> Known {
    let Some(stats) = flow::find::<T>(seen.mac, seen.ip) else { return Known::Decide { opener: told } };
    if told != opener::EITHER {
        return Known::Decide { opener: told };
    }
    match flow::cached_decision(stats, seen.device, generation, seen.ip) {
        Some(decision) => {
            flow::add(stats, seen.ip, seen.frame_bytes, decision.verdict, None, seen.now);
            Known::Cached(decision)
        }
        None => Known::Decide { opener: flow::opener(stats) },
    }
}

/// Caches the policy's `decision` in the packet's flow in table `T` and accounts the packet
/// to it, opening the flow (with the SYN fingerprint `syn`, and reporting it) when it is not
/// there: the packet's second lookup, paid only where the policy was asked.
// Not inlined, one copy per table (see `flow::Table`); holds the entry only within.
#[inline(never)]
fn record<T: Table>(seen: &Seen, decision: &Decision, syn: &SynFingerprint, config: &GatewayConfig) {
    let (ip, device) = (seen.ip, seen.device);
    let cache = flow::to_cache(decision, device, config.policy_generation, ip);
    let recomputed = Some((cache, device.policy_id));
    let key = T::key(seen.mac, ip);
    let (stats, opened) = match T::flows().get_ptr_mut(&key) {
        Some(stats) => (stats, false),
        None => match flow::open::<T>(&key, seen.now) {
            Some((stats, opened)) => (stats, opened),
            None => return,
        },
    };
    if opened {
        flow::set_syn(stats, syn);
    }
    flow::add(stats, ip, seen.frame_bytes, decision.verdict, recomputed, seen.now);
    if opened && config.flow_events != 0 {
        events::new_flow(seen.mac, ip, syn, seen.frame_bytes as u32, device.state, decision, seen.now);
    }
}

/// Which sample, if any, the packet is worth to userspace.
#[inline(always)]
fn sample_kind_of(ctx: &XdpContext, ip: &parse::Ip) -> Option<u8> {
    if ip.payload_offset == 0 {
        return None;
    }
    match ip.proto {
        proto::UDP => {
            let ports = [ip.src_port, ip.dst_port];
            if ports.contains(&port::DHCP_SERVER) || ports.contains(&port::DHCP_CLIENT) {
                Some(sample_kind::DHCP)
            } else if ports.contains(&port::DHCPV6_SERVER) || ports.contains(&port::DHCPV6_CLIENT) {
                Some(sample_kind::DHCPV6)
            } else if ports.contains(&port::DNS) {
                Some(sample_kind::DNS)
            } else if ports.contains(&port::SSDP) {
                Some(sample_kind::SSDP)
            } else {
                None
            }
        }
        proto::TCP => {
            // A TLS handshake record (ClientHello) starts with its content type and version.
            let first = parse::ptr_at::<[u8; 2]>(ctx, ip.payload_offset)?;
            // SAFETY: bounds checked by ptr_at.
            let [content_type, major_version] = unsafe { *first };
            (content_type == tls::HANDSHAKE && major_version == tls::MAJOR_VERSION).then_some(sample_kind::TLS)
        }
        // Neighbour discovery: the addresses a device claims (`source_guard`).
        proto::ICMPV6 => {
            let message = (ip.dst_port >> 8) as u8;
            let claims = message == icmpv6::NEIGHBOR_SOLICITATION || message == icmpv6::NEIGHBOR_ADVERTISEMENT;
            claims.then_some(sample_kind::NDP)
        }
        _ => None,
    }
}
