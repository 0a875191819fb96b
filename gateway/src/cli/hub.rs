//! `iotgw hub --config FILE`: check the hub's configuration, then run it (`hub::service`).
//! The hub's tools are subcommands beside it (`iotgw hub <tool> ...`), one `HubCommand`
//! variant each; `--config` alone runs the hub. `keygen` makes the key pair policy bundles are
//! signed with; `policy publish` checks a policy folder and publishes it to a site's or a
//! group's gateways (`hub::bundles`). `provision-gateway` and `provision-hub` create broker
//! credentials (`hub::credentials`): they write the NKey seed, readable by its owner only and
//! never over an existing file, and print the entry to add to nats-server's `authorization`.
use std::{io::Write as _, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;

use crate::{
    cli::EXIT_CONFIG,
    fleet::{
        bundle::Scope,
        connect::{self, Endpoint},
        subjects,
    },
    hub::{self, bundles, credentials},
    ota::{keys, metadata::SigningKey},
};

/// The private key `keygen` writes (the hub's `signing_key`); the public one is beside it as
/// `bundle.pub.pem` (every gateway's `fleet.bundle_key`).
pub const SIGNING_KEY_FILE: &str = "bundle.pem";

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// The hub's configuration file; runs the hub.
    #[arg(long, short, required = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<HubCommand>,
}

/// The hub's tools, run instead of the hub.
#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Create the Ed25519 key pair policy bundles are signed with: DIR/bundle.pem (the hub's
    /// signing_key, keep it secret) and DIR/bundle.pub.pem (every gateway's fleet.bundle_key).
    /// Never overwrites a key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Signed policy bundles for the gateways.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Create a gateway's broker credentials: it may publish only its own reports and take only
    /// its own commands and policy.
    ProvisionGateway(ProvisionGatewayArgs),
    /// Create the hub's broker credentials.
    ProvisionHub(ProvisionHubArgs),
}

#[derive(Debug, clap::Args)]
pub struct ProvisionGatewayArgs {
    /// The gateway's `[fleet] site`.
    #[arg(long)]
    pub site: String,
    /// The gateway's `[fleet] gateway`.
    #[arg(long)]
    pub gateway: String,
    /// Bundle groups it takes (`[fleet] groups`); repeat for several.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Folder for the seed file `<site>.<gateway>.nk` (`[fleet] credentials`).
    #[arg(long)]
    pub out: PathBuf,
    /// The hub's JetStream domain, when the gateway connects through a site's leaf node
    /// (`[fleet] jetstream_domain`): its API subjects carry the domain.
    #[arg(long)]
    pub jetstream_domain: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ProvisionHubArgs {
    /// Folder for the seed file `hub.nk` (the hub's `credentials`).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Check a policy folder as `iotgw policy check` does, sign it as the next version of its
    /// scope and publish it to every gateway of the scope.
    Publish {
        /// The hub configuration file.
        #[arg(long)]
        config: PathBuf,
        /// `site:<site>` or `group:<group>`.
        #[arg(long)]
        scope: Scope,
        /// The policy folder (its *.toml files become the gateways' whole policy).
        #[arg(long)]
        dir: PathBuf,
        /// Who publishes: audited at the hub, and as `hub:<actor>` on every gateway.
        #[arg(long, env = "USER")]
        actor: String,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match (args.command, args.config) {
        (Some(HubCommand::Keygen { out }), _) => keygen(&out),
        (Some(HubCommand::Policy(PolicyCommand::Publish { config, scope, dir, actor })), _) => {
            publish(&config, &scope, &dir, &actor)
        }
        (Some(HubCommand::ProvisionGateway(args)), _) => provision_gateway(args),
        (Some(HubCommand::ProvisionHub(args)), _) => {
            provision(&args.out, "hub.nk", &credentials::hub_permissions(), "the hub")
        }
        (None, Some(path)) => serve(&path),
        (None, None) => anyhow::bail!("give --config FILE to run the hub"),
    }
}

/// Loads the hub's configuration; `Err` holds the exit code after the problem was printed.
fn load(path: &std::path::Path) -> Result<hub::Config, ExitCode> {
    hub::Config::load(path).map_err(|error| {
        eprintln!("iotgw: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Loads the configuration (exiting with `EXIT_CONFIG` on any problem, before connecting to
/// anything) and runs the hub until SIGINT/SIGTERM.
fn serve(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(crate::hub::service::run(config))?;
    Ok(ExitCode::SUCCESS)
}

fn keygen(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let private = out.join(SIGNING_KEY_FILE);
    let public = keys::public_path(&private);
    if public.exists() {
        anyhow::bail!("{} already exists; refusing to overwrite a key", public.display());
    }
    keys::save_new(&private, &SigningKey::generate()).context("writing the bundle signing key")?;
    println!("signing key (the hub's signing_key; keep it secret): {}", private.display());
    println!("public key (every gateway's fleet.bundle_key): {}", public.display());
    Ok(ExitCode::SUCCESS)
}

fn publish(config: &std::path::Path, scope: &Scope, dir: &std::path::Path, actor: &str) -> anyhow::Result<ExitCode> {
    let config = match load(config) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    // Refused before anything is contacted: the checker's messages, as `iotgw policy check`.
    let draft = match bundles::prepare(config.signing_key.as_deref(), dir, actor) {
        Ok(draft) => draft,
        Err(bundles::PublishError::Policy(errors)) => return Ok(super::policy::print_errors(&errors)),
        Err(error) => return Err(error).context("preparing the bundle"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let published = runtime.block_on(async {
        let pool = hub::store::open(&config.database_url).await.context("opening the hub database")?;
        let endpoint = Endpoint {
            url: &config.nats_url,
            name: "iotgw-hub-publish",
            credentials: config.credentials.as_deref(),
            tls_ca: config.tls_ca.as_deref(),
            inbox_prefix: None,
        };
        let client = connect::connect(&endpoint).await.context("connecting to NATS")?;
        let hub = hub::Hub { config: Arc::new(config), pool, jetstream: async_nats::jetstream::new(client) };
        bundles::publish(&hub, scope, draft).await.context("publishing the bundle")
    })?;
    println!(
        "published {} v{} ({} files, bucket revision {})",
        published.scope, published.version, published.files, published.revision
    );
    Ok(ExitCode::SUCCESS)
}

fn provision_gateway(args: ProvisionGatewayArgs) -> anyhow::Result<ExitCode> {
    for name in std::iter::once(&args.site).chain([&args.gateway]).chain(&args.groups).chain(&args.jetstream_domain) {
        subjects::check_token(name).map_err(anyhow::Error::msg)?;
    }
    let permissions =
        credentials::gateway_permissions(&args.site, &args.gateway, &args.groups, args.jetstream_domain.as_deref());
    let file = format!("{}.{}.nk", args.site, args.gateway);
    provision(&args.out, &file, &permissions, &format!("gateway {}.{}", args.site, args.gateway))
}

/// Writes a new NKey seed as `out/file` and prints the user entry for nats-server.
fn provision(
    out: &std::path::Path,
    file: &str,
    permissions: &credentials::Permissions,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let (public_key, seed) = credentials::new_user();
    let path =
        credentials::write_seed(out, file, &seed).with_context(|| format!("writing {}", out.join(file).display()))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "# {what}: seed in {} (keep it there, mode 0600)", path.display())?;
    writeln!(stdout, "# add to nats-server's authorization {{ users = [ ... ] }}:")?;
    writeln!(stdout, "{}", credentials::user_entry(&public_key, permissions))?;
    Ok(ExitCode::SUCCESS)
}
