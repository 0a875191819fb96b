//! Builds and tears down the lab's namespaces with iproute2, the tool ops would use.
use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use iotgw_test_support::checked;

/// Lab addressing: devices and the gateway's LAN side, upstream, quarantine.
pub const LAN_PREFIX: &str = "10.77";
pub const GATEWAY_LAN_IP: [u8; 4] = [10, 77, 0, 1];
pub const GATEWAY_WAN_IP: [u8; 4] = [10, 78, 0, 1];
pub const UPSTREAM_IP: [u8; 4] = [10, 78, 0, 2];
pub const GATEWAY_QUARANTINE_IP: [u8; 4] = [10, 79, 0, 1];
pub const QUARANTINE_HOST_IP: [u8; 4] = [10, 79, 0, 2];

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output when it fails; returns its stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&checked(Command::new(program).args(args)).stdout).into_owned()
}

/// `ip -n NS ...`
pub fn ip(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    sh("ip", &all)
}

/// A device namespace: one veth into the LAN switch, no IP stack in use.
pub struct Device {
    pub ns: String,
    pub interface: &'static str,
    pub mac: [u8; 6],
    pub ip: [u8; 4],
}

/// The whole lab. Dropping it deletes every namespace it made.
pub struct Lab {
    pub id: String,
    pub gw: String,
    pub sw: String,
    pub up: String,
    pub quar: String,
    pub devices: Vec<Device>,
    namespaces: Vec<String>,
}

/// What the gateway's LAN interface `lan0` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LanPort {
    /// A veth: has native (driver) XDP.
    Veth,
    /// A macvlan (bridge mode) on a veth named `LAN_LOWER`: has no native XDP (macvlan
    /// implements no `ndo_bpf`), so programs on `lan0` run in generic (skb) mode. Frames to
    /// lan0's MAC and broadcasts go through it.
    Macvlan,
}

/// The veth under a `LanPort::Macvlan` LAN port, in the gateway namespace.
pub const LAN_LOWER: &str = "lan0-phy";

impl Lab {
    /// Builds the lab with `devices` device namespaces.
    pub fn new(devices: usize) -> Lab {
        Lab::with_lan_port(devices, LanPort::Veth)
    }

    /// Builds the lab with `devices` device namespaces and the LAN port of kind `lan_port`.
    pub fn with_lan_port(devices: usize, lan_port: LanPort) -> Lab {
        crate::require_root();
        let id = format!("iotgw{}x{}", std::process::id() % 100_000, NEXT_LAB.fetch_add(1, Ordering::Relaxed));
        let mut lab = Lab {
            gw: format!("{id}-gw"),
            sw: format!("{id}-sw"),
            up: format!("{id}-up"),
            quar: format!("{id}-quar"),
            id,
            devices: Vec::new(),
            namespaces: Vec::new(),
        };
        for ns in [lab.gw.clone(), lab.up.clone(), lab.quar.clone()] {
            lab.add_ns(&ns);
        }
        // Gateway: WAN towards upstream, quarantine port, LAN towards the devices.
        lab.veth(&lab.gw.clone(), "wan0", &lab.up.clone(), "eth0");
        lab.veth(&lab.gw.clone(), "quar0", &lab.quar.clone(), "eth0");
        let lan_veth = match lan_port {
            LanPort::Veth => "lan0",
            LanPort::Macvlan => LAN_LOWER,
        };
        if devices == 1 {
            // One device is cabled straight to the LAN port: frames reach XDP byte for byte
            // (a Linux bridge moves VLAN tags out of band, where XDP cannot see them).
            lab.add_device(0, None, lan_veth);
        } else {
            lab.add_ns(&lab.sw.clone());
            lab.veth(&lab.gw.clone(), lan_veth, &lab.sw.clone(), "uplink");
            ip(&lab.sw, &["link", "add", "br0", "type", "bridge"]);
            ip(&lab.sw, &["link", "set", "uplink", "master", "br0"]);
            ip(&lab.sw, &["link", "set", "br0", "up"]);
            for n in 0..devices {
                lab.add_device(n, Some(n), lan_veth);
            }
        }
        if lan_port == LanPort::Macvlan {
            ip(&lab.gw, &["link", "add", "lan0", "link", LAN_LOWER, "type", "macvlan", "mode", "bridge"]);
            ip(&lab.gw, &["link", "set", "lan0", "up"]);
        }
        ip(&lab.gw, &["addr", "add", "10.77.0.1/16", "dev", "lan0"]);
        ip(&lab.gw, &["addr", "add", "10.78.0.1/24", "dev", "wan0"]);
        ip(&lab.gw, &["addr", "add", "10.79.0.1/24", "dev", "quar0"]);
        sysctl(&lab.gw, "net.ipv4.ip_forward", "1");
        ip(&lab.up, &["addr", "add", "10.78.0.2/24", "dev", "eth0"]);
        ip(&lab.up, &["route", "add", "10.77.0.0/16", "via", "10.78.0.1"]);
        ip(&lab.quar, &["addr", "add", "10.79.0.2/24", "dev", "eth0"]);
        ip(&lab.quar, &["route", "add", "10.77.0.0/16", "via", "10.79.0.1"]);
        // A veth receives XDP_REDIRECTed frames only with NAPI on its peer: GRO enables it.
        sh("ip", &["netns", "exec", &lab.quar, "ethtool", "-K", "eth0", "gro", "on"]);
        lab
    }

    fn add_ns(&mut self, ns: &str) {
        sh("ip", &["netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
        ip(ns, &["link", "set", "lo", "up"]);
        // No IPv6 autoconfiguration chatter: counters must see only what tests send.
        sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1");
        sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1");
    }

    fn veth(&mut self, a_ns: &str, a: &str, b_ns: &str, b: &str) {
        sh("ip", &["link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns]);
        ip(a_ns, &["link", "set", a, "up"]);
        ip(b_ns, &["link", "set", b, "up"]);
    }

    /// A device namespace, on switch port `switch_port` or (None) straight on the gateway's
    /// LAN veth `lan_veth`.
    fn add_device(&mut self, n: usize, switch_port: Option<usize>, lan_veth: &str) {
        let ns = format!("{}-d{n}", self.id);
        self.add_ns(&ns);
        match switch_port {
            Some(port) => {
                let port = format!("p{port}");
                self.veth(&ns, "eth0", &self.sw.clone(), &port);
                ip(&self.sw, &["link", "set", &port, "master", "br0"]);
            }
            None => self.veth(&ns, "eth0", &self.gw.clone(), lan_veth),
        }
        // Locally administered, so no real vendor's; the last byte tells devices apart.
        let mac = [0x02, 0x77, 0x00, 0x00, (self.namespaces.len() % 256) as u8, n as u8 + 10];
        let mac_text = format_mac(mac);
        ip(&ns, &["link", "set", "eth0", "address", &mac_text]);
        // The interface has no address on purpose: the kernel stays silent on it.
        self.devices.push(Device { ns, interface: "eth0", mac, ip: [10, 77, 0, n as u8 + 10] });
    }

    /// Gives device `n` another MAC (e.g. one with a real vendor's OUI), before it sends.
    pub fn set_device_mac(&mut self, n: usize, mac: [u8; 6]) {
        let device = &mut self.devices[n];
        ip(&device.ns, &["link", "set", device.interface, "address", &format_mac(mac)]);
        device.mac = mac;
    }

    /// MAC of an interface in a namespace.
    pub fn mac_of(&self, ns: &str, interface: &str) -> [u8; 6] {
        let out = ip(ns, &["-br", "link", "show", interface]);
        let text = out.split_whitespace().nth(2).unwrap_or_else(|| panic!("no MAC in {out:?}"));
        parse_mac(text)
    }

    /// Path of a namespace's handle, for `nsenter --net=` and setns.
    pub fn ns_path(ns: &str) -> String {
        format!("/run/netns/{ns}")
    }
}

/// Runs `f` on a thread inside namespace `ns` (setns affects only the calling thread): a
/// socket made there keeps that namespace wherever it is used.
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let handle = std::fs::File::open(Lab::ns_path(ns)).unwrap_or_else(|e| panic!("netns {ns}: {e}"));
                nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("namespace thread")
    })
}

/// The XDP mode an interface runs a program in, as the kernel reports it (`ip -d link`'s
/// `xdp` / `xdpgeneric`, read from its JSON): `IFLA_XDP_ATTACHED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttached {
    None,
    /// XDP_ATTACHED_DRV: native.
    Driver,
    /// XDP_ATTACHED_SKB: generic.
    Generic,
    /// Offloaded, or several modes at once.
    Other(u64),
}

/// How `interface` in `ns` runs XDP now.
pub fn xdp_attached(ns: &str, interface: &str) -> XdpAttached {
    let out = ip(ns, &["-j", "-d", "link", "show", "dev", interface]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j link: {e}: {out}"));
    match json[0]["xdp"]["mode"].as_u64() {
        None | Some(0) => XdpAttached::None,
        Some(1) => XdpAttached::Driver,
        Some(2) => XdpAttached::Generic,
        Some(other) => XdpAttached::Other(other),
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn sysctl(ns: &str, key: &str, value: &str) {
    sh("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", &format!("{key}={value}")]);
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap_or_else(|_| panic!("bad MAC {text}"));
    }
    mac
}
