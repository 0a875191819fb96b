//! The flow verdict cache (gateway-ebpf's `flow`) never outlives what it was decided from:
//! an ESTABLISHED flow (its decision cached by earlier packets) gets the new decision on its
//! very next packet after a policy reload, a revocation (quarantine), a class change, or a
//! change of the configured verdicts.
//!
//! Also: "any" rules, which the compiler folds into per-protocol entries, still admit every
//! protocol (the folded ones with one lookup, the others through the ANY entry).
//!
//! Runs the real LAN program with BPF_PROG_TEST_RUN on crafted frames, with the maps written
//! through the controller's `datapath::maps` (the only writer, as in production). Needs root
//! (BPF); each test pins its maps in its own directory, removed on drop.
use std::path::PathBuf;

use gateway_ebpf::{CachedDecision, GatewayConfig, lane, reason};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
    policy::CompiledPolicy,
};
use netns_tests::{
    lan_program::LanProgram,
    packets::{self, Endpoints},
    policies::{DefaultVerdicts, LANES},
};

const GATEWAY_MAC: [u8; 6] = [0x02, 0x66, 0, 0, 0, 1];
const DEVICE_MAC: [u8; 6] = [0x02, 0x66, 0, 0, 0, 0x10];
const DEVICE_IP: [u8; 4] = [10, 77, 0, 16];
const BROKER_IP: [u8; 4] = [10, 78, 0, 2];
const DEVICE_PORT: u16 = 45_000;
const SENSOR_CLASS: u16 = 20;
const CAMERA_CLASS: u16 = 21;
/// XDP return codes (`enum xdp_action`, include/uapi/linux/bpf.h).
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// Packets sent on the flow before each change, so its decision is cached and reused.
const ESTABLISHING_PACKETS: usize = 5;

/// Where cameras may send anything ("any" rule).
const CAMERA_SINK_IP: [u8; 4] = [10, 78, 0, 3];

/// Sensors may reach the broker over MQTT; cameras only over HTTPS, and anything to the sink.
fn classes(sensor_mqtt: bool) -> String {
    let sensor_ports = if sensor_mqtt { "[1883]" } else { "[8883]" };
    format!(
        "[[class]]\nname = \"sensor\"\nid = {SENSOR_CLASS}\n[[class.allow]]\nnets = [\"10.78.0.2/32\"]\nprotocol = \"tcp\"\nports = {sensor_ports}\n\
         [[class]]\nname = \"camera\"\nid = {CAMERA_CLASS}\n[[class.allow]]\nnets = [\"10.78.0.2/32\"]\nprotocol = \"tcp\"\nports = [443]\n\
         [[class.allow]]\nnets = [\"10.78.0.3/32\"]\nprotocol = \"any\"\n"
    )
}

fn compiled(sensor_mqtt: bool, policy_miss: &str) -> CompiledPolicy {
    let defaults = DefaultVerdicts { policy_miss, ..DefaultVerdicts::LAB }.toml();
    let sources = vec![
        (PathBuf::from("lanes.toml"), LANES.to_owned()),
        (PathBuf::from("classes.toml"), classes(sensor_mqtt)),
        (PathBuf::from("defaults.toml"), defaults),
    ];
    let policy = iotgw::policy::parse_sources(&sources).expect("test policy parses");
    iotgw::policy::compile(&policy).expect("test policy compiles")
}

/// The LAN program with the sensor policy and the device enrolled.
struct Datapath {
    lan: LanProgram,
}

impl Datapath {
    fn new(name: &str) -> Self {
        let datapath = Self { lan: LanProgram::load(name, &[]) };
        datapath.apply(&compiled(true, "drop"));
        datapath.set_device(Access::Enrolled, SENSOR_CLASS);
        datapath
    }

    /// What the controller does on a policy (re)load: rules, then verdicts.
    fn apply(&self, policy: &CompiledPolicy) {
        self.lan.maps.sync_policy(policy.rules.iter().map(iotgw::policy::CompiledRule::to_abi)).expect("policy rules");
        let v = policy.verdicts;
        self.lan
            .maps
            .write_config(&GatewayConfig {
                malformed_verdict: v.malformed,
                unknown_verdict: v.unknown,
                policy_miss_verdict: v.policy_miss,
                quarantine_verdict: v.quarantine,
                ..GatewayConfig::default()
            })
            .expect("datapath config");
    }

    fn set_device(&self, access: Access, class: u16) {
        let policy_id = lane::FIRST_CLASS_POLICY + u32::from(class);
        self.lan
            .maps
            .set_access(Mac(DEVICE_MAC), DeviceAccess { access, policy_id, class_id: class })
            .expect("device entry");
    }

    /// Runs one frame of the device's MQTT flow through the LAN program.
    fn send(&self, seq: u32) -> u32 {
        self.run(&packets::tcp_data(endpoints(BROKER_IP), DEVICE_PORT, packets::MQTT_PORT, seq, 32))
    }

    /// Runs `frame` through the LAN program: its XDP action.
    fn run(&self, frame: &[u8]) -> u32 {
        self.lan.run(frame, 1)
    }

    /// Sends the flow's packets and checks each got `expected`.
    fn flow_gets(&self, expected: u32, count: usize) {
        for seq in 0..count {
            assert_eq!(self.send(seq as u32), expected, "packet {seq} of the flow");
        }
    }

    /// The flow's entry: packets counted and the decision it caches.
    fn flow(&self) -> (u64, CachedDecision) {
        let flows = self.lan.maps.flows(Some(Mac(DEVICE_MAC)));
        assert_eq!(flows.len(), 1, "one flow: {flows:?}");
        (flows[0].1.packets, CachedDecision::unpack(flows[0].1.decision))
    }

    fn generation(&self) -> u32 {
        self.lan.maps.read_config().expect("config").policy_generation
    }

    fn drops(&self, why: u32) -> u64 {
        self.lan.maps.drops_by_reason()[why as usize]
    }
}

fn endpoints(dst_ip: [u8; 4]) -> Endpoints {
    Endpoints { src_mac: DEVICE_MAC, dst_mac: GATEWAY_MAC, src_ip: DEVICE_IP, dst_ip }
}

/// A GRE packet (IP protocol 47, outside `proto::FOLDED`) with an empty GRE header.
fn gre(dst_ip: [u8; 4]) -> Vec<u8> {
    let builder =
        etherparse::PacketBuilder::ethernet2(DEVICE_MAC, GATEWAY_MAC).ipv4(DEVICE_IP, dst_ip, packets::DEFAULT_TTL);
    let payload = [0u8; 4];
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, etherparse::IpNumber::GRE, &payload).expect("gre frame");
    frame
}

#[test]
fn established_flow_caches_its_decision_under_the_live_generation() {
    let d = Datapath::new("cache");
    d.flow_gets(XDP_PASS, ESTABLISHING_PACKETS);
    let (packets, cached) = d.flow();
    assert_eq!(packets, ESTABLISHING_PACKETS as u64);
    assert_eq!(cached.policy_generation, d.generation(), "decided under the live generation");
    assert_eq!(cached.device_state, gateway_ebpf::device_state::ENROLLED);
    assert_eq!((cached.verdict, u32::from(cached.reason)), (gateway_ebpf::verdict::PASS, reason::NONE));
}

#[test]
fn policy_reload_reaches_an_established_flow_at_its_next_packet() {
    let d = Datapath::new("reload");
    d.flow_gets(XDP_PASS, ESTABLISHING_PACKETS);
    let before = d.generation();
    d.apply(&compiled(false, "drop"));
    assert!(d.generation() != before, "a policy write bumps the generation");
    assert_eq!(d.send(100), XDP_DROP, "MQTT left the sensor policy: the next packet is dropped");
    assert_eq!(d.drops(reason::POLICY_DENY), 1);
    d.flow_gets(XDP_DROP, ESTABLISHING_PACKETS);
    d.apply(&compiled(true, "drop"));
    assert_eq!(d.send(200), XDP_PASS, "MQTT allowed again: the next packet passes");
    let (packets, cached) = d.flow();
    assert_eq!(packets, 2 * ESTABLISHING_PACKETS as u64 + 2, "one flow all along");
    assert_eq!(cached.verdict, gateway_ebpf::verdict::PASS);
}

#[test]
fn quarantine_reaches_an_established_flow_at_its_next_packet() {
    let d = Datapath::new("quarantine");
    d.flow_gets(XDP_PASS, ESTABLISHING_PACKETS);
    d.set_device(Access::Quarantined, SENSOR_CLASS);
    // No quarantine port in this test: the redirect becomes a drop, counted once, under why
    // the redirect failed.
    assert_eq!(d.send(100), XDP_DROP, "a quarantined device's established flow is cut at once");
    let (_, cached) = d.flow();
    assert_eq!((cached.verdict, u32::from(cached.reason)), (gateway_ebpf::verdict::REDIRECT, reason::QUARANTINE));
    assert_eq!((d.drops(reason::QUARANTINE), d.drops(reason::NO_REDIRECT_PORT)), (0, 1));
    d.set_device(Access::Blocked, SENSOR_CLASS);
    assert_eq!(d.send(101), XDP_DROP);
    assert_eq!(d.drops(reason::BLOCKED), 1, "blocked, not a stale quarantine decision");
    d.set_device(Access::Enrolled, SENSOR_CLASS);
    assert_eq!(d.send(102), XDP_PASS, "released: the flow passes again");
}

#[test]
fn class_change_reaches_an_established_flow_at_its_next_packet() {
    let d = Datapath::new("class");
    d.flow_gets(XDP_PASS, ESTABLISHING_PACKETS);
    let before = d.generation();
    d.set_device(Access::Enrolled, CAMERA_CLASS);
    assert_eq!(d.generation(), before.wrapping_add(1), "a device write bumps the generation");
    assert_eq!(d.send(100), XDP_DROP, "cameras may not use MQTT");
    assert_eq!(d.drops(reason::POLICY_DENY), 1);
}

#[test]
fn verdict_change_in_the_config_reaches_an_established_denied_flow() {
    let d = Datapath::new("verdicts");
    d.apply(&compiled(false, "drop"));
    d.flow_gets(XDP_DROP, ESTABLISHING_PACKETS);
    d.apply(&compiled(false, "pass"));
    assert_eq!(d.send(100), XDP_PASS, "policy_miss = pass applies to the established flow");
}

#[test]
fn any_rule_admits_every_protocol_folded_or_not_and_nothing_elsewhere() {
    let d = Datapath::new("fold");
    d.set_device(Access::Enrolled, CAMERA_CLASS);
    let sink = endpoints(CAMERA_SINK_IP);
    assert_eq!(d.run(&packets::tcp_syn(sink, 46_000, packets::TELNET_PORT)), XDP_PASS, "tcp, folded");
    assert_eq!(d.run(&packets::udp(sink, 46_001, 9_999, b"x")), XDP_PASS, "udp, folded");
    assert_eq!(d.run(&packets::icmp_echo(sink, 7, 1)), XDP_PASS, "icmp, folded");
    assert_eq!(d.run(&gre(CAMERA_SINK_IP)), XDP_PASS, "gre, through the ANY entry");
    // Elsewhere only the camera's HTTPS: nothing leaks from the folded entries.
    let broker = endpoints(BROKER_IP);
    assert_eq!(d.run(&packets::tcp_syn(broker, 46_002, 443)), XDP_PASS);
    assert_eq!(d.run(&packets::tcp_syn(broker, 46_003, packets::TELNET_PORT)), XDP_DROP);
    assert_eq!(d.run(&packets::udp(broker, 46_004, 443, b"x")), XDP_DROP);
    assert_eq!(d.run(&gre(BROKER_IP)), XDP_DROP);
    assert_eq!(d.drops(reason::POLICY_DENY), 3);
}
