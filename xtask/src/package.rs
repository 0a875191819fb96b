//! `cargo xtask package`: the Debian package `iotgw_<version>_<arch>.deb` in `target/debian/`,
//! assembled with dpkg-deb from a built binary and `packaging/deb/`:
//!
//! - `/usr/bin/iotgw`, stripped (lintian refuses unstripped binaries);
//! - `iotgw.service` and `iotgw-hub.service` under `/lib/systemd/system`;
//! - `/etc/iotgw/iotgw.toml`, `/etc/iotgw/hub.toml` and the shipped policies in
//!   `/etc/iotgw/policies/`, all conffiles (an operator's edits survive upgrades);
//! - man pages and bash, zsh and fish completions, written by the binary itself
//!   (`iotgw man-pages`, `iotgw completions`) so they match it;
//! - the configuration reference, the policy guide, copyright and changelog under
//!   `/usr/share/doc/iotgw/`;
//! - the maintainer scripts (the hub's system user; nothing is enabled or started).
//!
//! Library dependencies come from dpkg-shlibdeps, as debhelper would compute them.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::{run_cmd, workspace_root};

/// The package's name, and its binary's.
pub const PACKAGE: &str = "iotgw";

/// What goes where: (source under the workspace, path in the package, mode).
const FILES: &[(&str, &str, u32)] = &[
    ("packaging/deb/iotgw.service", "lib/systemd/system/iotgw.service", 0o644),
    ("packaging/deb/iotgw-hub.service", "lib/systemd/system/iotgw-hub.service", 0o644),
    ("packaging/deb/iotgw.toml", "etc/iotgw/iotgw.toml", 0o644),
    ("packaging/deb/hub.toml", "etc/iotgw/hub.toml", 0o644),
    ("packaging/deb/copyright", "usr/share/doc/iotgw/copyright", 0o644),
    ("docs/config.md", "usr/share/doc/iotgw/config.md", 0o644),
    ("policies/README.md", "usr/share/doc/iotgw/policies.md", 0o644),
];

/// Maintainer scripts, copied into `DEBIAN/` as they are.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Shells whose completions are installed, and where each looks for them.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/iotgw"),
    ("zsh", "usr/share/zsh/vendor-completions/_iotgw"),
    ("fish", "usr/share/fish/vendor_completions.d/iotgw.fish"),
];

/// `cargo xtask package`: builds the binary (release unless `debug`) and assembles the package.
pub fn run(debug: bool) -> anyhow::Result<PathBuf> {
    let binary = crate::build::run(!debug)?;
    let deb = assemble(&binary)?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// Assembles the package around `binary` in `target/debian/`; returns the `.deb`'s path.
pub fn assemble(binary: &Path) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let version = workspace_version()?;
    changelog_names(&version)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned();
    // dpkg-shlibdeps expects debian/control beside the package tree, as in a source package.
    // One package in the folder at a time, so `apt install ./target/debian/iotgw_*.deb`
    // names exactly the one just built.
    let work = root.join("target/debian");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let tree = work.join("debian").join(PACKAGE);

    let bin = tree.join("usr/bin/iotgw");
    install(binary, &bin, 0o755)?;
    run_cmd(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note"])
            .arg(&bin),
    )?;
    for (source, target, mode) in FILES {
        install(&root.join(source), &tree.join(target), *mode)?;
    }
    for policy in policy_files(&root.join("policies"))? {
        let name = policy.file_name().context("a policy file has a name")?;
        install(&policy, &tree.join("etc/iotgw/policies").join(name), 0o644)?;
    }
    let doc = tree.join("usr/share/doc/iotgw");
    gzip_into(&root.join("packaging/deb/changelog"), &doc.join("changelog.gz"))?;
    for (shell, target) in COMPLETIONS {
        let script = output(Command::new(&bin).args(["completions", shell]))?;
        write(&tree.join(target), script.as_bytes(), 0o644)?;
    }
    man_pages(&bin, &tree.join("usr/share/man/man1"))?;

    let debian = tree.join("DEBIAN");
    for script in SCRIPTS {
        install(&root.join("packaging/deb").join(script), &debian.join(script), 0o755)?;
    }
    write(&debian.join("conffiles"), conffiles(&tree)?.as_bytes(), 0o644)?;
    write(&debian.join("md5sums"), md5sums(&tree)?.as_bytes(), 0o644)?;
    write(
        &work.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let depends = shlib_depends(&work, &bin)?;
    let control = std::fs::read_to_string(root.join("packaging/deb/control"))
        .context("reading packaging/deb/control")?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@INSTALLED_SIZE@", &installed_kib(&tree)?.to_string())
        .replace("@DEPENDS@", &depends);
    write(&debian.join("control"), control.as_bytes(), 0o644)?;

    let deb = work.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run_cmd(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&tree).arg(&deb))?;
    Ok(deb)
}

/// `[workspace.package] version` of the workspace's Cargo.toml: the package's version.
pub fn workspace_version() -> anyhow::Result<String> {
    let text = std::fs::read_to_string(workspace_root().join("Cargo.toml")).context("reading Cargo.toml")?;
    let doc: toml::Table = text.parse().context("parsing Cargo.toml")?;
    doc.get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("Cargo.toml has no workspace.package.version")
}

/// The Debian changelog's newest entry must name the version being packaged: a bumped crate
/// version without a changelog entry would ship a package that says otherwise.
fn changelog_names(version: &str) -> anyhow::Result<()> {
    let path = workspace_root().join("packaging/deb/changelog");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let first = text.lines().next().unwrap_or_default();
    ensure!(
        first.starts_with(&format!("{PACKAGE} ({version})")),
        "{}: the newest entry is {first:?}; add one for {PACKAGE} ({version})",
        path.display()
    );
    Ok(())
}

/// The `*.toml` files of the shipped policy folder, sorted.
fn policy_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no policy files in {}", dir.display());
    Ok(files)
}

/// `iotgw man-pages` into a scratch folder, then each page gzipped (`-n`: no name or time in
/// the header, so the same pages give the same bytes) into `dir`.
fn man_pages(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let scratch = dir.with_file_name("man1.roff");
    let _ = std::fs::remove_dir_all(&scratch);
    run_cmd(Command::new(bin).arg("man-pages").arg("--out").arg(&scratch))?;
    for entry in std::fs::read_dir(&scratch).with_context(|| format!("reading {}", scratch.display()))? {
        let page = entry?.path();
        let name = page.file_name().context("a page has a name")?.to_string_lossy().into_owned();
        gzip_into(&page, &dir.join(format!("{name}.gz")))?;
    }
    std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))
}

/// Every regular file under `etc/`, one absolute path a line: dpkg keeps an operator's edits.
fn conffiles(tree: &Path) -> anyhow::Result<String> {
    Ok(files_under(tree)?
        .into_iter()
        .filter(|path| path.starts_with("etc/"))
        .map(|path| format!("/{path}\n"))
        .collect())
}

/// `md5sum` of every file outside `DEBIAN/`, paths relative to the root (what `debsums` reads).
fn md5sums(tree: &Path) -> anyhow::Result<String> {
    let files: Vec<String> = files_under(tree)?.into_iter().filter(|p| !p.starts_with("DEBIAN/")).collect();
    output(Command::new("md5sum").args(&files).current_dir(tree))
}

/// The package's size in KiB, as dpkg counts it (files outside `DEBIAN/`).
fn installed_kib(tree: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for path in files_under(tree)?.into_iter().filter(|p| !p.starts_with("DEBIAN/")) {
        bytes += std::fs::metadata(tree.join(&path)).with_context(|| format!("reading {path}"))?.len();
    }
    Ok(bytes.div_ceil(1024))
}

/// `shlibs:Depends` for `bin`, from dpkg-shlibdeps run in `work` (beside `debian/control`).
fn shlib_depends(work: &Path, bin: &Path) -> anyhow::Result<String> {
    let bin = bin.strip_prefix(work).context("the binary lies in the package tree")?;
    let out = output(Command::new("dpkg-shlibdeps").arg("-O").arg(format!("-e{}", bin.display())).current_dir(work))?;
    out.lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .with_context(|| format!("dpkg-shlibdeps named no dependency: {out}"))
}

/// Every regular file under `tree`, relative to it, sorted.
fn files_under(tree: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut folders = vec![tree.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(tree).context("under the tree")?;
                files.push(relative.to_str().context("file names are UTF-8")?.to_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}

fn install(source: &Path, target: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    write(target, &bytes, mode)
}

fn write(target: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = target.parent().context("a target has a folder")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    std::fs::write(target, bytes).with_context(|| format!("writing {}", target.display()))?;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", target.display()))
}

fn gzip_into(source: &Path, target: &Path) -> anyhow::Result<()> {
    let compressed = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(source)
        .output()
        .with_context(|| format!("gzip {}", source.display()))?;
    ensure!(compressed.status.success(), "gzip {} failed: {}", source.display(), compressed.status);
    write(target, &compressed.stdout, 0o644)
}

/// A command's standard output, failing with its standard error.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed no UTF-8"))
}
