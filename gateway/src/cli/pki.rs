//! `iotgw pki`: the issuing CA and device identities, worked on the store file directly.
//!
//! Safe while the gateway runs: SQLite serialises writers, and the running identity service
//! notices every change here (revocation, decommission, hold release) within its reconcile
//! interval and enforces it in XDP.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use time::OffsetDateTime;

use crate::{
    cli::table::write_json,
    device::Mac,
    identity::{
        self, Identity,
        names::{DeviceId, Serial},
        registry,
    },
};

/// Where the store and the CA are.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Gateway configuration file: its `[store]` path and `[identity]` section are used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The store file (overrides the configuration).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Folder of the generated CA (overrides `identity.state_dir`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the identity tables and the issuing CA (unless an external one is configured).
    Init(StoreArgs),
    /// One-time enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revoke a certificate (serial as hex, as `openssl x509 -serial` prints it).
    Revoke {
        serial: String,
        /// RFC 5280 reason: unspecified, key_compromise, affiliation_changed, superseded,
        /// cessation_of_operation, privilege_withdrawn, ...
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Retire a device for good: certificates revoked, tokens void, audit trail kept.
    Decommission {
        device: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Hold a device in the onboarding lane until resumed.
    Suspend {
        device: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lift a suspension.
    Resume {
        device: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Clear the clone hold on a MAC (after a human looked into it).
    Release {
        #[arg(long)]
        mac: Mac,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Devices, certificates and open holds.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail (of one device, or of all).
    Audit {
        device: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Write the current CRL (DER) to a file.
    Crl {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token bound to a MAC; prints it once (only its hash is stored).
    Create {
        #[arg(long)]
        mac: Mac,
        /// Lifetime in seconds (default: `identity.token_ttl_secs`).
        #[arg(long)]
        ttl: Option<u64>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Who the audit trail names for CLI actions.
fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into())
    )
}

fn open(args: &StoreArgs) -> anyhow::Result<(Identity, identity::Config)> {
    let (store_path, mut config) = match &args.config {
        Some(path) => {
            let config = crate::config::load(path).with_context(|| format!("reading {}", path.display()))?;
            crate::store::set_synchronous(config.store.synchronous);
            (config.store.path.clone(), config.identity)
        }
        None => (PathBuf::from(crate::store::DEFAULT_PATH), identity::Config::default()),
    };
    let store_path = args.store.clone().unwrap_or(store_path);
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    let problems = config.problems();
    anyhow::ensure!(problems.is_empty(), "identity configuration: {}", problems.join("; "));
    if let Some(parent) = store_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let identity = identity::open(&config, &store_path)
        .with_context(|| format!("opening the identity store {}", store_path.display()))?;
    Ok((identity, config))
}

fn when(t: i64) -> String {
    registry::rfc3339(t)
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    match command {
        Command::Init(args) => {
            let (identity, config) = open(&args)?;
            let source = match config.ca_source() {
                identity::ca::CaSource::Generated { state_dir } => format!("generated CA in {}", state_dir.display()),
                identity::ca::CaSource::External { cert, .. } => format!("external CA {}", cert.display()),
            };
            let ca = identity::check::parse_cert(identity.ca().cert_der()).context("reading the CA certificate")?;
            println!("identity store ready; {source}");
            println!("CA subject: {}", ca.subject());
        }
        Command::Token(TokenCommand::Create { mac, ttl, store }) => {
            let (mut identity, config) = open(&store)?;
            let ttl = ttl.map_or(config.token_ttl(), identity::secs);
            let token = identity.create_token(mac, ttl, &actor(), now).context("creating the token")?;
            eprintln!(
                "token for device {} (MAC {}), expires {}; shown once:",
                token.device,
                token.mac,
                when(token.expires_at)
            );
            println!("{}", token.secret);
        }
        Command::Revoke { serial, reason, store } => {
            let serial: Serial = serial.parse()?;
            let (mut identity, _) = open(&store)?;
            let record =
                identity.revoke(&serial, registry::parse_reason(&reason), &actor(), now).context("revoking")?;
            println!("revoked {} of device {} (MAC {})", record.serial, record.device, record.mac);
        }
        Command::Decommission { device, store } => {
            let device: DeviceId = device.parse()?;
            let (mut identity, _) = open(&store)?;
            let record = identity.decommission(&device, &actor(), now).context("decommissioning")?;
            println!("decommissioned {} (MAC {}); its certificates are revoked", record.device, record.mac);
        }
        Command::Suspend { device, store } => suspend(&device, &store, true, now)?,
        Command::Resume { device, store } => suspend(&device, &store, false, now)?,
        Command::Release { mac, store } => {
            let (mut identity, _) = open(&store)?;
            identity.release_hold(mac, &actor(), now).context("releasing the hold")?;
            println!("hold on {mac} released");
        }
        Command::List { store, json } => {
            let (identity, _) = open(&store)?;
            let listing = identity.list()?;
            if json {
                write_json(&mut std::io::stdout().lock(), &listing_json(&listing))?;
            } else {
                print_listing(&listing);
            }
        }
        Command::Audit { device, store, json } => {
            let device = device.map(|d| d.parse::<DeviceId>()).transpose()?;
            let (identity, _) = open(&store)?;
            let trail = registry::audit_trail(identity.connection(), device.as_ref())?;
            if json {
                let rows: Vec<_> = trail
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "at": when(e.at), "device": e.device, "mac": e.mac,
                            "actor": e.actor, "action": e.action, "detail": e.detail,
                        })
                    })
                    .collect();
                write_json(&mut std::io::stdout().lock(), &rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            for entry in trail {
                println!(
                    "{} {} {} {} {}: {}",
                    when(entry.at),
                    entry.device.as_deref().unwrap_or("-"),
                    entry.mac.as_deref().unwrap_or("-"),
                    entry.actor,
                    entry.action,
                    entry.detail
                );
            }
        }
        Command::Crl { out, store } => {
            let (identity, _) = open(&store)?;
            let der = identity.crl(now)?;
            write(&out, &der)?;
            println!("CRL written to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn suspend(device: &str, store: &StoreArgs, suspend: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    let device: DeviceId = device.parse()?;
    let (mut identity, _) = open(store)?;
    let (from, to) = identity.suspend(&device, suspend, &actor(), now).context("changing the lifecycle")?;
    println!("{device}: {from} -> {to}");
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `pki list --json`: the listing with times in RFC 3339.
fn listing_json(listing: &identity::core::Listing) -> serde_json::Value {
    let devices: Vec<_> = listing
        .devices
        .iter()
        .map(|d| {
            serde_json::json!({
                "device": d.device.to_string(), "mac": d.mac, "lifecycle": d.lifecycle.to_string(),
                "created_at": when(d.created_at),
            })
        })
        .collect();
    let certificates: Vec<_> = listing
        .certs
        .iter()
        .map(|c| {
            serde_json::json!({
                "serial": c.serial.to_string(), "device": c.device.to_string(), "mac": c.mac, "subject": c.subject,
                "status": c.status.as_str(), "bootstrap": c.bootstrap, "not_before": when(c.not_before),
                "not_after": when(c.not_after), "issued_at": when(c.issued_at),
            })
        })
        .collect();
    let holds: Vec<_> =
        listing.holds.iter().map(|(mac, reason)| serde_json::json!({ "mac": mac, "reason": reason })).collect();
    serde_json::json!({ "devices": devices, "certificates": certificates, "holds": holds })
}

fn print_listing(listing: &identity::core::Listing) {
    println!("DEVICES");
    println!("{:<20} {:<17} {:<15} CREATED", "DEVICE", "MAC", "LIFECYCLE");
    for d in &listing.devices {
        println!("{:<20} {:<17} {:<15} {}", d.device, d.mac, d.lifecycle, when(d.created_at));
    }
    println!("\nCERTIFICATES");
    println!("{:<34} {:<20} {:<17} {:<11} {:<9} NOT AFTER", "SERIAL", "DEVICE", "MAC", "STATUS", "BOOTSTRAP");
    for c in &listing.certs {
        println!(
            "{:<34} {:<20} {:<17} {:<11} {:<9} {}",
            c.serial,
            c.device,
            c.mac,
            c.status.as_str(),
            c.bootstrap,
            when(c.not_after)
        );
    }
    if !listing.holds.is_empty() {
        println!("\nHOLDS (blocked until `iotgw pki release --mac MAC`)");
        for (mac, reason) in &listing.holds {
            println!("{mac}  {reason}");
        }
    }
}
