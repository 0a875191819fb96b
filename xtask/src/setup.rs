//! `cargo xtask setup`: everything a fresh machine lacks, each step checked and skipped when
//! already done, so it is cheap to run before every build.
//!
//! - the eBPF toolchain pinned in `gateway-ebpf/rust-toolchain.toml` (with `rust-src`);
//! - rustfmt and clippy for the host toolchain (the test command's lint gate);
//! - bpf-linker, built against that toolchain's own LLVM (see [`bpf_linker`]);
//! - the Debian packages the tests, the demo and the benchmarks run;
//! - bpffs on /sys/fs/bpf.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{run_cmd, workspace_root};

/// Debian packages the lab, the tests, the demo and the benchmarks use.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",   // ip netns, veth
    "ethtool",    // veth GRO for XDP redirects
    "util-linux", // nsenter
    "mount",      // bpffs
    "xdp-tools",  // xdp-filter, the benchmark's reference program
    "nftables",   // nft, beside XDP in the benchmark's veth flood
    "bpftool",    // old-layout pins in tests/netns/tests/pins.rs
    "ieee-data",  // the IEEE OUI registry for vendor names
    "openssl",    // the standard EST client in tests
    "curl",       // the standard EST client in tests
    "rsyslog",    // the SIEM receiver in integration tests
    "rsyslog-gnutls",
    "procps",            // sysctl
    "git",               // fresh-check clones the repository
    "chromium",          // the console's browser tests and benchmark (headless)
    "chromium-driver",   // chromedriver: the WebDriver server those tests drive Chromium with
    "fonts-dejavu-core", // legible text in the screenshots (a recommend skipped above)
    "nats-server",       // the fleet's broker (JetStream), private instances in tests and the demo
    "postgresql",        // the fleet hub's store, private clusters in tests and the demo
    "dpkg-dev",          // dpkg-shlibdeps: the package's library dependencies (`cargo xtask package`)
    "binutils",          // strip: the packaged binary carries no symbols
    "lintian",           // the package's check in `cargo xtask test`
    "systemd",           // systemd-analyze verify: the package's units
    "adduser",           // the package's postinst creates the hub's system user
    "man-db",            // systemd-analyze verify opens the units' Documentation= man pages
];

/// The bpf-linker release set-up builds. `--locked` takes its own Cargo.lock with it, so the
/// same sources build on every machine.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-fuzz release `cargo xtask fuzz` installs (`--locked`, like bpf-linker).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> anyhow::Result<()> {
    let toolchain = ebpf_toolchain()?;
    ebpf_toolchain_installed(&toolchain)?;
    host_lint_components()?;
    bpf_linker(&toolchain)?;
    debian_packages()?;
    bpffs()?;
    println!("setup: done (eBPF toolchain {toolchain}, bpf-linker {BPF_LINKER_VERSION})");
    Ok(())
}

/// `toolchain.channel` of `gateway-ebpf/rust-toolchain.toml`, the one place it is named
/// (gateway's build.rs reads the same key).
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let file = workspace_root().join("gateway-ebpf/rust-toolchain.toml");
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let doc: toml::Table = text.parse().with_context(|| format!("parsing {}", file.display()))?;
    doc.get("toolchain")
        .and_then(|t| t.get("channel"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no toolchain.channel", file.display()))
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pinned toolchain with rust-src (the eBPF crate builds `core` itself); exactly that one,
/// never whatever `nightly` is today.
pub fn ebpf_toolchain_installed(toolchain: &str) -> anyhow::Result<()> {
    let installed = output("rustup", &["component", "list", "--installed", "--toolchain", toolchain]);
    if installed.is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src"))) {
        return Ok(());
    }
    println!("setup: installing {toolchain} with rust-src for the XDP programs");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--no-self-update",
    ]))
}

/// cargo-fuzz at `CARGO_FUZZ_VERSION`, installed when `cargo fuzz --version` says otherwise.
/// Only `cargo xtask fuzz` needs it, so plain set-up leaves it out.
pub fn cargo_fuzz() -> anyhow::Result<()> {
    let installed = output("cargo", &["fuzz", "--version"]);
    if installed.is_some_and(|v| v.split_whitespace().any(|word| word == CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run_cmd(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        &format!("={CARGO_FUZZ_VERSION}"),
        "--locked",
        "--force",
    ]))
}

/// rustfmt and clippy for the host toolchain: `cargo xtask test` starts with both gates.
fn host_lint_components() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("rustfmt", "fmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(_, sub)| output("cargo", &[sub, "--version"]).is_none())
        .map(|(component, _)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: adding {missing:?} to the host toolchain");
    run_cmd(Command::new("rustup").args(["component", "add"]).args(&missing))
}

/// Where this machine's cargo keeps installed binaries and, here, the LLVM prefix.
fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(Path::new(&home).join(".cargo"))
}

/// bpf-linker, built against the pinned toolchain's own libLLVM so both agree on the bitcode.
///
/// Why built here, this way: release tarballs and cargo-binstall download from GitHub, which
/// these machines cannot reach, and Debian's LLVM is older than rustc's; crates.io is
/// reachable, so set-up builds the pinned release with `--locked`. It links rustc's libLLVM
/// dynamically (building LLVM statically would take an hour on two cores). The sysroot's
/// `libLLVM-*.so` may be a linker script (nightly 1.101's is), so the real ELF library is
/// found by its magic and linked through a prefix of two symlinks under CARGO_HOME: it lives
/// as long as the toolchain and, unlike /tmp, is not cleaned away under bpf-linker's rpath.
/// A stamp in the prefix names the release, the toolchain and the LLVM; set-up rebuilds
/// when it differs or when bpf-linker no longer starts.
fn bpf_linker(toolchain: &str) -> anyhow::Result<()> {
    let sysroot = output("rustup", &["run", toolchain, "rustc", "--print", "sysroot"])
        .with_context(|| format!("rustup run {toolchain} rustc --print sysroot"))?;
    let version = output("rustup", &["run", toolchain, "rustc", "-vV"]).context("rustc -vV")?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("no LLVM version in rustc -vV")?
        .to_owned();
    let llvm = real_libllvm(&Path::new(sysroot.trim()).join("lib"))?;
    let prefix = cargo_home()?.join("iotgw").join(format!("llvm-{toolchain}"));
    let stamp_path = prefix.join("bpf-linker.stamp");
    let stamp = format!("bpf-linker {BPF_LINKER_VERSION} llvm-{major} {}\n", llvm.display());
    let starts = output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if starts && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(());
    }

    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let soname = llvm.file_name().context("libLLVM has a file name")?;
    // `-lLLVM` at link time, the soname at run time (bpf-linker's rpath is this directory).
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against {toolchain}'s LLVM {major} ({})", llvm.display());
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", &format!("={BPF_LINKER_VERSION}"), "--locked", "--force"])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )?;
    anyhow::ensure!(
        output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION)),
        "bpf-linker {BPF_LINKER_VERSION} was built but does not start from PATH (is {}/bin on PATH?)",
        cargo_home()?.display()
    );
    std::fs::write(&stamp_path, stamp).with_context(|| format!("writing {}", stamp_path.display()))
}

/// The one `libLLVM*` in `dir` that is an ELF shared object, not a linker script.
fn real_libllvm(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so")) {
            continue;
        }
        let mut magic = [0u8; 4];
        let is_elf =
            std::fs::File::open(&path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF";
        if is_elf && !path.is_symlink() {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no libLLVM shared object in {} (is the toolchain complete?)", dir.display()),
        many => bail!("several libLLVM shared objects in {}: {many:?}", dir.display()),
    }
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p]).is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root");
    }
    println!("setup: installing {missing:?}");
    run_cmd(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf")) || !is_root() {
        return Ok(());
    }
    println!("setup: mounting bpffs on /sys/fs/bpf");
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

pub fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|u| u.trim() == "0")
}
