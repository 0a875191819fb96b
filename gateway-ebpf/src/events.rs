//! Step 5: tell userspace. A flow's first packet becomes a `FlowEvent`; DHCP, DNS, ARP, SSDP
//! and TLS handshakes are copied into `SampleEvent`s for fingerprinting, and ICMPv6 neighbour
//! discovery for the source guard; a crossed budget
//! becomes a `BudgetEvent`. The ring buffer never
//! blocks: when it is full the event is counted as lost and the packet goes on. Samples are
//! copied from an XDP frame or, for the LAN egress program, a TC socket buffer (`Frame`).
use aya_ebpf::{
    cty::{c_long, c_void},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use gateway_ebpf::{
    BudgetEvent, BudgetLimit, EventHeader, FlowEvent, MacKey, SAMPLE_BYTES, SampleEvent, SynFingerprint, counter,
    event_kind,
};

use crate::{EVENTS, count, decision::Decision, parse::Ip};

/// The smallest all-ones mask that keeps `SAMPLE_BYTES`: it gives the verifier a constant
/// bound on a copy length after the clamp to `SAMPLE_BYTES`.
const SAMPLE_LEN_MASK: usize = (SAMPLE_BYTES + 1).next_power_of_two() - 1;

/// Reports a flow's first packet (`ip`, from the device `mac`, with its SYN fingerprint
/// `syn`, zero for other packets). Written in place in the ring buffer: a `FlowEvent` and its key
/// built on the stack would not fit beside the flow step's frame in XDP's 512 bytes.
#[inline(always)]
pub fn new_flow(
    mac: &MacKey,
    ip: &Ip,
    syn: &SynFingerprint,
    frame_bytes: u32,
    state: u8,
    decision: &Decision,
    now: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        count(counter::EVENTS_LOST);
        crate::rare::events_lost();
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to the reserved record, valid for a `FlowEvent`; every field,
    // padding included, is written before it is submitted.
    unsafe {
        (*event).header = header(event_kind::NEW_FLOW, state, decision, now);
        let key = &raw mut (*event).key;
        (*key).src_addr = ip.src;
        (*key).dst_addr = ip.dst;
        (*key).src_port = ip.src_port;
        (*key).dst_port = ip.dst_port;
        (*key).proto = ip.proto;
        (*key).ip_version = ip.version;
        (*key)._pad = [0; 2];
        (*key).mac = *mac;
        (*event).frame_bytes = frame_bytes;
        (*event).tcp_flags = ip.tcp_flags;
        (*event)._pad = [0; 3];
        (*event).syn = *syn;
        (*event)._pad_end = [0; 4];
    }
    entry.submit(0);
}

/// A budget window crossed (`budget`): what it allows and what it counted. The frame is
/// reported as passed: budgets report, the policy judges.
#[inline(always)]
pub fn budget(mac: &MacKey, state: u8, measure: u8, limit: &BudgetLimit, counted: u64, elapsed_ns: u64, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<BudgetEvent>(0) else {
        count(counter::EVENTS_LOST);
        crate::rare::events_lost();
        return;
    };
    entry.write(BudgetEvent {
        header: header(event_kind::BUDGET, state, &Decision::PASS, now),
        mac: *mac,
        measure,
        _pad: [0; 7],
        limit: limit.limit,
        window_ns: limit.window_ns,
        counted,
        elapsed_ns,
    });
    entry.submit(0);
}

/// A frame a sample is copied from, from its Ethernet header on.
pub trait Frame {
    /// The frame's length in bytes.
    fn frame_len(&self) -> usize;
    /// Copies `len` bytes from `offset` to `to`; 0 on success.
    ///
    /// # Safety
    /// `to` must be valid for `len` bytes of writes.
    unsafe fn copy_out(&self, offset: u32, to: *mut c_void, len: u32) -> c_long;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    unsafe fn copy_out(&self, offset: u32, to: *mut c_void, len: u32) -> c_long {
        // SAFETY: the caller's promise on `to`; the helper checks the frame's bounds.
        unsafe { bpf_xdp_load_bytes(self.ctx, offset, to, len) }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len() as usize
    }

    #[inline(always)]
    unsafe fn copy_out(&self, offset: u32, to: *mut c_void, len: u32) -> c_long {
        // SAFETY: the caller's promise on `to`; the helper checks the buffer's bounds (and
        // reads its non-linear part too).
        unsafe { bpf_skb_load_bytes(self.skb.skb.cast(), offset, to, len) }
    }
}

/// Copies the frame from `l3_offset` on (at most `SAMPLE_BYTES`).
#[inline(always)]
pub fn sample(
    ctx: &impl Frame,
    mac: &MacKey,
    kind: u8,
    l3_offset: usize,
    payload_offset: usize,
    state: u8,
    decision: &Decision,
    now: u64,
) {
    let frame_len = ctx.frame_len();
    if l3_offset >= frame_len {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<SampleEvent>(0) else {
        count(counter::EVENTS_LOST);
        crate::rare::events_lost();
        return;
    };
    let event = entry.as_mut_ptr();
    // Clamp first, so a long frame gives its first `SAMPLE_BYTES` (masking first wrapped a
    // 1,100-byte frame to 76). The mask then changes nothing but gives the verifier a
    // constant bound on the copy length, whatever the compiler made of the clamp; the second
    // clamp keeps that bound at `SAMPLE_BYTES`.
    let remaining = frame_len - l3_offset;
    let mut len = if remaining > SAMPLE_BYTES { SAMPLE_BYTES } else { remaining } & SAMPLE_LEN_MASK;
    if len > SAMPLE_BYTES {
        len = SAMPLE_BYTES;
    }
    // SAFETY: `event` points into the reserved ring-buffer record, sized for a SampleEvent;
    // every field is written before submit (the data tail beyond `len` is left as is and
    // ignored by userspace thanks to `len`).
    unsafe {
        (*event).header = header(event_kind::SAMPLE, state, decision, now);
        (*event).kind = kind;
        (*event)._pad = 0;
        (*event).len = len as u16;
        (*event).frame_bytes = frame_len as u16;
        (*event).payload_offset = payload_offset.saturating_sub(l3_offset) as u16;
        (*event).mac = *mac;
        if len == 0 || ctx.copy_out(l3_offset as u32, (*event).data.as_mut_ptr().cast(), len as u32) != 0 {
            entry.discard(0);
            return;
        }
    }
    entry.submit(0);
}

#[inline(always)]
fn header(kind: u8, state: u8, decision: &Decision, now: u64) -> EventHeader {
    EventHeader {
        kind,
        verdict: decision.verdict,
        device_state: state,
        _pad: 0,
        reason: decision.reason,
        timestamp_ns: now,
    }
}
