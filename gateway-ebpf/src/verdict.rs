//! Step 6: apply the verdict, the programs' one exit. Redirects rewrite the Ethernet
//! addresses for the quarantine segment and go out through the `REDIRECT_PORTS` devmap; a
//! missing port means drop. Every frame not passed is counted here, once, under one reason.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{DropReason, GatewayConfig, QUARANTINE_SLOT, counter, reason, verdict};
use network_types::eth::EthHdr;

use crate::{REDIRECT_PORTS, count, decision::Decision, flow, parse::ptr_at, rare};

/// The XDP action for what a program's steps concluded: a decision, or a frame that could
/// not be judged (`why`, given the configured malformed verdict). Counts the reason of every
/// frame not passed against `device` (when known) and globally.
#[inline(always)]
pub fn exit(
    ctx: &XdpContext,
    device: Option<flow::Counted>,
    judged: Result<Decision, DropReason>,
    config: &GatewayConfig,
) -> u32 {
    let (action, counted) = match judged {
        Ok(decision) => apply(ctx, &decision, config),
        // Passed on, but still counted: malformed frames are worth knowing about.
        Err(why) if config.malformed_verdict == verdict::PASS => (xdp_action::XDP_PASS, why.code()),
        // Redirecting garbage makes no sense: anything but pass is a drop.
        Err(why) => (xdp_action::XDP_DROP, why.code()),
    };
    if counted != reason::NONE {
        flow::count_drop(device, counted);
    }
    action
}

/// Turns a decision into an XDP action and the reason to count: `reason::NONE` (nothing)
/// when passed, whatever the decision's reason (a `pass` verdict configured for a class of
/// traffic lets it through uncounted).
#[inline(always)]
fn apply(ctx: &XdpContext, decision: &Decision, config: &GatewayConfig) -> (u32, u32) {
    match decision.verdict {
        verdict::PASS => (xdp_action::XDP_PASS, reason::NONE),
        verdict::REDIRECT => match redirect(ctx, config) {
            Ok(action) => (action, decision.reason),
            // A redirect that fails is a drop, counted under why it failed.
            Err(why) => (xdp_action::XDP_DROP, why.code()),
        },
        _ => (xdp_action::XDP_DROP, decision.reason),
    }
}

#[inline(always)]
fn redirect(ctx: &XdpContext, config: &GatewayConfig) -> Result<u32, DropReason> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(DropReason::Runt)? as *mut EthHdr;
    // SAFETY: bounds checked by ptr_at; XDP frames are writable.
    unsafe {
        (*eth).dst_addr = config.quarantine_dst_mac;
        (*eth).src_addr = config.quarantine_src_mac;
    }
    match REDIRECT_PORTS.redirect(QUARANTINE_SLOT, 0) {
        Ok(action) if action == xdp_action::XDP_REDIRECT => {
            count(counter::REDIRECTED);
            Ok(action)
        }
        _ => {
            rare::no_redirect_port();
            Err(DropReason::NoRedirectPort)
        }
    }
}
