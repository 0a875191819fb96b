//! Default verdicts: the words the policy files' `[defaults]` use (`Verdict`), what each
//! default is when no file says (`Defaults`), and the `gateway_ebpf::verdict` codes they
//! compile to for the datapath's `GatewayConfig` (`Verdicts`). Pure.
use super::values::parse_keyword;

/// A verdict the operator chooses for a class of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    Redirect,
}

impl Verdict {
    /// Every verdict, in the order messages list them.
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Drop, Verdict::Redirect];

    /// The verdict named `text` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        parse_keyword(&Self::ALL, Self::as_str, text)
    }

    /// The name the files use.
    pub fn as_str(self) -> &'static str {
        gateway_ebpf::verdict::name(self.code())
    }

    /// The datapath's code (`gateway_ebpf::verdict`).
    pub fn code(self) -> u8 {
        match self {
            Verdict::Pass => gateway_ebpf::verdict::PASS,
            Verdict::Drop => gateway_ebpf::verdict::DROP,
            Verdict::Redirect => gateway_ebpf::verdict::REDIRECT,
        }
    }
}

/// Verdicts used when no file has a `[defaults]` section; the same as the datapath's own
/// `GatewayConfig::default`, so a missing section changes nothing.
pub const DEFAULT_MALFORMED: Verdict = Verdict::Drop;
pub const DEFAULT_UNKNOWN_DEVICE: Verdict = Verdict::Drop;
pub const DEFAULT_POLICY_MISS: Verdict = Verdict::Drop;
pub const DEFAULT_QUARANTINE: Verdict = Verdict::Redirect;

/// Default verdicts, in the datapath's `GatewayConfig` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub malformed: Verdict,
    pub unknown_device: Verdict,
    pub policy_miss: Verdict,
    /// `Redirect` or `Drop`.
    pub quarantine: Verdict,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            malformed: DEFAULT_MALFORMED,
            unknown_device: DEFAULT_UNKNOWN_DEVICE,
            policy_miss: DEFAULT_POLICY_MISS,
            quarantine: DEFAULT_QUARANTINE,
        }
    }
}

/// Default verdicts as `gateway_ebpf::verdict` codes, for `GatewayConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdicts {
    pub malformed: u8,
    pub unknown: u8,
    pub policy_miss: u8,
    pub quarantine: u8,
}

impl From<Defaults> for Verdicts {
    fn from(defaults: Defaults) -> Self {
        Self {
            malformed: defaults.malformed.code(),
            unknown: defaults.unknown_device.code(),
            policy_miss: defaults.policy_miss.code(),
            quarantine: defaults.quarantine.code(),
        }
    }
}
