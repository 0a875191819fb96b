//! Verifier complexity: every program of the object (the XDP programs and the LAN egress TC
//! program) loads, and the verifier walks it in at most half its 1,000,000-instruction budget. A program near the limit fails on the next
//! small change or the next compiler, so the margin is a test, not only a benchmark figure
//! (`cargo xtask bench xdp` prints the same counts).
//!
//! Needs root (BPF, bpffs); the maps are pinned in a directory of the test's own, removed on
//! drop.
use std::path::PathBuf;

use aya::programs::{ProgramInfo, SchedClassifier, Xdp};
use gateway_ebpf::programs;
use iotgw::datapath::loader;
use netns_tests::require_root;

/// The kernel's limit on instructions processed per program (BPF_COMPLEXITY_LIMIT_INSNS).
const VERIFIER_LIMIT: u32 = 1_000_000;
/// What a program may use of it.
const BUDGET: u32 = VERIFIER_LIMIT / 2;

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_program_verifies_within_half_the_complexity_limit() {
    require_root();
    assert!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let dir = PinDir(PathBuf::from(format!("/sys/fs/bpf/iotgw-test-verifier-{}", std::process::id())));
    loader::prepare_bpffs(&dir.0).expect("bpffs");
    let mut ebpf =
        loader::object_loader(&dir.0, &[]).expect("object loader").load(loader::object()).expect("object loads");
    let mut report = Vec::new();
    for name in [programs::LAN_INGRESS, programs::WAN_INGRESS, programs::PASS, programs::FLOOR] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("{name} is in the object"))
            .try_into()
            .expect("an XDP program");
        program.load().unwrap_or_else(|e| panic!("the verifier refuses {name}: {e:?}"));
        report.push((name, processed(name, &program.info().expect("program info"))));
    }
    let name = programs::LAN_EGRESS;
    let classifier: &mut SchedClassifier =
        ebpf.program_mut(name).expect("the LAN egress program is in the object").try_into().expect("a TC program");
    classifier.load().unwrap_or_else(|e| panic!("the verifier refuses {name}: {e:?}"));
    report.push((name, processed(name, &classifier.info().expect("program info"))));
    let over: Vec<_> = report.iter().filter(|(_, processed)| *processed > BUDGET).collect();
    assert!(over.is_empty(), "over half the verifier's limit ({BUDGET} instructions): {over:?}");
}

/// Instructions the verifier processed for `name`, printed.
fn processed(name: &str, info: &ProgramInfo) -> u32 {
    let processed = info.verified_instruction_count().expect("kernel ≥ 5.16");
    println!("verifier: {name} processed {processed} instructions (budget {BUDGET}, limit {VERIFIER_LIMIT})");
    processed
}
