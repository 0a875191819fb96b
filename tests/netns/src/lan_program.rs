//! The LAN program loaded on its own, its maps pinned in a directory of the test's own
//! (removed on drop), for tests that run it with BPF_PROG_TEST_RUN on crafted frames and write
//! its maps through the controller's `datapath::maps` (the only writer, as in production).
//! Needs root (BPF).
use std::path::PathBuf;

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use gateway_ebpf::programs;
use iotgw::datapath::{loader, maps::Maps};

pub struct LanProgram {
    pub ebpf: Ebpf,
    pub maps: Maps,
    pin_dir: PathBuf,
}

impl LanProgram {
    /// Where the maps are pinned (a second handle opens them there, as a tool would).
    pub fn pin_dir(&self) -> &std::path::Path {
        &self.pin_dir
    }

    /// Loads the object with maps `sizes` (name, entries) sized other than it says, pinned
    /// under a directory named after the test (`name`).
    pub fn load(name: &str, sizes: &[(&str, u32)]) -> Self {
        crate::require_root();
        assert!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/iotgw-test-{name}-{}", std::process::id()));
        loader::prepare_bpffs(&pin_dir).expect("bpffs");
        let mut ebpf = loader::object_loader(&pin_dir, sizes)
            .expect("object loader")
            .load(loader::object())
            .expect("object loads");
        let lan: &mut Xdp = ebpf.program_mut(programs::LAN_INGRESS).expect("lan program").try_into().expect("xdp");
        lan.load().expect("verifier accepts the LAN program");
        let maps = Maps::take(&mut ebpf).expect("maps");
        Self { ebpf, maps, pin_dir }
    }

    /// Runs `frame` through the program `repeat` times: its XDP action.
    pub fn run(&self, frame: &[u8], repeat: u32) -> u32 {
        let mut out = vec![0u8; frame.len() + 256];
        let lan: &Xdp = self.ebpf.program(programs::LAN_INGRESS).expect("lan program").try_into().expect("xdp");
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..TestRunOptions::new() };
        lan.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }
}

impl Drop for LanProgram {
    fn drop(&mut self) {
        let _ = loader::detach_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
