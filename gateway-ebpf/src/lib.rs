//! The ABI between iotgw's XDP programs and its userspace controller. (Over 600 lines on
//! purpose: the whole contract is reviewed, and bumped, in one file.)
//!
//! Everything both sides must agree on lives here and only here: map names and capacities,
//! verdict, drop-reason and event codes, and the `#[repr(C)]` structs stored in maps or sent
//! through the ring buffer. Userspace enables the `user` feature for the `aya::Pod` impls.
//!
//! Rules for changing this file:
//! - codes are append-only: a retired code becomes `UNUSED_*`, never renumbered;
//! - a new reason code gets its `reason::NAMES` entry and its `DropReason` variant;
//! - every struct is `#[repr(C)]`, `Copy`, has explicit padding and no `bool`, and its size
//!   is checked at compile time at the bottom of this file;
//! - byte order is stated on every multi-byte field: "network" (big-endian, as on the wire)
//!   or "host".
//!
//! Changing a code or a layout requires rebuilding both sides; pinned maps from an older
//! layout are refused by the controller (see `ABI_VERSION`).
#![no_std]

/// Bumped whenever a map's key or value layout changes, so a controller never reuses pinned
/// maps of another layout.
pub const ABI_VERSION: u32 = 9;

/// The read-only global of the object that the loader sets to the number of possible CPUs
/// (`EbpfLoader::override_global`): the elements per slot of `maps::DEVICE_STATS`.
pub const N_CPUS_GLOBAL: &str = "N_CPUS";

/// Where the controller pins every map, so a restart reuses them and enforcement never resets.
pub const PIN_ROOT: &str = "/sys/fs/bpf/iotgw";

/// Map names (as in the object file) and the object's capacities. The controller sizes the
/// device, flow and event maps at load from its configuration (gateway's `datapath::capacity`).
pub mod maps {
    /// Device table: `MacKey` → `DeviceRecord` (what XDP enforces, the device's counter slot
    /// and its budget limits). Written only by the controller.
    pub const DEVICES: &str = "DEVICES";
    pub const DEVICES_CAPACITY: u32 = 65_536;
    /// IPv4 address (network order) → `MacKey`, for traffic towards devices on the upstream side.
    pub const DEVICE_IPV4: &str = "DEVICE_IPV4";
    pub const DEVICE_IPV4_CAPACITY: u32 = 65_536;
    /// Per-device, per-CPU counters of the devices in `DEVICES`: a plain array of
    /// `DeviceStats`, one element per slot and CPU, at `DeviceEntry::slot × N_CPUS + cpu`
    /// (`N_CPUS_GLOBAL`), so a slot's CPUs are consecutive elements and the controller reads or
    /// zeroes them in one batch. An array, not a hash: the slot comes with the device entry the
    /// packet looked up anyway, so counting costs no second hash lookup; not a per-CPU array,
    /// whose elements are found through a pointer table, one more cache miss per packet at
    /// scale (bench/xdp, issue 19). As many slots as `DEVICES` has entries: the controller
    /// sizes it `devices_capacity × possible CPUs` (this capacity is one CPU's).
    pub const DEVICE_STATS: &str = "DEVICE_STATS";
    pub const DEVICE_STATS_CAPACITY: u32 = DEVICES_CAPACITY;
    /// Counters of the MACs absent from `DEVICES` (unknown devices, which have no slot):
    /// `MacKey` → `DeviceStats`, per CPU (LRU, so MAC floods cannot pin it).
    pub const UNKNOWN_DEVICE_STATS: &str = "UNKNOWN_DEVICE_STATS";
    pub const UNKNOWN_DEVICE_STATS_CAPACITY: u32 = 65_536;
    /// Which device holds each slot: slot (`u32`) → `MacKey`. Userspace only (XDP never reads
    /// it): a controller claims a free slot by inserting it with `BPF_NOEXIST`, so two writers
    /// (the controller and a tool) never hand one slot to two devices, and a restarted
    /// controller finds the slots in use.
    pub const DEVICE_SLOTS: &str = "DEVICE_SLOTS";
    /// Ring buffer of `ChangedDevice`s: a device's first counted frame on a CPU in a sweep
    /// epoch (`GatewayConfig::sweep_epoch`) writes it here, so the controller's counter sweep
    /// reads only the devices that changed. The controller sizes it from the device capacity.
    pub const CHANGED_DEVICES: &str = "CHANGED_DEVICES";
    pub const CHANGED_DEVICES_BYTES: u32 = 1 << 20;
    /// Bytes one `CHANGED_DEVICES` record takes in the ring: the kernel's 8-byte header and
    /// the `ChangedDevice`.
    pub const CHANGED_DEVICES_RECORD_BYTES: u32 = 24;
    /// IPv4 flow table: `FlowKeyV4` → `FlowStats` (LRU). Apart from IPv6's so its keys are
    /// 20 bytes, not 48: the table every established packet looks up (bench/xdp).
    pub const FLOWS_V4: &str = "FLOWS_V4";
    pub const FLOWS_V4_CAPACITY: u32 = 262_144;
    /// IPv6 flow table: `FlowKey` → `FlowStats` (LRU).
    pub const FLOWS_V6: &str = "FLOWS_V6";
    pub const FLOWS_V6_CAPACITY: u32 = 65_536;
    /// Maps of earlier ABIs no program uses any more: a controller removes their pins.
    /// `FLOWS` held IPv4 and IPv6 flows under one 48-byte key (ABI 4 and before).
    pub const RETIRED: [&str; 1] = ["FLOWS"];
    /// IPv4 policy rules: LPM `PolicyKey<4>` → `PolicyRule`.
    pub const POLICY_V4: &str = "POLICY_V4";
    /// IPv6 policy rules: LPM `PolicyKey<16>` → `PolicyRule`.
    pub const POLICY_V6: &str = "POLICY_V6";
    pub const POLICY_CAPACITY: u32 = 16_384;
    /// Single-entry array holding `GatewayConfig`.
    pub const CONFIG: &str = "CONFIG";
    /// Per-CPU array of `u64` counters indexed by `GlobalCounter`.
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    /// Devmap whose slot `QUARANTINE_SLOT` is the quarantine interface.
    pub const REDIRECT_PORTS: &str = "REDIRECT_PORTS";
    pub const REDIRECT_PORTS_CAPACITY: u32 = 4;
    /// Ring buffer of `Event`s to userspace.
    pub const EVENTS: &str = "EVENTS";
    /// Bytes; a power of two and a multiple of the page size.
    pub const EVENTS_BYTES: u32 = 1 << 22;
    /// Source-address bindings: IPv4 address (network order) → the `MacKey` that holds it
    /// (`source_guard`). Written only by the controller.
    pub const SOURCE_BINDINGS_V4: &str = "SOURCE_BINDINGS_V4";
    pub const SOURCE_BINDINGS_V4_CAPACITY: u32 = 65_536;
    /// Source-address bindings: IPv6 address (network order) → the `MacKey` that holds it
    /// (`source_guard`; link-local, SLAAC and DHCPv6 addresses alike). Written only by the
    /// controller.
    pub const SOURCE_BINDINGS_V6: &str = "SOURCE_BINDINGS_V6";
    pub const SOURCE_BINDINGS_V6_CAPACITY: u32 = 65_536;
    /// Devices that sent from an address bound to another: `MacKey` → `SourceViolation`,
    /// per CPU (LRU: a spoofer cycling MACs cannot pin it).
    pub const SOURCE_VIOLATIONS: &str = "SOURCE_VIOLATIONS";
    pub const SOURCE_VIOLATIONS_CAPACITY: u32 = 4_096;
    /// XDP's count against each device's budgets: a shared array of `BudgetWindows` indexed
    /// by `DeviceEntry::slot` (the limits are in the device's `DEVICES` record, written by the
    /// controller; the windows only by XDP, so neither overwrites the other's).
    pub const BUDGETS: &str = "BUDGETS";
    pub const BUDGETS_CAPACITY: u32 = DEVICES_CAPACITY;
}

/// Program names in the object file.
pub mod programs {
    /// On the interface facing the devices: classify, account, enforce.
    pub const LAN_INGRESS: &str = "iotgw_lan";
    /// On the upstream interface: traffic towards devices.
    pub const WAN_INGRESS: &str = "iotgw_wan";
    /// TC, on the egress of the interface facing the devices: samples the answers of a DNS
    /// resolver on the gateway itself; changes nothing.
    pub const LAN_EGRESS: &str = "iotgw_lan_egress";
    /// A bare `XDP_PASS`, the benchmark baseline and the program that lets a veth peer
    /// receive redirected frames.
    pub const PASS: &str = "iotgw_pass";
    /// Benchmark reference only, never attached: the least any gateway must do per frame
    /// (parse it, look the source MAC up in `DEVICES`, bump one per-CPU counter, look the
    /// flow up in `FLOWS_V4` or `FLOWS_V6`).
    pub const FLOOR: &str = "iotgw_floor";
}

/// Slot of the quarantine interface in `REDIRECT_PORTS`.
pub const QUARANTINE_SLOT: u32 = 0;

/// A device's lifecycle state as enforced by XDP. Append-only.
pub mod device_state {
    /// Never seen enrolled: onboarding lane only. Also the state of a MAC absent from `DEVICES`.
    pub const UNKNOWN: u8 = 0;
    /// Enrolling: onboarding lane only.
    pub const ONBOARDING: u8 = 1;
    /// Holds a valid certificate: its policy applies.
    pub const ENROLLED: u8 = 2;
    /// Quarantine allow-list, everything else redirected to the quarantine port or dropped.
    pub const QUARANTINED: u8 = 3;
    /// Everything dropped.
    pub const BLOCKED: u8 = 4;
}

/// A verdict chosen by configuration (`GatewayConfig`). Append-only.
pub mod verdict {
    pub const PASS: u8 = 0;
    pub const DROP: u8 = 1;
    /// Redirect to the quarantine port (falls back to drop when the port is missing).
    pub const REDIRECT: u8 = 2;

    /// The name of a verdict code for logs, the API and the CLI; `"unknown"` for a code this
    /// build does not know.
    pub const fn name(code: u8) -> &'static str {
        match code {
            PASS => "pass",
            DROP => "drop",
            REDIRECT => "redirect",
            _ => "unknown",
        }
    }
}

/// Reserved policy ids: lanes are policies like any other, filled from the policy files.
pub mod lane {
    /// What unknown and onboarding devices may reach (DHCP, DNS, the enrollment port).
    pub const ONBOARDING: u32 = 1;
    /// What quarantined devices may still reach (update lane, DNS).
    pub const QUARANTINE: u32 = 2;
    /// First id available to device-class policies.
    pub const FIRST_CLASS_POLICY: u32 = 16;
}

/// Why a frame was dropped (or, for malformed frames, given the configured verdict).
/// Indexes `DeviceStats::drops` and `GlobalCounter`. Append-only.
pub mod reason {
    pub const NONE: u32 = 0;
    /// Shorter than an Ethernet header.
    pub const RUNT: u32 = 1;
    /// More VLAN tags than `MAX_VLAN_TAGS`, or a truncated tag.
    pub const BAD_VLAN: u32 = 2;
    /// IPv4 header truncated, version ≠ 4 or IHL < 5.
    pub const BAD_IPV4: u32 = 3;
    /// IPv6 header truncated, or too many / truncated extension headers.
    pub const BAD_IPV6: u32 = 4;
    /// TCP/UDP/ICMP header truncated, or TCP data offset < 5.
    pub const BAD_L4: u32 = 5;
    /// Unknown/onboarding device outside the onboarding lane.
    pub const NOT_ENROLLED: u32 = 6;
    /// Enrolled device, destination not in its policy.
    pub const POLICY_DENY: u32 = 7;
    /// Quarantined device outside the quarantine allow-list (dropped, or redirected).
    pub const QUARANTINE: u32 = 8;
    /// Blocked device.
    pub const BLOCKED: u32 = 9;
    /// A redirect was asked for but the quarantine port is not set.
    pub const NO_REDIRECT_PORT: u32 = 10;
    /// Traffic from upstream towards a quarantined or blocked device.
    pub const TO_ISOLATED_DEVICE: u32 = 11;
    /// An IPv4 or IPv6 source address bound to another device (`source_guard::ENFORCE`).
    pub const SPOOFED_SOURCE: u32 = 12;
    /// Number of codes; sizes the arrays indexed by reason.
    pub const COUNT: usize = 13;
    /// Slots of `DeviceStats::drops`: `COUNT` rounded up to a power of two, so XDP indexes
    /// it with `why & (SLOTS - 1)`, a bound the verifier sees on the very register used,
    /// whatever the compiler does with a separate `< COUNT` check.
    pub const SLOTS: usize = COUNT.next_power_of_two();

    /// Names for logs, metrics and the API, indexed by code.
    pub const NAMES: [&str; COUNT] = [
        "none",
        "runt",
        "bad_vlan",
        "bad_ipv4",
        "bad_ipv6",
        "bad_l4",
        "not_enrolled",
        "policy_deny",
        "quarantine",
        "blocked",
        "no_redirect_port",
        "to_isolated_device",
        "spoofed_source",
    ];

    /// The name of a reason code (`NAMES`); `"unknown"` for a code this build does not know.
    pub const fn name(code: u32) -> &'static str {
        if (code as usize) < COUNT { NAMES[code as usize] } else { "unknown" }
    }
}

/// A reason as XDP hands it on, typed: the `Err` of a step that stops judging a frame, and
/// the reason a decision gives. Each discriminant is its `reason` code, so `code()` is what
/// the counters and events hold.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Runt = reason::RUNT,
    BadVlan = reason::BAD_VLAN,
    BadIpv4 = reason::BAD_IPV4,
    BadIpv6 = reason::BAD_IPV6,
    BadL4 = reason::BAD_L4,
    NotEnrolled = reason::NOT_ENROLLED,
    PolicyDeny = reason::POLICY_DENY,
    Quarantine = reason::QUARANTINE,
    Blocked = reason::BLOCKED,
    NoRedirectPort = reason::NO_REDIRECT_PORT,
    ToIsolatedDevice = reason::TO_ISOLATED_DEVICE,
    SpoofedSource = reason::SPOOFED_SOURCE,
}

impl DropReason {
    /// The `reason` code.
    #[inline(always)]
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// Indexes of `GLOBAL_STATS`, a per-CPU array of `u64`. Append-only.
pub mod counter {
    /// Frames seen by the LAN program.
    pub const LAN_PACKETS: u32 = 0;
    /// Frames seen by the WAN program.
    pub const WAN_PACKETS: u32 = 1;
    /// Events the ring buffer had no room for.
    pub const EVENTS_LOST: u32 = 2;
    /// Frames redirected to the quarantine port.
    pub const REDIRECTED: u32 = 3;
    /// Flow-table inserts that failed.
    pub const FLOW_INSERT_FAILED: u32 = 4;
    /// Flows XDP inserted into `FLOWS_V4`. Nothing else adds or removes flows, so this less
    /// the entries the map holds is what its LRU evicted.
    pub const FLOWS_V4_INSERTED: u32 = 5;
    /// Unknown devices XDP inserted into `UNKNOWN_DEVICE_STATS` (the same for its evictions;
    /// `DEVICE_STATS` before ABI 8).
    pub const UNKNOWN_DEVICE_STATS_INSERTED: u32 = 6;
    /// Frames from an IPv4 or IPv6 source bound to another device, passed because the source guard
    /// only logs (`source_guard::LOG`; under `ENFORCE` they are drops, `reason::SPOOFED_SOURCE`).
    pub const SPOOFED_SOURCE_PASSED: u32 = 7;
    /// Flows XDP inserted into `FLOWS_V6` (the same for its evictions).
    pub const FLOWS_V6_INSERTED: u32 = 8;
    /// Changed devices `CHANGED_DEVICES` had no room for: the sweep then reads every device.
    pub const CHANGED_DEVICES_LOST: u32 = 9;
    /// Drops by reason start here: `DROPS_BASE + reason`.
    pub const DROPS_BASE: u32 = 16;
    pub const COUNT: u32 = DROPS_BASE + crate::reason::COUNT as u32;
}

/// Parser bounds: the verifier needs them, and they cap the work a hostile frame can cause.
pub const MAX_VLAN_TAGS: usize = 2;
pub const MAX_IPV6_EXT_HEADERS: usize = 4;
pub const MAX_TCP_OPTIONS: usize = 10;
/// Port combinations (`PortMatch`) one policy rule can hold.
pub const MAX_PORT_MATCHES: usize = 8;
/// Bytes of a DHCP/DNS/ARP packet copied into a sample event (from the L3 header on).
pub const SAMPLE_BYTES: usize = 512;

/// IP protocol numbers used by the datapath.
pub mod proto {
    pub const ICMP: u8 = 0x01;
    pub const TCP: u8 = 0x06;
    pub const UDP: u8 = 0x11;
    pub const ICMPV6: u8 = 0x3a;
    /// Wildcard in `PolicyKey::proto`: the rule applies to every protocol.
    pub const ANY: u8 = 0xff;
    /// Protocols into which the controller's compiler copies every `ANY` entry, so the
    /// datapath finds a packet of these protocols with one LPM lookup (its own protocol) and
    /// looks `ANY` up only for the others.
    pub const FOLDED: [u8; 4] = [TCP, UDP, ICMP, ICMPV6];
}

/// Who opened the connection a packet belongs to, as bits: a packet has one (or `EITHER`),
/// a `PortMatch` admits a set. Append-only.
pub mod opener {
    /// The device: a TCP SYN from the device, and the rest of that connection.
    pub const DEVICE: u8 = 1;
    /// The remote: the device's SYN-ACK answers a remote's SYN, and the rest of that connection.
    pub const REMOTE: u8 = 2;
    /// Not known: UDP, ICMP and other protocols (the datapath sees one side of them), a TCP
    /// flow first seen after its handshake, fragments. Such a packet matches a `PortMatch`
    /// of either opener, each in its own port orientation.
    pub const EITHER: u8 = DEVICE | REMOTE;
}

/// ICMP and ICMPv6 requests with their replies, as (protocol, request, reply): echo,
/// timestamp, information and address mask (RFC 792, RFC 950); ICMPv6 echo (RFC 4443).
const ICMP_PAIRS: [(u8, u8, u8); 5] = [
    (proto::ICMP, 8, 0),
    (proto::ICMP, 13, 14),
    (proto::ICMP, 15, 16),
    (proto::ICMP, 17, 18),
    (proto::ICMPV6, 128, 129),
];

/// The (request, reply) pair ICMP or ICMPv6 (`ip_proto`) type `kind` belongs to, if any.
/// The controller compiles what a device may answer from it, and the WAN program reads a
/// remote's message as the device's message it pairs with.
#[inline(always)]
pub const fn icmp_pair(ip_proto: u8, kind: u8) -> Option<(u8, u8)> {
    let mut i = 0;
    while i < ICMP_PAIRS.len() {
        let (pair_proto, request, reply) = ICMP_PAIRS[i];
        if pair_proto == ip_proto && (request == kind || reply == kind) {
            return Some((request, reply));
        }
        i += 1;
    }
    None
}

/// What the LAN program does with an IP frame whose source address is bound, in
/// `SOURCE_BINDINGS_V4` or `SOURCE_BINDINGS_V6`, to another device
/// (`GatewayConfig::source_guard`). An address bound to nobody passes (the unspecified
/// addresses are never bound): the controller binds addresses as devices claim them (DHCP,
/// DHCPv6, ARP, neighbour discovery). Append-only.
pub mod source_guard {
    /// No check.
    pub const OFF: u8 = 0;
    /// Passed, counted (`counter::SPOOFED_SOURCE_PASSED`, `SOURCE_VIOLATIONS`).
    pub const LOG: u8 = 1;
    /// Dropped (`reason::SPOOFED_SOURCE`), counted in `SOURCE_VIOLATIONS` too.
    pub const ENFORCE: u8 = 2;
}

/// A MAC address padded to 8 bytes, the key of the device maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacKey {
    /// As on the wire.
    pub addr: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    pub const fn new(addr: [u8; 6]) -> Self {
        Self { addr, _pad: [0; 2] }
    }
}

/// What XDP knows about a device, the part every frame copies out of its `DeviceRecord`.
/// Written only by the controller.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// One of `device_state`.
    pub state: u8,
    pub _pad: u8,
    /// Device class id (host order), for accounting; 0 = unclassified.
    pub class_id: u16,
    /// Policy id (host order) that applies when `state` is `ENROLLED`.
    pub policy_id: u32,
    /// The device's slot (host order): its index in `BUDGETS`, and its first of `N_CPUS`
    /// elements in `DEVICE_STATS` (`maps::DEVICE_STATS`), held while the device is in
    /// `DEVICES` (claimed in `DEVICE_SLOTS`); `NO_SLOT` for a MAC absent from `DEVICES`.
    pub slot: u32,
    pub _pad_end: u32,
}

impl DeviceEntry {
    /// The slot of a device without one: an unknown MAC, counted in `UNKNOWN_DEVICE_STATS`.
    pub const NO_SLOT: u32 = u32::MAX;
    /// A MAC absent from `DEVICES`.
    pub const UNKNOWN: Self =
        Self { state: device_state::UNKNOWN, _pad: 0, class_id: 0, policy_id: 0, slot: Self::NO_SLOT, _pad_end: 0 };
}

impl Default for DeviceEntry {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

/// A `DEVICES` value: the entry and the device's budget limits. XDP copies out only `entry`
/// and reads the limits in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceRecord {
    pub entry: DeviceEntry,
    pub budget: DeviceBudget,
}

/// A device's first counted frame on a CPU in a sweep epoch, in `CHANGED_DEVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangedDevice {
    pub mac: MacKey,
    /// The `DEVICE_STATS` slot counted (host order), or `DeviceEntry::NO_SLOT`: the MAC's
    /// entry in `UNKNOWN_DEVICE_STATS`.
    pub slot: u32,
    pub _pad: u32,
}

/// One device's frames from addresses bound to other devices, per CPU: userspace sums
/// `frames` and reports the address of any CPU that counted one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceViolation {
    /// Host order.
    pub frames: u64,
    /// The last source address used (network order): IPv6, or IPv4 mapped into IPv6
    /// (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2).
    pub last_source: [u8; 16],
}

/// Per-device counters, one copy per CPU; userspace sums them. Ordered so a frame from the
/// device writes one cache line (the first eight fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames and bytes from the device (LAN side).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames from the device by protocol.
    pub tcp_packets: u64,
    pub udp_packets: u64,
    pub icmp_packets: u64,
    pub other_packets: u64,
    /// Last frame from the device, `bpf_ktime_get_coarse_ns` (host order).
    pub last_seen_ns: u64,
    /// The `GatewayConfig::sweep_epoch` in which this CPU last counted a frame of the device
    /// (host order): when it differs from the live one, the frame is the device's first on
    /// this CPU in the epoch and it goes to `CHANGED_DEVICES`.
    pub sweep_epoch: u32,
    pub _pad: u32,
    /// Frames and bytes towards the device (WAN side).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// In `DEVICE_STATS`: the device the controller gave the slot to, written into each of the
    /// slot's elements with the zeroed counters when it claims or frees the slot (all zero:
    /// free). XDP never writes it, so a
    /// reader can tell whose counters a slot holds. Zero in `UNKNOWN_DEVICE_STATS`.
    pub owner: MacKey,
    /// Frames not passed, indexed by `reason` (slots from `reason::COUNT` on stay zero).
    pub drops: [u64; reason::SLOTS],
}

impl DeviceStats {
    /// All counters at zero: what a device starts with (a const, so XDP can insert it from
    /// .rodata instead of building it on its 512-byte stack).
    pub const ZERO: Self = Self {
        tx_packets: 0,
        tx_bytes: 0,
        tcp_packets: 0,
        udp_packets: 0,
        icmp_packets: 0,
        other_packets: 0,
        last_seen_ns: 0,
        sweep_epoch: 0,
        _pad: 0,
        rx_packets: 0,
        rx_bytes: 0,
        owner: MacKey::new([0; 6]),
        drops: [0; reason::SLOTS],
    };
}

impl Default for DeviceStats {
    fn default() -> Self {
        Self::ZERO
    }
}

/// A flow's 5-tuple plus the device it belongs to: the key of `FLOWS_V6`, and how userspace
/// and the new-flow events see every flow. IPv4 addresses sit in the first four bytes of the
/// 16-byte fields, the rest zero (`FlowKeyV4::widen`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Network order.
    pub src_addr: [u8; 16],
    /// Network order.
    pub dst_addr: [u8; 16],
    /// Host order; 0 for protocols without ports. ICMP puts type and code here.
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
    pub _pad: [u8; 2],
    /// Source MAC: flows are per device.
    pub mac: MacKey,
}

/// An IPv4 flow's 5-tuple plus the device it belongs to: the key of `FLOWS_V4`, 20 bytes
/// where `FlowKey` takes 48 (fewer bytes to hash and compare on every packet, and a smaller
/// table to keep in cache). Aligned to 4 so XDP writes each address as one word.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyV4 {
    /// Network order.
    pub src_addr: [u8; 4],
    /// Network order.
    pub dst_addr: [u8; 4],
    /// Host order; 0 for protocols without ports. ICMP puts type and code here.
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    pub _pad: u8,
    /// Source MAC, as on the wire: flows are per device.
    pub mac: [u8; 6],
}

impl FlowKeyV4 {
    /// The same flow as a `FlowKey` (IPv4 addresses in the first four bytes).
    pub const fn widen(&self) -> FlowKey {
        let (s, d) = (self.src_addr, self.dst_addr);
        FlowKey {
            src_addr: [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            src_port: self.src_port,
            dst_port: self.dst_port,
            proto: self.proto,
            ip_version: 4,
            _pad: [0; 2],
            mac: MacKey::new(self.mac),
        }
    }
}

/// A passive TCP SYN fingerprint (p0f-style): what the device's stack chose.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SynFingerprint {
    /// Host order.
    pub window: u16,
    /// Host order; 0 when absent.
    pub mss: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// 0xff when absent.
    pub window_scale: u8,
    /// Number of options in `option_kinds`.
    pub option_count: u8,
    /// 1 when the IPv4 DF bit is set.
    pub dont_fragment: u8,
    /// TCP option kinds in order (NOP included), up to `MAX_TCP_OPTIONS`.
    pub option_kinds: [u8; MAX_TCP_OPTIONS],
    pub _pad: [u8; 2],
}

/// A flow's counters and its cached decision. Packets and bytes are added atomically; the
/// rest is last-writer-wins.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns` (host order).
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// OR of every TCP flag byte seen.
    pub tcp_flags: u8,
    /// One of `verdict`, the verdict given to the flow's last packet.
    pub last_verdict: u8,
    /// Who opened the flow (`opener`), from its latest SYN or SYN-ACK; `EITHER` until one
    /// is seen. Later packets of the connection are judged for that opener.
    pub opener: u8,
    pub _pad: u8,
    /// The device's `DeviceEntry::policy_id` (host order) when `decision` was made.
    pub decided_policy_id: u32,
    /// Filled from the flow's SYN, zero otherwise.
    pub syn: SynFingerprint,
    pub _pad_end: [u8; 4],
    /// The flow's cached decision (`CachedDecision`, host order). One `u64` so XDP reads and
    /// writes it with a single 64-bit access: two CPUs deciding the same flow at once leave
    /// one of their results, never a mix of both.
    pub decision: u64,
}

impl FlowStats {
    /// What a flow's entry starts as, before its first packet is added: no packet, and no
    /// decision cached (so a CPU reading the entry before it is filled decides afresh).
    pub const NEW: Self = Self {
        packets: 0,
        bytes: 0,
        first_seen_ns: 0,
        last_seen_ns: 0,
        tcp_flags: 0,
        last_verdict: 0,
        opener: opener::EITHER,
        _pad: 0,
        decided_policy_id: 0,
        syn: SynFingerprint {
            window: 0,
            mss: 0,
            ttl: 0,
            window_scale: 0,
            option_count: 0,
            dont_fragment: 0,
            option_kinds: [0; MAX_TCP_OPTIONS],
            _pad: [0; 2],
        },
        _pad_end: [0; 4],
        decision: CachedDecision::NONE,
    };
}

/// The decision a flow's packets reuse while nothing it depends on changed, packed into
/// `FlowStats::decision`: bits 0..32 the `GatewayConfig::policy_generation` it was made
/// under, 32..40 the device state, 40..48 the verdict, 48..56 the reason (every reason code
/// is below 256), 56..64 zero.
///
/// It is valid for a packet when the generation equals the live `CONFIG` one and the state
/// (and `FlowStats::decided_policy_id`) equal the live `DEVICES` entry: the controller bumps
/// the generation after every write to the policy maps, `CONFIG` and `DEVICES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedDecision {
    pub policy_generation: u32,
    /// One of `device_state`, or `NONE_STATE` for "no decision cached".
    pub device_state: u8,
    pub verdict: u8,
    /// One of `reason`.
    pub reason: u8,
}

impl CachedDecision {
    /// A device state no device has: a flow holding it has no decision cached.
    pub const NONE_STATE: u8 = 0xff;
    /// Packs "no decision cached": never equal to a live device state.
    pub const NONE: u64 = (Self::NONE_STATE as u64) << 32;

    #[inline(always)]
    pub const fn pack(self) -> u64 {
        self.policy_generation as u64
            | (self.device_state as u64) << 32
            | (self.verdict as u64) << 40
            | (self.reason as u64) << 48
    }

    #[inline(always)]
    pub const fn unpack(word: u64) -> Self {
        Self {
            policy_generation: word as u32,
            device_state: (word >> 32) as u8,
            verdict: (word >> 40) as u8,
            reason: (word >> 48) as u8,
        }
    }
}

/// Key of the policy LPM tries. The prefix length counts `policy_id` and `proto` (always
/// fully matched, `POLICY_KEY_FIXED_BITS`) plus the address prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyKey<const N: usize> {
    /// Network order, so the trie compares it bytewise.
    pub policy_id: [u8; 4],
    /// IP protocol, or `proto::ANY`.
    pub proto: u8,
    pub _pad: [u8; 3],
    /// Network order.
    pub addr: [u8; N],
}

/// Bits of a `PolicyKey` before the address.
pub const POLICY_KEY_FIXED_BITS: u32 = 64;

/// An inclusive port range (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ALL: Self = Self { first: 0, last: u16::MAX };
}

/// One combination of ports a rule admits, for the openers it names. A packet matches when
/// its opener is one of `openers` and both its ports fall in the ranges. For ICMP and ICMPv6
/// the remote's "port" is the device's message, `type << 8 | code`, and the device's is 0.
/// A non-first fragment (no ports) matches only when both ranges are every port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortMatch {
    /// The remote end's port.
    pub remote: PortRange,
    /// The device's own port.
    pub device: PortRange,
    /// `opener` bits.
    pub openers: u8,
    pub _pad: [u8; 3],
}

/// What a policy allows towards one prefix for one protocol: any of `matches`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// Number of valid entries in `matches`.
    pub match_count: u32,
    pub matches: [PortMatch; MAX_PORT_MATCHES],
}

/// Runtime configuration of the datapath, written by the controller at start and reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Must equal `ABI_VERSION`; the programs pass everything until it does (fail open until
    /// configured, so loading never cuts the network by itself).
    pub abi_version: u32,
    /// `verdict` for malformed frames.
    pub malformed_verdict: u8,
    /// `verdict` for unknown/onboarding devices outside the onboarding lane.
    pub unknown_verdict: u8,
    /// `verdict` for enrolled devices outside their policy.
    pub policy_miss_verdict: u8,
    /// `verdict` for quarantined devices outside the allow-list: `REDIRECT` or `DROP`.
    pub quarantine_verdict: u8,
    /// 1: send DHCP, DNS and ARP samples to userspace.
    pub sample_packets: u8,
    /// 1: send an event for every new flow.
    pub flow_events: u8,
    /// One of `source_guard` (0, `OFF`, in a configuration written before it existed).
    pub source_guard: u8,
    pub _pad: u8,
    /// Rewritten into redirected frames: the quarantine host's MAC and the gateway's own MAC
    /// on the quarantine port.
    pub quarantine_dst_mac: [u8; 6],
    pub quarantine_src_mac: [u8; 6],
    /// Host order. Bumped by the controller after every write to `POLICY_V4`/`POLICY_V6`,
    /// `DEVICES` and this config: a flow's cached decision (`CachedDecision`) made under
    /// another generation is recomputed on its next packet.
    pub policy_generation: u32,
    /// Host order. Bumped by the controller's counter sweep before each read: a device's
    /// first counted frame per CPU in an epoch writes its MAC to `CHANGED_DEVICES`.
    pub sweep_epoch: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            abi_version: ABI_VERSION,
            malformed_verdict: verdict::DROP,
            unknown_verdict: verdict::DROP,
            policy_miss_verdict: verdict::DROP,
            quarantine_verdict: verdict::REDIRECT,
            sample_packets: 1,
            flow_events: 1,
            source_guard: source_guard::OFF,
            _pad: 0,
            quarantine_dst_mac: [0; 6],
            quarantine_src_mac: [0; 6],
            policy_generation: 0,
            sweep_epoch: 0,
        }
    }
}

/// One budget of a device, as the controller writes it in the device's `DeviceRecord`: at most
/// `limit` per `window_ns` (host order; `NONE`: no budget, nothing counted).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimit {
    pub limit: u64,
    pub window_ns: u64,
}

impl BudgetLimit {
    /// No budget: XDP neither counts nor reports.
    pub const NONE: Self = Self { limit: u64::MAX, window_ns: 0 };
}

impl Default for BudgetLimit {
    fn default() -> Self {
        Self::NONE
    }
}

/// A device's budget limits (`DeviceRecord::budget`). The frame that takes a window's count
/// above its limit sends one `BudgetEvent`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceBudget {
    /// Frames sent per window (`budget_measure::PACKETS`).
    pub packets: BudgetLimit,
    /// Bytes sent per window (`budget_measure::BYTES`).
    pub bytes: BudgetLimit,
}

/// XDP's count against one budget over a fixed window. All fields host order; times are
/// `bpf_ktime_get_coarse_ns`. Written without locks by whichever CPU sees the frame:
/// `counted` is added to atomically, a window's restart is last-writer-wins (a frame or two of
/// another CPU may land in the old window), and `reported_start_ns` holds the start of the last
/// window reported, so each window is reported once (twice at most, by two CPUs crossing in
/// the same instant).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetWindow {
    pub start_ns: u64,
    pub counted: u64,
    pub reported_start_ns: u64,
}

/// A device's windows in `BUDGETS` (its slot), one per `DeviceBudget` limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetWindows {
    pub packets: BudgetWindow,
    pub bytes: BudgetWindow,
}

/// Kind of an `EventHeader`. Append-only.
pub mod event_kind {
    /// Followed by `FlowEvent`.
    pub const NEW_FLOW: u8 = 1;
    /// Followed by `SampleEvent`.
    pub const SAMPLE: u8 = 2;
    /// Followed by `BudgetEvent`.
    pub const BUDGET: u8 = 3;
}

/// What a `BudgetWindow` counts. Append-only.
pub mod budget_measure {
    /// Frames the device sent.
    pub const PACKETS: u8 = 1;
    /// Bytes of the frames the device sent.
    pub const BYTES: u8 = 2;
}

/// What a `SampleEvent` holds. Append-only.
pub mod sample_kind {
    pub const DHCP: u8 = 1;
    /// A DNS message a device sent, seen by the LAN program (its queries are what answers
    /// from upstream are matched to).
    pub const DNS: u8 = 2;
    pub const ARP: u8 = 3;
    /// A TCP payload that starts like a TLS handshake record (ClientHello fingerprints).
    pub const TLS: u8 = 4;
    /// A DNS message towards a device that no device sent: from upstream (seen by the WAN
    /// program) or from the gateway's own stack, i.e. a resolver on the gateway (seen by the
    /// LAN egress program). Only these may open DNS-name policy rules (a device could forge
    /// anything it sends itself), and only when one answers a query of the device's (`DNS`).
    pub const DNS_ANSWER: u8 = 5;
    /// DHCPv6 (UDP 546/547): devices announce their MUD URL in option 112.
    pub const DHCPV6: u8 = 6;
    /// An LLDPDU (EtherType 0x88cc), from the Ethernet payload on: the MUD URL TLV.
    pub const LLDP: u8 = 7;
    /// SSDP (UDP 1900): a UPnP announcement or search answer, naming the device's UPnP type.
    pub const SSDP: u8 = 8;
    /// An ICMPv6 Neighbor Solicitation or Advertisement (RFC 4861 §4.3, §4.4) a device sent:
    /// the addresses it claims, for the source guard (FCFS SAVI, RFC 6620), duplicate
    /// address detection's probes from `::` included.
    pub const NDP: u8 = 9;
}

/// First bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of `event_kind`.
    pub kind: u8,
    /// One of `verdict`: what the datapath did with the packet.
    pub verdict: u8,
    /// One of `device_state` at the time.
    pub device_state: u8,
    pub _pad: u8,
    /// `reason` code when the packet was not passed.
    pub reason: u32,
    /// `bpf_ktime_get_ns` (host order).
    pub timestamp_ns: u64,
}

/// A flow seen for the first time (its first packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub header: EventHeader,
    pub key: FlowKey,
    /// Bytes of the first frame.
    pub frame_bytes: u32,
    /// TCP flags of the first packet.
    pub tcp_flags: u8,
    pub _pad: [u8; 3],
    pub syn: SynFingerprint,
    pub _pad_end: [u8; 4],
}

/// A copy of a DHCP, DNS, ARP, TLS, LLDP, SSDP or neighbour-discovery packet for userspace
/// parsing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleEvent {
    pub header: EventHeader,
    /// One of `sample_kind`.
    pub kind: u8,
    pub _pad: u8,
    /// Bytes valid in `data` (host order).
    pub len: u16,
    /// Length of the whole frame (host order).
    pub frame_bytes: u16,
    /// Offset in `data` where the L4 payload starts (host order); 0 for ARP.
    pub payload_offset: u16,
    pub mac: MacKey,
    /// The packet from its L3 header on (ARP: from the ARP header).
    pub data: [u8; SAMPLE_BYTES],
}

/// A device took one of its budgets over its limit: sent once per window, by the frame that
/// crossed it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetEvent {
    pub header: EventHeader,
    pub mac: MacKey,
    /// One of `budget_measure`.
    pub measure: u8,
    pub _pad: [u8; 7],
    /// The window's limit and length, as the controller wrote them (host order).
    pub limit: u64,
    pub window_ns: u64,
    /// Counted in the window with the crossing frame, and how long after the window's start
    /// it came (host order).
    pub counted: u64,
    pub elapsed_ns: u64,
}

// Layouts are ABI: the compiler checks every size here so an edit cannot shift a field
// silently (as cilium's bpf_alignchecker does).
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<MacKey>() == 8);
    assert!(size_of::<DeviceEntry>() == 16);
    assert!(size_of::<DeviceRecord>() == 16 + 32);
    assert!(size_of::<ChangedDevice>() == 16);
    assert!(size_of::<ChangedDevice>() as u32 + 8 == maps::CHANGED_DEVICES_RECORD_BYTES);
    assert!(size_of::<SourceViolation>() == 24);
    assert!(size_of::<DeviceStats>() == 8 * 8 + 8 + 8 + 8 + 8 * reason::SLOTS);
    // A frame from the device writes the first cache line only.
    assert!(core::mem::offset_of!(DeviceStats, rx_packets) == 64);
    assert!(reason::SLOTS.is_power_of_two() && reason::SLOTS >= reason::COUNT);
    assert!(size_of::<FlowKey>() == 48);
    assert!(size_of::<FlowKeyV4>() == 20);
    assert!(size_of::<SynFingerprint>() == 20);
    assert!(size_of::<FlowStats>() == 40 + 20 + 4 + 8);
    assert!(core::mem::offset_of!(FlowStats, decision) % 8 == 0);
    // `CachedDecision` keeps a reason in 8 bits.
    assert!(reason::COUNT <= 256);
    assert!(size_of::<FlowEvent>() == 16 + 48 + 8 + 20 + 4);
    assert!(size_of::<PolicyKey<4>>() == 12);
    assert!(size_of::<PolicyKey<16>>() == 24);
    assert!(size_of::<PortMatch>() == 12);
    assert!(size_of::<PolicyRule>() == 4 + 12 * MAX_PORT_MATCHES);
    assert!(size_of::<GatewayConfig>() == 32);
    assert!(size_of::<EventHeader>() == 16);
    assert!(size_of::<SampleEvent>() == 16 + 8 + 8 + SAMPLE_BYTES);
    assert!(size_of::<BudgetLimit>() == 16);
    assert!(size_of::<DeviceBudget>() == 32);
    assert!(size_of::<BudgetWindow>() == 24);
    assert!(size_of::<BudgetWindows>() == 48);
    assert!(core::mem::offset_of!(BudgetWindow, counted) % 8 == 0);
    assert!(size_of::<BudgetEvent>() == 16 + 8 + 8 + 32);
};

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` says a type may be copied to and from the kernel byte for byte. Each type
    //! here is `#[repr(C)]`, `Copy`, and has every padding byte as a named field, so no
    //! uninitialised byte crosses the boundary.
    use super::*;
    unsafe impl aya::Pod for MacKey {}
    unsafe impl aya::Pod for DeviceEntry {}
    unsafe impl aya::Pod for DeviceRecord {}
    unsafe impl aya::Pod for ChangedDevice {}
    unsafe impl aya::Pod for BudgetLimit {}
    unsafe impl aya::Pod for BudgetWindows {}
    unsafe impl aya::Pod for DeviceStats {}
    unsafe impl aya::Pod for SourceViolation {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowKeyV4 {}
    unsafe impl aya::Pod for FlowStats {}
    unsafe impl<const N: usize> aya::Pod for PolicyKey<N> {}
    unsafe impl aya::Pod for PortMatch {}
    unsafe impl aya::Pod for PolicyRule {}
    unsafe impl aya::Pod for GatewayConfig {}
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for SampleEvent {}
    unsafe impl aya::Pod for SynFingerprint {}
    unsafe impl aya::Pod for BudgetWindow {}
    unsafe impl aya::Pod for DeviceBudget {}
    unsafe impl aya::Pod for BudgetEvent {}

    /// Safe decoding of ring-buffer records and map values for userspace, which forbids
    /// `unsafe`.
    pub trait FromBytes: aya::Pod {
        /// Reads a `Self` from the first `size_of::<Self>()` bytes, or `None` if too short.
        fn from_bytes(bytes: &[u8]) -> Option<Self> {
            if bytes.len() < core::mem::size_of::<Self>() {
                return None;
            }
            // SAFETY: the length was checked; `Self: Pod` is plain integers and byte arrays,
            // valid for every bit pattern; the kernel promises no alignment, hence unaligned.
            Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
        }
    }

    impl<T: aya::Pod> FromBytes for T {}
}

#[cfg(feature = "user")]
pub use pod::FromBytes;
