//! The policy file schema as serde reads it: every value keeps its byte span (`Spanned`) so
//! `checks` can point at it. Nothing here is checked beyond TOML types; `checks` does the rest.
//!
//! Enumerations (protocol, direction, verdicts) are read as strings on purpose: a bad value
//! then becomes a located semantic error and the rest of the file is still checked, instead
//! of stopping serde at the first one.
use serde::Deserialize;
use toml::Spanned;

/// One `*.toml` file. Any mix of sections may appear in any file; `checks` merges them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFile {
    /// `[[class]]`: device classes.
    pub class: Vec<Spanned<ClassSpec>>,
    /// `[lanes.onboarding]`, `[lanes.quarantine]`, `[lanes.update]`.
    pub lanes: Option<LanesSpec>,
    /// `[defaults]`: verdicts when nothing else decides.
    pub defaults: Option<Spanned<DefaultsSpec>>,
    /// `[[response]]`: automated response rules. Extension point owned by `crate::respond`:
    /// kept as raw TOML (with its location) and handed over untouched, so this module neither
    /// accepts nor refuses their content. Every other unknown top-level table is an error.
    pub response: Vec<Spanned<toml::Value>>,
}

/// A device class: which devices belong to it and what they may reach.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub name: Spanned<String>,
    /// Stable class id (1..=65535). The class's policy id is derived from it.
    pub id: Spanned<i64>,
    #[serde(default)]
    pub description: Option<String>,
    /// Other classes whose `allow` rules this class also gets (their `match` is not inherited).
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// The class also gets the update lane's rules while enrolled.
    #[serde(default)]
    pub update_lane: bool,
    #[serde(default, rename = "match")]
    pub matches: MatchSpec,
    /// Addresses or networks of this class's controllers: what rules with `remote =
    /// "controller"` or `"my-controller"` reach (RFC 8520 `controller`, `my-controller`).
    #[serde(default)]
    pub controllers: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<RuleSpec>>,
}

/// How devices are matched to a class. Any one criterion suffices.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchSpec {
    /// Exact MAC addresses.
    pub macs: Vec<Spanned<String>>,
    /// Vendor prefixes (3 to 5 bytes).
    pub ouis: Vec<Spanned<String>>,
    /// Device types from passive fingerprinting (`crate::fingerprint`), compared ignoring case
    /// with every level of the guess: product, vendor or generic type (`ip-camera`).
    pub fingerprint_types: Vec<Spanned<String>>,
    /// Least confidence of the matching level for `fingerprint_types` to match (default 0:
    /// any answer that passed the model's open-set gate).
    pub fingerprint_confidence: Option<Spanned<f64>>,
    /// Certificate subject patterns (`*` any run, `?` one character), compared with the
    /// subject in RFC 4514 form, e.g. `CN=cam-*,O=Lab`.
    pub cert_subjects: Vec<Spanned<String>>,
}

/// One allow rule.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSpec {
    pub description: Option<String>,
    /// Remote networks (CIDR or bare address, v4 or v6).
    pub nets: Vec<Spanned<String>>,
    /// Remote DNS names, exact or `*.example.com` (any name below example.com).
    pub names: Vec<Spanned<String>>,
    /// A remote the gateway resolves (`policy::remote`): `local-networks`, `gateway`,
    /// `controller`, `my-controller`, `manufacturer:<host>`, `model:<MUD URL>`. Instead of
    /// `names`; `nets` then narrows it (an address must be in both).
    pub remote: Option<Spanned<String>>,
    /// `tcp`, `udp`, `icmp` or `any` (default `any`).
    pub protocol: Option<Spanned<String>>,
    /// The service port: destination port of the packet that opens the connection (the
    /// remote's port for `outbound`, the device's own for `inbound`). Numbers or
    /// `"first-last"` strings. Empty = all ports.
    pub ports: Vec<Spanned<toml::Value>>,
    /// The opener's source port (the device's own for `outbound`, the remote's for
    /// `inbound`), same syntax as `ports`. Empty = all ports.
    pub source_ports: Vec<Spanned<toml::Value>>,
    /// ICMP types, `protocol = "icmp"` only: `"T"` (any code) or `"T/C"`, or a number T.
    /// Empty = every type.
    pub icmp_types: Vec<Spanned<toml::Value>>,
    /// Who opens the connection: `outbound` (default: the device), `inbound` (the remote)
    /// or `both`.
    pub direction: Option<Spanned<String>>,
    /// `ipv4` or `ipv6`: the rule reaches that family only (its remote's addresses and its
    /// names' answers too). Default: both.
    pub family: Option<Spanned<String>>,
}

/// `[lanes]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanesSpec {
    pub onboarding: Option<Spanned<LaneSpec>>,
    pub quarantine: Option<Spanned<LaneSpec>>,
    pub update: Option<Spanned<LaneSpec>>,
}

/// One lane: a policy that is not a class.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaneSpec {
    pub description: Option<String>,
    /// Quarantine only: quarantined devices keep the update lane.
    pub include_update: Option<Spanned<bool>>,
    pub allow: Vec<Spanned<RuleSpec>>,
}

/// `[defaults]`: verdict names, checked by `checks`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// Frames the datapath cannot parse: pass | drop | redirect.
    pub malformed: Option<Spanned<String>>,
    /// Unknown or onboarding devices outside the onboarding lane: pass | drop | redirect.
    pub unknown_device: Option<Spanned<String>>,
    /// Enrolled devices outside their class policy: pass | drop | redirect.
    pub policy_miss: Option<Spanned<String>>,
    /// Quarantined devices outside the allow-list: redirect | drop.
    pub quarantine: Option<Spanned<String>>,
}
