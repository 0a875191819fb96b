//! The network-namespace lab shared by iotgw's integration tests.
//!
//! Topology (every address belongs to the lab; names are unique per test and removed on drop,
//! even when the test panics):
//!
//! ```text
//!  dev ns ──veth──┐
//!  dev ns ──veth──┤ sw ns (bridge) ──veth── lan0 │ gw ns (router) │ wan0 ──veth── up ns
//!                 ┘                               │  forwarding on │ quar0 ──veth── quar ns
//! ```
//!
//! Devices send hand-built frames through raw sockets (no IP stack of their own, so the
//! counters see exactly what a test sent); the gateway runs the real `iotgw` binary with the
//! real XDP programs; sniffers on the far side see what got through.
pub mod api;
pub mod controller;
pub mod fleet;
pub mod lab;
pub mod lan_program;
pub mod mud;
pub mod packets;
pub mod policies;
pub mod raw;
pub mod relay;
pub mod scenario;

/// Tests that need root fail loudly under CI rather than skip.
pub fn require_root() {
    if nix::unistd::geteuid().is_root() {
        return;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the netns tests need root (CAP_NET_ADMIN, CAP_BPF) and CI=true: refusing to skip");
    }
    panic!("the netns tests need root: run them with `cargo xtask test` as root");
}
