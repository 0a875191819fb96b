//! The WAN program: frames from upstream towards the devices. Isolated (quarantined or
//! blocked) devices receive only replies their lane allows; DNS answers are sampled so the
//! controller can keep DNS-name rules true. `ingress` is the entry and `verdict::exit` the
//! one exit.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{DropReason, GatewayConfig, MacKey, counter, proto, sample_kind};

use crate::{
    DEVICE_IPV4, classify, count,
    decision::Decision,
    events, flow, parse, policy, verdict,
    wire::{ether_type, port},
};

#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> u32 {
    count(counter::WAN_PACKETS);
    let Some(config) = crate::configured() else { return xdp_action::XDP_PASS };
    // Counted against the device the frame goes to; malformed frames from upstream belong to
    // none.
    let (device, judged) = match try_ingress(ctx, config) {
        Ok((device, decision)) => (device, Ok(decision)),
        Err(why) => (None, Err(why)),
    };
    verdict::exit(ctx, device.as_ref().map(|(mac, slot)| flow::Counted { mac, slot: *slot }), judged, config)
}

/// The device a frame goes to, if it is one of ours, and the decision; or why the frame
/// cannot be judged. The device is its MAC and counter slot.
#[inline(always)]
fn try_ingress(ctx: &XdpContext, config: &GatewayConfig) -> Result<(Option<(MacKey, u32)>, Decision), DropReason> {
    let link = parse::link(ctx)?;
    // Devices are tracked by IPv4 address upstream; other traffic is not ours to judge here.
    if link.ether_type != ether_type::IPV4 {
        return Ok((None, Decision::PASS));
    }
    let ip = parse::ip(ctx, &link)?;
    let dst = [ip.dst[0], ip.dst[1], ip.dst[2], ip.dst[3]];
    // SAFETY: copied out at once.
    let Some(mac) = (unsafe { DEVICE_IPV4.get(&dst) }).copied() else {
        return Ok((None, Decision::PASS));
    };
    let device = classify::device(&mac);
    let decision = policy::towards_device(&device, &ip);
    if decision.is_pass() {
        flow::count_rx(flow::Counted::new(&mac, &device), (ctx.data_end() - ctx.data()) as u64);
        if config.sample_packets != 0 && ip.proto == proto::UDP && ip.src_port == port::DNS && ip.payload_offset != 0 {
            events::sample(
                ctx,
                &mac,
                sample_kind::DNS_ANSWER,
                link.l3_offset,
                ip.payload_offset,
                device.state,
                &decision,
                flow::now(),
            );
        }
    }
    Ok((Some((mac, device.slot)), decision))
}
