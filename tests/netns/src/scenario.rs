//! Device behaviour for the detection tests and the latency benchmark: a meter that reports
//! to its head-end on a rhythm (learning), then misbehaves. Frames are sent raw from the
//! device namespace; timing is measured against the pinned device table, i.e. against what
//! XDP enforces.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};

use crate::{
    controller::Controller,
    lab::{GATEWAY_LAN_IP, Lab},
    packets::{self, Endpoints},
    raw::RawSocket,
};

/// The meter's head-end and its port (as in the shipped meter policy).
pub const HEAD_END_IP: [u8; 4] = [10, 78, 0, 40];
pub const HEAD_END_PORT: u16 = 4059;
/// How long the device shows its normal behaviour before it is judged.
pub const LEARNING: Duration = Duration::from_secs(6);
/// Its rhythm: one reading (a new TCP flow) and one DNS query per period.
pub const READING_PERIOD: Duration = Duration::from_millis(250);
/// Scan frames sent at most while waiting for the quarantine (bounded).
pub const MAX_SCAN_FRAMES: usize = 2_000;
/// Scan frames (one new host each) that make a scan for the lab meter: with the head-end and
/// the gateway's resolver it reaches every 250 ms, one host more than `[detect] scan_hosts`
/// (24 by default; the meter's baseline shows far fewer) in one window.
pub const SCAN_DETECTION_HOSTS: usize = 23;
/// The scan's pace: one new host per millisecond.
const SCAN_PERIOD: Duration = Duration::from_millis(1);
/// Distinct hosts the scan cycles through (10.78.0.50 up).
const SCAN_HOSTS: usize = 200;
/// How often `time_to_quarantine` reads the device table: its resolution.
pub const WATCH_PERIOD: Duration = Duration::from_micros(500);
/// Class id of the meter in the scenario's policy (policy id = 16 + class id).
pub const METER_CLASS: u16 = 13;

/// The scenario's policy: lanes, the meter class, and the response rules.
pub const POLICY: &str = r#"
[lanes.onboarding]
[[lanes.onboarding.allow]]
nets = ["255.255.255.255/32", "10.77.0.1/32"]
protocol = "udp"
ports = [53, 67, 68]

[lanes.quarantine]
[[lanes.quarantine.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53]

[[class]]
name = "meter"
id = 13
[[class.allow]]
nets = ["10.78.0.40/32"]
protocol = "tcp"
ports = [4059]
[[class.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53]

[defaults]
malformed = "drop"
unknown_device = "drop"
policy_miss = "drop"
quarantine = "redirect"

[[response]]
name = "isolate scanners and strangers"
detectors = ["scan", "new_destination", "flood", "lateral_movement", "volume"]
min_score = 0.5
action = "quarantine"
"#;

/// Short learning for the lab (the defaults are hours).
pub const DETECTION_CONFIG: &str = "\n[baseline]\nlearning_secs = 5\nwindow_secs = 1\nmin_learning_windows = 3\n";

pub struct Scenario<'a> {
    pub lab: &'a Lab,
    pub ctl: Controller,
    /// The device playing the meter.
    pub mac: [u8; 6],
    tx: RawSocket,
    endpoints: Endpoints,
    next_port: u16,
}

/// What a misbehaviour cost until XDP enforced.
pub struct Outcome {
    pub latency: Duration,
    pub frames_sent: usize,
    /// Of `latency`, the part after the frame that took the misbehaviour over the detector's
    /// threshold was sent: the gateway's own share (ring buffer, pipeline, response, map
    /// update), without the time the device needed to misbehave enough.
    pub after_threshold: Duration,
}

impl<'a> Scenario<'a> {
    /// Starts iotgw on the scenario policy and enrolls the lab's first device as a meter.
    pub fn start(lab: &'a Lab) -> Scenario<'a> {
        Self::start_with(lab, &[("scenario.toml", POLICY)])
    }

    /// The same on other policy files (the demo uses the shipped ones); they must have a
    /// `meter` class with id `METER_CLASS` reaching the head-end.
    pub fn start_with(lab: &'a Lab, policies: &[(&str, &str)]) -> Scenario<'a> {
        Self::start_with_config(lab, policies, "")
    }

    /// `start_with`, with more configuration after the scenario's detection settings.
    pub fn start_with_config(lab: &'a Lab, policies: &[(&str, &str)], extra_config: &str) -> Scenario<'a> {
        let ctl = Controller::start(lab, policies, &format!("{DETECTION_CONFIG}{extra_config}"));
        let device = &lab.devices[0];
        let mac = device.mac;
        let policy_id = gateway_ebpf::lane::FIRST_CLASS_POLICY + u32::from(METER_CLASS);
        ctl.maps()
            .set_access(Mac(mac), DeviceAccess { access: Access::Enrolled, policy_id, class_id: METER_CLASS })
            .expect("device table");
        ctl.maps().set_device_ipv4(Mac(mac), Ipv4Addr::from(device.ip)).expect("device address");
        let gw_mac = lab.mac_of(&lab.gw, "lan0");
        let endpoints = Endpoints { src_mac: mac, dst_mac: gw_mac, src_ip: device.ip, dst_ip: HEAD_END_IP };
        Scenario { lab, tx: RawSocket::open(&device.ns, device.interface), ctl, mac, endpoints, next_port: 20_000 }
    }

    fn port(&mut self) -> u16 {
        self.next_port = self.next_port.wrapping_add(1).max(20_000);
        self.next_port
    }

    /// One reading to the head-end (a new flow).
    pub fn send_normal_reading(&mut self, src_port: u16) {
        self.tx.send(&packets::tcp_syn(self.endpoints, src_port, HEAD_END_PORT));
    }

    /// Normal behaviour for `duration`: readings and DNS queries on the meter's rhythm.
    pub fn normal_traffic(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let port = self.port();
            self.send_normal_reading(port);
            let dns = Endpoints { dst_ip: GATEWAY_LAN_IP, ..self.endpoints };
            let port = self.port();
            self.tx.send(&packets::udp(dns, port, packets::DNS_PORT, b"meter-query"));
            std::thread::sleep(READING_PERIOD);
        }
    }

    /// Learning: normal behaviour until the controller says the baseline is learnt.
    pub fn learn_normal_behaviour(&mut self) {
        self.normal_traffic(LEARNING);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ctl.log_count("baseline learnt") == 0 {
            assert!(Instant::now() < deadline, "the baseline was not learnt");
            self.normal_traffic(READING_PERIOD * 4);
        }
    }

    /// A TCP connection attempt to `dst`:`port`.
    pub fn connect_to(&mut self, dst: [u8; 4], port: u16) {
        let e = Endpoints { dst_ip: dst, ..self.endpoints };
        let src = self.port();
        self.tx.send(&packets::tcp_syn(e, src, port));
    }

    /// A camera exfiltrating: `bytes` to the head-end over the device's usual connection,
    /// as fast as the raw socket goes (bounded by `bytes`).
    pub fn exfiltrate(&mut self, bytes: usize) {
        const SEGMENT: usize = 1_400;
        let src = self.port();
        for n in 0..bytes.div_ceil(SEGMENT) {
            self.tx.send(&packets::tcp_data(self.endpoints, src, HEAD_END_PORT, (n * SEGMENT) as u32, SEGMENT));
        }
    }

    /// A UDP flood of `packets` small datagrams towards one upstream host.
    pub fn flood(&mut self, packets: usize) {
        let e = Endpoints { dst_ip: [10, 78, 0, 2], ..self.endpoints };
        let frame = packets::udp(e, 40_000, 80, &[0u8; 32]);
        for _ in 0..packets {
            self.tx.send(&frame);
        }
    }

    /// What XDP enforces for the device now.
    pub fn access(&self) -> Option<Access> {
        self.ctl.maps().access(Mac(self.mac)).expect("device table").map(|a| a.access)
    }

    /// Polls the device table until `access` (or `timeout`), returning the time it took.
    pub fn wait_for_access(&self, access: Access, timeout: Duration) -> Option<Duration> {
        let maps = self.ctl.maps();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if maps.access(Mac(self.mac)).ok().flatten().map(|a| a.access) == Some(access) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// Runs `misbehave` while another thread watches the device table, and returns the time
    /// from its start to the quarantine showing there (`None`: not within `timeout` of the
    /// start). The misbehaviour's own sending time does not count once the quarantine is in
    /// force before it ends.
    pub fn time_to_quarantine(&mut self, timeout: Duration, misbehave: impl FnOnce(&mut Self)) -> Option<Duration> {
        let maps = self.ctl.maps();
        let mac = Mac(self.mac);
        let start = Instant::now();
        std::thread::scope(|scope| {
            let watcher = scope.spawn(move || {
                while start.elapsed() < timeout {
                    if maps.access(mac).ok().flatten().map(|a| a.access) == Some(Access::Quarantined) {
                        return Some(start.elapsed());
                    }
                    std::thread::sleep(WATCH_PERIOD);
                }
                None
            });
            misbehave(self);
            watcher.join().expect("the watcher does not panic")
        })
    }

    /// A Mirai-style telnet scan across the upstream /24, one new host per millisecond,
    /// until XDP enforces the quarantine (or `MAX_SCAN_FRAMES`). Latency counts from the
    /// first scan frame to the device table showing the quarantine, read after every frame.
    pub fn telnet_scan_until_quarantined(&mut self) -> Outcome {
        let maps = self.ctl.maps();
        let mac = Mac(self.mac);
        let start = Instant::now();
        let mut sent = 0;
        let mut crossed = Duration::ZERO;
        let outcome = |latency: Duration, sent: usize, crossed: Duration| Outcome {
            latency,
            frames_sent: sent,
            after_threshold: latency.saturating_sub(crossed),
        };
        while sent < MAX_SCAN_FRAMES {
            let host = 50 + (sent % SCAN_HOSTS) as u8;
            let port = if sent % 2 == 0 { packets::TELNET_PORT } else { 2323 };
            self.connect_to([10, 78, 0, host], port);
            sent += 1;
            if sent == SCAN_DETECTION_HOSTS {
                crossed = start.elapsed();
            }
            if maps.access(mac).ok().flatten().map(|a| a.access) == Some(Access::Quarantined) {
                return outcome(start.elapsed(), sent, crossed);
            }
            // Paced by deadline: a sleep that overran (a loaded machine) is made up by the
            // next frames, so the scan keeps its rate and its detection is not delayed by
            // the sender's own scheduling.
            let due = start + SCAN_PERIOD * sent as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let latency = self
            .wait_for_access(Access::Quarantined, Duration::from_secs(5))
            .map(|d| start.elapsed().min(d + start.elapsed()));
        outcome(latency.unwrap_or(Duration::MAX), sent, crossed)
    }
}
