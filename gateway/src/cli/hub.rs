//! `iotgw hub`: the fleet hub's tools. `provision-gateway` and `provision-hub` create broker
//! credentials (`hub::credentials`): they write the NKey seed, readable by its owner only and
//! never over an existing file, and print the entry to add to nats-server's `authorization`.
use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::{fleet::subjects, hub::credentials};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
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
}

#[derive(Debug, clap::Args)]
pub struct ProvisionHubArgs {
    /// Folder for the seed file `hub.nk` (the hub's `credentials`).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let (out, file, permissions, what) = match command {
        Command::ProvisionGateway(args) => {
            for name in std::iter::once(&args.site).chain([&args.gateway]).chain(&args.groups) {
                subjects::check_token(name).map_err(anyhow::Error::msg)?;
            }
            let permissions = credentials::gateway_permissions(&args.site, &args.gateway, &args.groups);
            let file = format!("{}.{}.nk", args.site, args.gateway);
            (args.out, file, permissions, format!("gateway {}.{}", args.site, args.gateway))
        }
        Command::ProvisionHub(args) => {
            (args.out, "hub.nk".to_owned(), credentials::hub_permissions(), "the hub".to_owned())
        }
    };
    let (public_key, seed) = credentials::new_user();
    let path = credentials::write_seed(&out, &file, &seed)
        .with_context(|| format!("writing {}", out.join(&file).display()))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "# {what}: seed in {} (keep it there, mode 0600)", path.display())?;
    writeln!(stdout, "# add to nats-server's authorization {{ users = [ ... ] }}:")?;
    writeln!(stdout, "{}", credentials::user_entry(&public_key, &permissions))?;
    Ok(ExitCode::SUCCESS)
}
