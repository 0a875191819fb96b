//! What the LAN and WAN steps conclude about a well-formed frame: a verdict and its reason.
//! `policy` makes one, `flow` caches it, `events` reports it and `verdict` applies it; a
//! frame that cannot be judged is a `DropReason` instead.
use gateway_ebpf::{DropReason, reason, verdict};

/// What to do with a packet, and why when it is not passed.
#[derive(Clone, Copy)]
pub struct Decision {
    /// One of `verdict`; configured verdicts come from `GatewayConfig`, so not a Rust enum.
    pub verdict: u8,
    /// One of `reason`: `NONE` when the packet is passed by policy.
    pub reason: u32,
}

impl Decision {
    pub const PASS: Self = Self { verdict: verdict::PASS, reason: reason::NONE };

    /// `verdict` (one of `verdict`), given for `why`.
    #[inline(always)]
    pub const fn new(verdict: u8, why: DropReason) -> Self {
        Self { verdict, reason: why.code() }
    }

    #[inline(always)]
    pub const fn drop(why: DropReason) -> Self {
        Self::new(verdict::DROP, why)
    }

    #[inline(always)]
    pub const fn is_pass(&self) -> bool {
        self.verdict == verdict::PASS
    }
}
