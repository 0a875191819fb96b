//! `iotgw man-pages --out DIR`: one roff page per command (`iotgw.1`, `iotgw-pki.1`,
//! `iotgw-pki-token.1`, ...), written from the same clap definitions as `--help`, so the
//! pages the package installs cannot drift from the binary. Hidden: it is for packagers.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write the pages into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut command = super::Cli::command();
    command.build();
    let written = write_pages(&command, "iotgw", &args.out)?;
    println!("{written} man pages in {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `command` under `name`, then its subcommands' as `name-sub`; returns
/// how many pages were written.
fn write_pages(command: &clap::Command, name: &str, out: &std::path::Path) -> anyhow::Result<usize> {
    // The page's title and NAME section say `iotgw-pki-token`, the name man looks up; its
    // synopsis keeps `iotgw pki token`, the bin name `build` gave it.
    let page = command.clone().name(name.to_owned());
    let path = out.join(format!("{name}.1"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff).with_context(|| format!("rendering {name}"))?;
    std::fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), out)?;
    }
    Ok(written)
}
