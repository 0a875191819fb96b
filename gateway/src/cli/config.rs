//! `iotgw config check FILE [--hub]`: the whole configuration checked as a start would check
//! it, without loading or attaching anything. For the gateway that is the file itself and
//! everything `iotgw run` reads at start (`run::check`: policy files, token and user files,
//! CA, OTA and bundle-key files, the interfaces); for the hub (`--hub`), the file and the
//! files it names. Every problem is printed, one a line; the exit code is `EXIT_CONFIG` (78)
//! when there is any, 0 when there is none. `docs/config.md` lists every key.
use std::{path::PathBuf, process::ExitCode};

use crate::cli::EXIT_CONFIG;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check a configuration file and every file it names; exit 78 on any problem.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The configuration file (the gateway's, or the hub's with --hub).
    pub file: PathBuf,
    /// FILE is the fleet hub's configuration (`iotgw hub --config`).
    #[arg(long)]
    pub hub: bool,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => {
            let problems = if args.hub { hub_problems(&args.file) } else { gateway_problems(&args.file) };
            if problems.is_empty() {
                println!("{}: ok", args.file.display());
                return Ok(ExitCode::SUCCESS);
            }
            for problem in &problems {
                eprintln!("iotgw: {problem}");
            }
            eprintln!("iotgw: {}: {} configuration error(s)", args.file.display(), problems.len());
            Ok(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// What `iotgw run` would refuse, all of it.
fn gateway_problems(file: &std::path::Path) -> Vec<String> {
    match crate::config::load(file) {
        Ok(config) => super::run::check(&config).err().unwrap_or_default(),
        Err(error) => vec![error.to_string()],
    }
}

/// What `iotgw hub --config` would refuse, and the files it names that cannot be read.
fn hub_problems(file: &std::path::Path) -> Vec<String> {
    let config = match crate::hub::Config::load(file) {
        Ok(config) => config,
        Err(error) => return vec![error.to_string()],
    };
    let mut problems = Vec::new();
    let files =
        [("credentials", &config.credentials), ("tls_ca", &config.tls_ca), ("signing_key", &config.signing_key)];
    for (key, path) in files.into_iter().filter_map(|(key, path)| Some((key, path.as_ref()?))) {
        if let Err(error) = std::fs::File::open(path) {
            problems.push(format!("{key} = {:?}: {error}", path.display().to_string()));
        }
    }
    if let Err(error) = crate::api::auth::TokenSet::load(&config.api) {
        problems.push(format!("[api] tokens: {error}"));
    }
    if let Err(error) = crate::api::UserSet::load(&config.api) {
        problems.push(format!("[api] users: {error}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder, removed on drop (also when the test fails).
    struct Scratch(iotgw_test_support::services::Scratch);

    impl Scratch {
        fn new(name: &str) -> Self {
            Self(iotgw_test_support::services::scratch(&format!("cli-config-{name}")))
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write");
            path
        }
    }

    fn check(file: PathBuf, hub: bool) -> ExitCode {
        run(Command::Check(CheckArgs { file, hub })).expect("an exit code")
    }

    #[test]
    fn the_gateway_check_reports_the_file_and_what_it_names() {
        let scratch = Scratch::new("gateway");
        let config = scratch.file(
            "iotgw.toml",
            "[datapath]\nlan_interface = \"iotgw-nope0\"\n[policy]\ndir = \"/nonexistent/iotgw-policies\"\n\
             [api]\ntokens_file = \"/nonexistent/iotgw-tokens.toml\"\n",
        );
        let problems = gateway_problems(&config);
        let text = problems.join("\n");
        assert!(text.contains("/nonexistent/iotgw-policies"), "{text}");
        assert!(text.contains("[api] tokens: "), "{text}");
        assert!(text.contains("lan_interface = \"iotgw-nope0\": no such interface"), "{text}");
        assert_eq!(check(config, false), ExitCode::from(EXIT_CONFIG));
        let typo = scratch.file("typo.toml", "[datapath]\nlan_interfac = \"lo\"\n");
        assert!(gateway_problems(&typo)[0].contains("typo.toml:2:1"), "{:?}", gateway_problems(&typo));
    }

    #[test]
    fn the_hub_check_passes_a_good_file_and_names_missing_files() {
        let scratch = Scratch::new("hub");
        let good =
            scratch.file("hub.toml", "nats_url = \"nats://127.0.0.1:4222\"\ndatabase_url = \"postgres://x/y\"\n");
        assert_eq!(check(good.clone(), true), ExitCode::SUCCESS);
        assert!(!gateway_problems(&good).is_empty(), "a hub file is not a gateway's");
        let bad = scratch.file(
            "bad.toml",
            "nats_url = \"nats://127.0.0.1:4222\"\ndatabase_url = \"postgres://x/y\"\n\
             signing_key = \"/nonexistent/iotgw-bundle.pem\"\n",
        );
        let problems = hub_problems(&bad);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("signing_key = \"/nonexistent/iotgw-bundle.pem\": "), "{problems:?}");
        assert_eq!(check(bad, true), ExitCode::from(EXIT_CONFIG));
        let missing = scratch.file("missing.toml", "nats_url = \"nats://127.0.0.1:4222\"\n");
        assert!(hub_problems(&missing)[0].contains("database_url"), "{:?}", hub_problems(&missing));
    }
}
