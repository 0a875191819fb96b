//! `iotgw policy`: check policy files, show what they compile to, import MUD files.
//! Reads policy files and MUD JSON; writes only the file `import-mud --output` names.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::{
    policy::{
        self, CompiledPolicy,
        entries::{PortMatchKey, proto_name},
    },
    untrusted,
};

/// Exit code when the policy files have errors (they are all printed first).
pub const EXIT_POLICY_ERRORS: u8 = 1;
/// Exit code of `import-mud` when the file is refused whole: invalid, or nothing in it
/// representable (each refused ACE is printed first).
pub const EXIT_MUD_REFUSED: u8 = 2;

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
        /// Print everything (classes, lanes, defaults, entries) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert an RFC 8520 MUD file (JSON) into a policy class (TOML): exactly, or with the
    /// ACEs the gateway cannot represent refused (each printed with its ACL, ACE and field).
    /// Exits 2 when the file is refused whole.
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
        Command::Check { files } => Ok(match policy::check(&files, crate::respond::rules::policy_errors) {
            Ok(compiled) => {
                println!("{}", summary(&compiled));
                for note in notes(&compiled) {
                    println!("note: {note}");
                }
                ExitCode::SUCCESS
            }
            Err(errors) => print_errors(&errors),
        }),
        Command::Show { files, json } => Ok(match policy::check(&files, crate::respond::rules::policy_errors) {
            Ok(compiled) if json => {
                println!("{:#}", compiled.view());
                ExitCode::SUCCESS
            }
            Ok(compiled) => {
                print!("{}", listing(&compiled));
                ExitCode::SUCCESS
            }
            Err(errors) => print_errors(&errors),
        }),
        Command::ImportMud { file, class, id, output } => {
            let json = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let imported = match policy::mud::import(&json, &class, id) {
                Ok(imported) => imported,
                Err(error) => {
                    if let policy::mud::MudError::NothingRepresentable(refused) = &error {
                        for refusal in refused {
                            eprintln!("refused {}", untrusted::escape(&refusal.to_string()));
                        }
                    }
                    eprintln!("{}: refused: {}", file.display(), untrusted::escape(&error.to_string()));
                    return Ok(ExitCode::from(EXIT_MUD_REFUSED));
                }
            };
            for refusal in &imported.refused {
                eprintln!("refused {}", untrusted::escape(&refusal.to_string()));
            }
            for note in &imported.notes {
                eprintln!("note: {}", untrusted::escape(note));
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
                    eprintln!(
                        "wrote class {class:?} ({} rules, {} ACEs refused) to {}",
                        imported.rules,
                        imported.refused.len(),
                        path.display()
                    );
                }
                None => print!("{}", imported.toml),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints every error and the count; the exit code of a policy that fails the checks.
pub(crate) fn print_errors(errors: &[policy::PolicyError]) -> ExitCode {
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
        defaults.malformed.as_str(),
        defaults.unknown_device.as_str(),
        defaults.policy_miss.as_str(),
        defaults.quarantine.as_str(),
    )
}

/// Things that are valid but probably not meant: lanes no file defines.
pub fn notes(compiled: &CompiledPolicy) -> Vec<String> {
    let lanes = &compiled.source.lanes;
    let mut notes = Vec::new();
    if lanes.onboarding.at.is_none() {
        notes.push("no [lanes.onboarding]: unknown devices can reach nothing, not even DHCP".into());
    }
    if lanes.quarantine.at.is_none() {
        notes.push("no [lanes.quarantine]: quarantined devices can reach nothing".into());
    }
    notes
}

/// Port matches as `device 0-65535->443-443,remote ...` (see `PortMatchKey`'s `Display`).
fn match_list(matches: &[PortMatchKey]) -> String {
    matches.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Classes, entries and DNS rules, one per line.
pub fn listing(compiled: &CompiledPolicy) -> String {
    let mut out = String::new();
    for class in &compiled.classes {
        out.push_str(&format!("class {} id={} policy={}\n", class.name, class.class_id.0, class.policy_id.0));
    }
    for rule in &compiled.rules {
        out.push_str(&format!(
            "entry policy={} proto={} net={} matches={}\n",
            rule.policy_id.0,
            proto_name(rule.proto),
            rule.net,
            match_list(&rule.matches)
        ));
    }
    for rule in &compiled.dns_rules {
        out.push_str(&format!(
            "dns policy={} proto={} name={} matches={} ipv6={}\n",
            rule.policy_id.0,
            rule.protocol.as_str(),
            rule.pattern,
            match_list(&rule.matches_v4),
            match_list(&rule.matches_v6)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    const MUD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/policy/testdata/lightbulb.mud.json");

    fn scratch(name: &str) -> iotgw_test_support::services::Scratch {
        iotgw_test_support::services::scratch(&format!("cli-policy-{name}"))
    }

    #[test]
    fn check_succeeds_on_the_shipped_folder_and_fails_on_a_bad_file() {
        let ok = run(Command::Check { files: vec![SHIPPED.into()] }).expect("runs");
        assert_eq!(ok, ExitCode::SUCCESS);
        let dir = scratch("check");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[class]]\nname = \"x\"\nid = 1\n[[class.allow]]\nnets = [\"300.1.1.1\"]\n")
            .expect("write");
        let failed = run(Command::Check { files: vec![SHIPPED.into(), bad] }).expect("runs");
        assert_eq!(failed, ExitCode::from(EXIT_POLICY_ERRORS));
    }

    #[test]
    fn check_fails_on_a_bad_response_rule() {
        let dir = scratch("response");
        let bad = dir.join("responses.toml");
        std::fs::write(&bad, "[[response]]\ndetectors = [\"scan\"]\nmin_score = 2.0\naction = \"block\"\n")
            .expect("write");
        let failed = run(Command::Check { files: vec![SHIPPED.into(), bad] }).expect("runs");
        assert_eq!(failed, ExitCode::from(EXIT_POLICY_ERRORS), "response rules are checked too");
    }

    #[test]
    fn imported_mud_file_is_written_once_and_passes_check_with_the_shipped_files() {
        let dir = scratch("mud");
        let out = dir.join("bulb.toml");
        let import =
            || Command::ImportMud { file: MUD.into(), class: "bulb".into(), id: 50, output: Some(out.clone()) };
        assert_eq!(run(import()).expect("imports"), ExitCode::SUCCESS);
        assert!(run(import()).is_err(), "an existing file is never overwritten");
        let checked = run(Command::Check { files: vec![SHIPPED.into(), out.clone()] }).expect("runs");
        assert_eq!(checked, ExitCode::SUCCESS);
        let unreadable = run(Command::ImportMud { file: SHIPPED.into(), class: "x".into(), id: 1, output: None });
        assert!(unreadable.is_err(), "a folder is not a MUD file");
        let lone = concat!(env!("CARGO_MANIFEST_DIR"), "/src/policy/testdata/lone-to-device.mud.json");
        let nothing = run(Command::ImportMud { file: lone.into(), class: "x".into(), id: 1, output: None });
        assert_eq!(nothing.expect("runs"), ExitCode::from(EXIT_MUD_REFUSED), "nothing representable exits non-zero");
    }

    #[test]
    fn summary_counts_what_the_files_hold() {
        let compiled = policy::check(&[SHIPPED], crate::respond::rules::policy_errors).expect("shipped policies");
        let text = summary(&compiled);
        assert!(text.starts_with("ok: 9 files, 6 classes, 3 lanes, "), "{text}");
        assert!(text.ends_with("quarantine=redirect"), "{text}");
        assert!(notes(&compiled).is_empty());
        assert!(listing(&compiled).contains(
            "entry policy=1 proto=tcp net=10.77.0.1/32 matches=device 0-65535->53-53,device 0-65535->8443-8443"
        ));
    }
}
