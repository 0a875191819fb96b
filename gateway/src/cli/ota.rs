//! `iotgw ota`: the signed firmware repository (keys, delegations, publishing), device firmware
//! versions, and rollout campaigns. Works on the repository folder and the store directly, so
//! it also works while the gateway runs (SQLite WAL) or before it ever ran.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{
    cli::table::write_json,
    device::Mac,
    ota::{
        self, db, keys,
        metadata::SigningKey,
        repo::{InitOptions, Repository, VENDOR_LIFETIME},
        rollout::{self, CampaignRequest, Plan, Rollouts, Stage, Window},
    },
};

/// Where the repository, its keys and the store are.
#[derive(Debug, Clone, clap::Args)]
pub struct Location {
    /// Gateway configuration file; its `[ota]` and `[store]` sections give the defaults below.
    #[arg(long, short, env = "IOTGW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Repository folder (default: `ota.repo_dir`).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Folder of the repository's private keys (default: `ota.keys_dir`, else `<repo>/keys`).
    #[arg(long)]
    pub keys_dir: Option<PathBuf>,
    /// SQLite store (default: `store.path`).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

impl Location {
    fn open(&self) -> anyhow::Result<(Repository, rusqlite::Connection)> {
        let config = match &self.config {
            Some(path) => crate::config::load(path).with_context(|| format!("loading {}", path.display()))?,
            None => crate::config::Config::default(),
        };
        crate::store::set_synchronous(config.store.synchronous);
        let repo_dir = self.repo.clone().unwrap_or(config.ota.repo_dir.clone());
        let keys_dir = self.keys_dir.clone().or(config.ota.keys_dir.clone());
        let store = self.store.clone().unwrap_or(config.store.path.clone());
        if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let conn = crate::schema::open(&store).with_context(|| format!("opening the store {}", store.display()))?;
        Ok((Repository::open(&repo_dir, keys_dir.as_deref()), conn))
    }
}

/// How many root keys to make, and how many of them must sign a root.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RootKeys {
    /// Number of root keys.
    #[arg(long, default_value_t = 3)]
    root_keys: usize,
    /// Root signatures required.
    #[arg(long, default_value_t = 2)]
    root_threshold: u32,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the repository: root keys (with a threshold), targets/snapshot/timestamp keys,
    /// root v1 and an empty targets role.
    Init {
        #[command(flatten)]
        at: Location,
        #[command(flatten)]
        root: RootKeys,
    },
    /// Vendor and repository keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show the root's roles, key ids and thresholds, and the vendor delegations.
    Keys {
        #[command(flatten)]
        at: Location,
        /// Print JSON (`root` and `targets`: version, expiry, roles or delegations with key ids) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Delegate target paths to a vendor's key(s) (re-signs the targets role).
    Delegate {
        #[command(flatten)]
        at: Location,
        /// Role name, e.g. the vendor (`acme`).
        #[arg(long)]
        role: String,
        /// Vendor public key PEM (repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// Path patterns the role may sign (`acme/*`); default `<role>/*`.
        #[arg(long = "path")]
        paths: Vec<String>,
    },
    /// Vendor side, offline: sign release metadata for IMAGE (upload it with `publish --metadata`).
    Sign(Box<SignArgs>),
    /// Upload a vendor-signed firmware image. Either sign here with the vendor's `--key`, or
    /// pass `--metadata` made by `iotgw ota sign`. Refused unless signatures, hashes, expiry and
    /// versions verify; the repository keeps what it had.
    Publish(Box<PublishArgs>),
    /// List published images.
    List {
        #[command(flatten)]
        at: Location,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Devices' firmware versions as reported to the update service.
    Devices {
        #[command(flatten)]
        at: Location,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write root N+1 with new root keys, signed by a threshold of the old AND the new keys.
    RotateRoot {
        #[command(flatten)]
        at: Location,
        #[command(flatten)]
        root: RootKeys,
    },
    /// Rollout campaigns.
    #[command(subcommand)]
    Campaign(Box<CampaignCommand>),
    /// Run only the update service (from the `[ota]` section of --config), until SIGINT/SIGTERM.
    /// `iotgw run` starts the same service when `ota.enabled` is set.
    Serve {
        #[command(flatten)]
        at: Location,
    },
    /// Device simulator (lab): check in, then run one verified update against a gateway.
    SimulateDevice(Box<SimulateArgs>),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// `https://host:port` of the gateway's update service.
    #[arg(long)]
    pub url: String,
    /// CA of the server certificate (PEM).
    #[arg(long)]
    pub server_ca: PathBuf,
    /// Device certificate and key (PEM) issued by the gateway's device CA.
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long = "device-class")]
    pub class: String,
    /// The device's state folder (trusted metadata, installed version, flash image).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Provision first with this trusted root (as shipped with the device) ...
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// ... and this running firmware version.
    #[arg(long, default_value = "1.0")]
    pub version: String,
    /// Simulate a device that fails to boot the new image (reports failure).
    #[arg(long)]
    pub fail_install: bool,
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub at: Location,
    #[command(flatten)]
    pub release: Release,
    /// Where to write the signed metadata.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub at: Location,
    #[command(flatten)]
    pub release: Release,
    /// Vendor-signed metadata of this release (instead of signing with --key).
    #[arg(long, conflicts_with = "keys")]
    pub metadata: Option<PathBuf>,
}

/// One release: the image and what it is.
#[derive(Debug, clap::Args)]
pub struct Release {
    /// The firmware image file.
    pub image: PathBuf,
    /// Firmware version the image installs (dotted numbers).
    #[arg(long)]
    pub version: Option<String>,
    /// Device class the image is for (repeatable).
    #[arg(long = "device-class")]
    pub classes: Vec<String>,
    /// Vendor private key(s) to sign with.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// Vendor role (default: the only delegated role).
    #[arg(long)]
    pub role: Option<String>,
    /// Target path (default: `<role>/<image file name>`).
    #[arg(long)]
    pub path: Option<String>,
    /// Days until the release metadata expires.
    #[arg(long, default_value_t = VENDOR_LIFETIME.whole_days())]
    pub expires_days: i64,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Generate an Ed25519 key (PKCS#8 PEM, 0600) and its `.pub.pem`.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key's TUF key id.
    Show { file: PathBuf },
}

#[derive(Debug, clap::Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign (Draft; it starts at the next tick inside a maintenance window).
    Create {
        #[command(flatten)]
        at: Location,
        /// Target path of the published image.
        #[arg(long)]
        target: String,
        /// Canary devices (MACs, comma separated).
        #[arg(long, value_delimiter = ',')]
        canary: Vec<Mac>,
        /// Stages after the canary, in order: `10%`, `50%`, `100%`, or `class:NAME`.
        #[arg(long = "stage")]
        stages: Vec<String>,
        /// Maintenance windows (UTC), `HH:MM-HH:MM`, repeatable. None: any time.
        #[arg(long = "window")]
        windows: Vec<String>,
        /// Halt when a stage's failed fraction goes above this.
        #[arg(long, default_value_t = rollout::DEFAULT_FAILURE_THRESHOLD)]
        failure_threshold: f64,
        /// Seconds a stage runs before the next starts.
        #[arg(long, default_value_t = rollout::DEFAULT_SOAK_SECS)]
        soak_secs: u64,
        /// Halt when this many updated devices raise alerts (0: never).
        #[arg(long, default_value_t = rollout::DEFAULT_ANOMALY_DEVICES)]
        anomaly_devices: u32,
    },
    /// Show campaigns (or one).
    Status {
        #[command(flatten)]
        at: Location,
        id: Option<String>,
        /// Print JSON (the API's campaign shape, `GET /api/v1/ota/campaigns`) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Stop a campaign now: no further device is offered the release until it is resumed
    /// (devices already updated keep it).
    Halt {
        #[command(flatten)]
        at: Location,
        /// The campaign's id (`iotgw ota campaign status`).
        id: String,
        /// Why, kept with the campaign and in the audit trail.
        #[arg(long, default_value = "halted by operator")]
        reason: String,
    },
    /// Continue a halted campaign from the stage it stopped in; failures before the resume no
    /// longer count towards its failure threshold.
    Resume {
        #[command(flatten)]
        at: Location,
        /// The campaign's id (`iotgw ota campaign status`).
        id: String,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init { at, root: RootKeys { root_keys, root_threshold } } => {
            let (repo, conn) = at.open()?;
            let root =
                repo.init(&conn, &InitOptions { root_keys, root_threshold }).context("initialising the repository")?;
            println!("repository initialised in {}", repo.dir().display());
            print_root(&root);
            println!("keep the root-*.pem keys offline; `iotgw ota delegate` adds vendors");
        }
        Command::Key(KeyCommand::Generate { out }) => {
            let key = SigningKey::generate();
            keys::save_new(&out, &key).with_context(|| format!("writing {}", out.display()))?;
            println!("{} (public: {})", key.keyid(), keys::public_path(&out).display());
        }
        Command::Key(KeyCommand::Show { file }) => {
            let key = keys::load_public(&file).with_context(|| format!("reading {}", file.display()))?;
            println!("{}", key.keyid());
        }
        Command::Keys { at, json } => {
            let (repo, conn) = at.open()?;
            let root = repo.root(&conn).context("reading the root")?;
            let targets = repo.targets(&conn).context("reading the targets role")?;
            if json {
                write_json(&mut std::io::stdout().lock(), &keys_view(&root, &targets))?;
                return Ok(ExitCode::SUCCESS);
            }
            print_root(&root);
            println!("targets v{} expires {}", targets.version, rfc3339(targets.expires));
            for role in targets.delegations.unwrap_or_default().roles {
                let ids: Vec<&str> = role.keyids.iter().map(|k| &k.0[..16]).collect();
                println!("  delegation {}: {} of {:?} for {:?}", role.name, role.threshold, ids, role.paths);
            }
        }
        Command::Delegate { at, role, keys: key_files, threshold, paths } => {
            let (repo, conn) = at.open()?;
            let public: Vec<_> = key_files
                .iter()
                .map(|p| keys::load_public(p).with_context(|| format!("reading {}", p.display())))
                .collect::<Result<_, _>>()?;
            let paths = if paths.is_empty() { vec![format!("{role}/*")] } else { paths };
            let version = repo.delegate(&conn, &role, &public, threshold, &paths).context("delegating")?;
            println!("targets v{version}: {role} may sign {paths:?} ({threshold} of {} key(s))", public.len());
        }
        Command::Sign(args) => {
            let SignArgs { at, release, out } = *args;
            let (repo, conn) = at.open()?;
            let bytes = sign_release(&repo, &conn, &release)?;
            crate::fsutil::write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            println!("signed release metadata written to {}", out.display());
        }
        Command::Publish(args) => {
            let PublishArgs { at, release, metadata } = *args;
            let (repo, mut conn) = at.open()?;
            let bytes = match metadata {
                Some(path) => std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                None => sign_release(&repo, &conn, &release)?,
            };
            let accepted = repo.accept(&mut conn, &bytes, &release.image).context("upload refused")?;
            println!(
                "published {} (firmware {}) in {} v{}; offer it with `iotgw ota campaign create --target {}`",
                accepted.path, accepted.firmware_version, accepted.role, accepted.role_version, accepted.path
            );
        }
        Command::List { at, json } => {
            let (_, conn) = at.open()?;
            let released: std::collections::HashMap<String, u64> =
                db::roles(&conn)?.into_iter().map(|r| (r.role, r.released_version)).collect();
            let targets = db::targets(&conn)?;
            let release_of = |t: &db::TargetRow| {
                if released.get(&t.role).is_some_and(|r| *r >= t.role_version) { "all" } else { "campaign" }
            };
            if json {
                let rows: Vec<_> = targets
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "path": t.path, "role": t.role, "role_version": t.role_version,
                            "firmware_version": t.firmware_version, "device_classes": t.device_classes,
                            "length": t.length, "sha256": t.sha256, "released": release_of(t),
                        })
                    })
                    .collect();
                write_json(&mut std::io::stdout().lock(), &rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<40} {:<10} {:<16} {:>10} {:<8} SHA256", "TARGET", "VERSION", "CLASSES", "BYTES", "RELEASED");
            for t in &targets {
                println!(
                    "{:<40} {:<10} {:<16} {:>10} {:<8} {}",
                    t.path,
                    t.firmware_version,
                    t.device_classes.join(","),
                    t.length,
                    release_of(t),
                    &t.sha256[..16]
                );
            }
        }
        Command::Devices { at, json } => {
            let (_, conn) = at.open()?;
            let devices = db::devices(&conn)?;
            if json {
                let rows: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "mac": d.mac, "device_class": d.device_class, "firmware_version": d.firmware_version,
                            "last_status": d.last_status, "last_detail": d.last_detail,
                            "updated_at": crate::identity::registry::rfc3339(d.updated_at),
                        })
                    })
                    .collect();
                write_json(&mut std::io::stdout().lock(), &rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<18} {:<12} {:<10} {:<8} DETAIL", "DEVICE", "CLASS", "FIRMWARE", "STATUS");
            for d in devices {
                println!(
                    "{:<18} {:<12} {:<10} {:<8} {}",
                    d.mac.to_string(),
                    d.device_class,
                    d.firmware_version.as_deref().unwrap_or("-"),
                    d.last_status,
                    d.last_detail
                );
            }
        }
        Command::RotateRoot { at, root: RootKeys { root_keys, root_threshold } } => {
            let (repo, conn) = at.open()?;
            let root = repo.rotate_root(&conn, root_keys, root_threshold).context("rotating the root")?;
            println!("root v{} written, signed by the old and the new root keys", root.version);
            print_root(&root);
        }
        Command::Campaign(command) => return campaign(*command),
        Command::SimulateDevice(args) => return simulate(*args),
        Command::Serve { at } => return serve(&at),
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(at: &Location) -> anyhow::Result<ExitCode> {
    let mut config = match &at.config {
        Some(path) => crate::config::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => crate::config::Config::default(),
    };
    crate::store::set_synchronous(config.store.synchronous);
    if let Some(repo) = &at.repo {
        config.ota.repo_dir = repo.clone();
    }
    if let Some(keys) = &at.keys_dir {
        config.ota.keys_dir = Some(keys.clone());
    }
    let store = at.store.clone().unwrap_or(config.store.path.clone());
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let (trigger, shutdown) = crate::shutdown::channel();
        let running = ota::spawn(&config.ota, &config.identity, &store, crate::event::EventBus::default(), shutdown)
            .await
            .context("starting the update service")?;
        crate::shutdown::signal().await;
        trigger.trigger();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), running.handle).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// An installer that always fails, for `--fail-install`.
struct BrokenInstall;

impl ota::client::Installer for BrokenInstall {
    fn install(&mut self, _image: &Path, _target: &str, _version: &str) -> Result<(), String> {
        Err("simulated boot failure".into())
    }
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    use ota::client::{ClientConfig, Device, FileInstaller, Outcome};
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    if let Some(root) = &args.root {
        Device::provision(&args.state_dir, &read(root)?, &args.version).context("provisioning the device")?;
    }
    let config = ClientConfig {
        base_url: args.url.clone(),
        server_ca_pem: read(&args.server_ca)?,
        cert_pem: read(&args.cert)?,
        key_pem: read(&args.key)?,
        device_class: args.class.clone(),
        state_dir: args.state_dir.clone(),
    };
    let installer: Box<dyn ota::client::Installer> = if args.fail_install {
        Box::new(BrokenInstall)
    } else {
        Box::new(FileInstaller { dest: args.state_dir.join("flash.bin") })
    };
    let mut device = Device::new(config, installer).context("setting up the device client")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let outcome = runtime.block_on(async {
        device.check_in().await?;
        device.update().await
    });
    match outcome.context("update failed")? {
        Outcome::UpToDate { version } => println!("up to date: {version}"),
        Outcome::Installed { from, to, target, attempts } => {
            println!("installed {target}: {from} -> {to} ({attempts} download attempt(s))");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sign_release(repo: &Repository, conn: &rusqlite::Connection, release: &Release) -> anyhow::Result<Vec<u8>> {
    let version = release.version.as_deref().context("--version is required")?;
    anyhow::ensure!(!release.classes.is_empty(), "--device-class is required");
    anyhow::ensure!(!release.keys.is_empty(), "--key (the vendor's private key) or --metadata is required");
    let keys: Vec<SigningKey> = release
        .keys
        .iter()
        .map(|p| keys::load_private(p).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<_, _>>()?;
    let role = match &release.role {
        Some(role) => role.clone(),
        None => {
            let roles = repo.targets(conn)?.delegations.unwrap_or_default().roles;
            anyhow::ensure!(roles.len() == 1, "--role is required ({} vendor roles are delegated)", roles.len());
            roles[0].name.clone()
        }
    };
    let path = match &release.path {
        Some(path) => path.clone(),
        None => format!("{role}/{}", file_name(&release.image)?),
    };
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let lifetime = time::Duration::days(release.expires_days);
    Ok(repo.prepare_release(conn, &refs, &role, &release.image, &path, version, &release.classes, lifetime)?)
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).context("the image path has no file name")
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// `ota keys --json`: the roles' key ids and thresholds, without the public keys' bytes.
fn keys_view(root: &ota::metadata::Root, targets: &ota::metadata::Targets) -> serde_json::Value {
    let delegations = targets.delegations.as_ref().map(|d| d.roles.as_slice()).unwrap_or_default();
    serde_json::json!({
        "root": { "version": root.version, "expires": rfc3339(root.expires), "roles": root.roles },
        "targets": {
            "version": targets.version,
            "expires": rfc3339(targets.expires),
            "delegations": delegations.iter().map(|role| serde_json::json!({
                "name": role.name,
                "keyids": role.keyids,
                "threshold": role.threshold,
                "paths": role.paths,
            })).collect::<Vec<_>>(),
        },
    })
}

fn print_root(root: &ota::metadata::Root) {
    println!("root v{} expires {}", root.version, rfc3339(root.expires));
    for (role, keys) in &root.roles {
        let ids: Vec<&str> = keys.keyids.iter().map(|k| &k.0[..16]).collect();
        println!("  {role:<10} threshold {} of {:?}", keys.threshold, ids);
    }
}

fn campaign(command: CampaignCommand) -> anyhow::Result<ExitCode> {
    match command {
        CampaignCommand::Create {
            at,
            target,
            canary,
            stages,
            windows,
            failure_threshold,
            soak_secs,
            anomaly_devices,
        } => {
            let (repo, conn) = at.open()?;
            let stages: Vec<Stage> = stages.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
            let windows: Vec<Window> = windows.iter().map(|w| w.parse()).collect::<Result<_, _>>()?;
            let id = Rollouts { conn: &conn, repo: &repo }
                .create(CampaignRequest {
                    target,
                    plan: Plan { canary, stages, windows, failure_threshold, soak_secs, anomaly_devices },
                })
                .context("creating the campaign")?;
            println!("campaign {id} created (draft; the update service starts it inside a window)");
        }
        CampaignCommand::Status { at, id, json } => {
            let (repo, conn) = at.open()?;
            let rollouts = Rollouts { conn: &conn, repo: &repo };
            let campaigns = match id {
                Some(id) => vec![rollouts.get(&id)?],
                None => rollouts.all()?,
            };
            if json {
                let views = campaigns
                    .into_iter()
                    .map(|c| crate::api::ota::view(&conn, c))
                    .collect::<Result<Vec<_>, _>>()
                    .context("reading the campaigns' progress")?;
                write_json(&mut std::io::stdout().lock(), &views)?;
                return Ok(ExitCode::SUCCESS);
            }
            for c in campaigns {
                let stats = rollouts.stats(&c)?;
                println!(
                    "{} {} -> {} [{}] group: {} devices, {} ok, {} failed, {} anomalous",
                    c.id,
                    c.spec.target,
                    c.spec.firmware_version,
                    c.state,
                    stats.size,
                    stats.successes,
                    stats.failures,
                    stats.anomalous
                );
            }
        }
        CampaignCommand::Halt { at, id, reason } => {
            let (repo, conn) = at.open()?;
            let t = Rollouts { conn: &conn, repo: &repo }.halt(&id, &reason)?;
            println!("campaign {}: {} -> {}", t.id, t.from, t.to);
        }
        CampaignCommand::Resume { at, id } => {
            let (repo, conn) = at.open()?;
            let t = Rollouts { conn: &conn, repo: &repo }.resume(&id)?;
            println!("campaign {}: {} -> {}", t.id, t.from, t.to);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn ota_command_line_is_well_formed() {
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn publish_parses_class_version_and_keys() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "iotgw",
            "ota",
            "publish",
            "fw.bin",
            "--version",
            "2.0",
            "--device-class",
            "cam",
            "--key",
            "v.pem",
            "--repo",
            "r",
        ])
        .unwrap();
        let crate::cli::Command::Ota(super::Command::Publish(args)) = cli.command else { panic!() };
        let super::PublishArgs { release, at, .. } = *args;
        assert_eq!(release.version.as_deref(), Some("2.0"));
        assert_eq!(release.classes, ["cam"]);
        assert_eq!(at.repo.as_deref(), Some(std::path::Path::new("r")));
    }
}
