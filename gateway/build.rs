//! Builds the XDP object from `gateway-ebpf` (the toolchain pinned in
//! `gateway-ebpf/rust-toolchain.toml`, bpf-linker) and leaves it in OUT_DIR, where
//! `datapath::loader` embeds it, so one `cargo build` produces a complete binary.
//!
//! `cargo xtask setup` installs what this needs. Set `AYA_BUILD_SKIP=1` for host-only work
//! (`cargo check`, unit tests that never load the object): an empty object is embedded then,
//! and loading it fails with a clear error.
use std::path::Path;

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("gateway has no parent directory"))?
        .join("gateway-ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {ebpf_dir:?}"))?;
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let channel = pinned_channel(&toolchain_file)?;
    let package = aya_build::Package { name: "gateway-ebpf", root_dir, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&channel))
        .with_context(|| format!("building the XDP object with {channel} (run `cargo xtask setup` first)"))?;
    // aya-build writes nothing when skipped; embed an empty object so host-only builds link.
    let object = Path::new(&std::env::var("OUT_DIR").context("OUT_DIR")?).join(gateway_ebpf_object_name());
    if !object.exists() {
        std::fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}

/// `toolchain.channel` of the eBPF crate's rust-toolchain.toml: the one place it is named.
fn pinned_channel(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc: toml::Table = text.parse().with_context(|| format!("parsing {}", file.display()))?;
    doc.get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no toolchain.channel", file.display()))
}

/// The `[[bin]]` name of gateway-ebpf's XDP object.
fn gateway_ebpf_object_name() -> &'static str {
    "iotgw-xdp"
}
