//! `iotgw policy`: check policy files, show what they compile to, import MUD files.
//! Reads policy files and MUD JSON; writes only the file `import-mud --output` names.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::policy::{self, CompiledPolicy, compile::proto_name};

/// Exit code when the policy files have errors (they are all printed first).
pub const EXIT_POLICY_ERRORS: u8 = 1;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check policy files (or folders of *.toml): print every error as file:line:column, or a
    /// summary when they are good.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the datapath entries the policy files compile to.
    Show {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Convert an RFC 8520 MUD file (JSON) into a policy class (TOML).
    ImportMud {
        /// The MUD file.
        file: PathBuf,
        /// Name of the class to create.
        #[arg(long)]
        class: String,
        /// Stable class id (1..=65535), unique across the policy files.
        #[arg(long)]
        id: u16,
        /// Write the TOML here instead of standard output (refuses to overwrite).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { files } => Ok(match policy::check(&files) {
            Ok(compiled) => {
                println!("{}", summary(&compiled));
                ExitCode::SUCCESS
            }
            Err(errors) => print_errors(&errors),
        }),
        Command::Show { files } => Ok(match policy::check(&files) {
            Ok(compiled) => {
                print!("{}", listing(&compiled));
                ExitCode::SUCCESS
            }
            Err(errors) => print_errors(&errors),
        }),
        Command::ImportMud { file, class, id, output } => {
            let json = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let imported = policy::mud::import(&json, &class, id)
                .with_context(|| format!("{}: refused", file.display()))?;
            for reason in &imported.skipped {
                eprintln!("skipped {reason}");
            }
            match output {
                Some(path) => {
                    use std::io::Write as _;
                    let mut out = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    out.write_all(imported.toml.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote class {class:?} ({} rules) to {}", imported.rules, path.display());
                }
                None => print!("{}", imported.toml),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_errors(errors: &[policy::PolicyError]) -> ExitCode {
    for error in errors {
        eprintln!("{error}");
    }
    eprintln!("{} error{} in the policy files", errors.len(), if errors.len() == 1 { "" } else { "s" });
    ExitCode::from(EXIT_POLICY_ERRORS)
}

/// One paragraph saying what the files hold.
pub fn summary(compiled: &CompiledPolicy) -> String {
    let source = &compiled.source;
    let v4 = compiled.rules.iter().filter(|rule| rule.net.addr().is_ipv4()).count();
    let lanes = [&source.lanes.onboarding, &source.lanes.quarantine, &source.lanes.update]
        .iter()
        .filter(|lane| lane.at.is_some())
        .count();
    let defaults = source.defaults;
    format!(
        "ok: {} files, {} classes, {lanes} lanes, {} datapath entries ({v4} IPv4, {} IPv6), \
         {} DNS-name rules, {} response rules; defaults: malformed={} unknown_device={} \
         policy_miss={} quarantine={}",
        source.files.len(),
        compiled.classes.len(),
        compiled.rules.len(),
        compiled.rules.len() - v4,
        compiled.dns_rules.len(),
        compiled.responses.len(),
        verdict_name(defaults.malformed),
        verdict_name(defaults.unknown_device),
        verdict_name(defaults.policy_miss),
        verdict_name(defaults.quarantine),
    )
}

fn verdict_name(verdict: crate::config::Verdict) -> &'static str {
    match verdict {
        crate::config::Verdict::Pass => "pass",
        crate::config::Verdict::Drop => "drop",
        crate::config::Verdict::Redirect => "redirect",
    }
}

/// Classes, entries and DNS rules, one per line.
pub fn listing(compiled: &CompiledPolicy) -> String {
    let mut out = String::new();
    for class in &compiled.classes {
        out.push_str(&format!("class {} id={} policy={}\n", class.name, class.class_id.0, class.policy_id.0));
    }
    for rule in &compiled.rules {
        let ports: Vec<String> = rule.ports.iter().map(|r| format!("{}-{}", r.first, r.last)).collect();
        out.push_str(&format!(
            "entry policy={} proto={} net={} ports={}\n",
            rule.policy_id.0,
            proto_name(rule.proto),
            rule.net,
            ports.join(",")
        ));
    }
    for rule in &compiled.dns_rules {
        let ports: Vec<String> = rule.ports.iter().map(|r| format!("{}-{}", r.first, r.last)).collect();
        out.push_str(&format!(
            "dns policy={} proto={} name={} ports={}\n",
            rule.policy_id.0,
            rule.protocol.as_str(),
            rule.pattern,
            ports.join(",")
        ));
    }
    out
}
