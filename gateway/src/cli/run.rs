//! `iotgw run --config FILE`: check the whole configuration, then hand over to the
//! controller. Nothing is loaded or attached before every check passed: a configuration
//! error exits with `EXIT_CONFIG` and leaves the interfaces as they were.
use std::process::ExitCode;

use crate::{cli::EXIT_CONFIG, config::Config, policy::PolicyStore};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway configuration file.
    #[arg(long, short)]
    pub config: std::path::PathBuf,
}

/// Loads the gateway configuration; `Err` holds the exit code (`EXIT_CONFIG`) after the
/// problem was printed.
pub fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    crate::config::load(path).map_err(|error| {
        eprintln!("iotgw: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let policy = match check(&config) {
        Ok(policy) => policy,
        Err(problems) => {
            for problem in &problems {
                eprintln!("iotgw: {problem}");
            }
            eprintln!("iotgw: {} configuration error(s); nothing attached", problems.len());
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(crate::controller::run(config, policy))?;
    Ok(ExitCode::SUCCESS)
}

/// Everything the controller reads at start besides the configuration file, checked
/// together so the operator fixes them in one go: every policy file (its `[[response]]`
/// rules included), the API token and users files, the identity's manufacturer CAs and CA files, the
/// OTA service's certificates, keys and CRLs (when enabled), the fleet's bundle key, and the
/// interfaces named in `[datapath]`. Returns the policy to run, or every problem.
pub fn check(config: &Config) -> Result<PolicyStore, Vec<String>> {
    let mut problems = Vec::new();
    let policy = match PolicyStore::open(&config.policy.dir, crate::respond::rules::policy_errors) {
        Ok(policy) => Some(policy),
        Err(errors) => {
            problems.extend(errors.iter().map(ToString::to_string));
            problems.push(format!("{} policy error(s) in {}", errors.len(), config.policy.dir.display()));
            None
        }
    };
    if let Err(error) = crate::api::auth::TokenSet::load(&config.api) {
        problems.push(format!("[api] tokens: {error}"));
    }
    if let Err(error) = crate::api::UserSet::load(&config.api) {
        problems.push(format!("[api] users: {error}"));
    }
    if config.identity.enabled
        && let Err(error) = crate::identity::load_manufacturers(&config.identity.manufacturer_cas)
    {
        problems.push(format!("[identity] manufacturer_cas: {error}"));
    }
    if config.fleet.enabled()
        && let Some(key) = &config.fleet.bundle_key
        && let Err(error) = crate::ota::keys::load_verifying(key)
    {
        problems.push(format!("[fleet] bundle_key: {error}"));
    }
    let identity = &config.identity;
    let identity_files =
        [("ca_cert", &identity.ca_cert), ("ca_key", &identity.ca_key), ("ca_chain", &identity.ca_chain)];
    let identity_files = identity_files.into_iter().filter_map(|(key, path)| Some((key, path.as_ref()?)));
    let ota = &config.ota;
    let ota_certificate = [("server_cert", &ota.server_cert), ("server_key", &ota.server_key)];
    let ota_files = std::iter::once(("device_ca", &ota.device_ca))
        .chain(ota_certificate.into_iter().filter_map(|(key, path)| Some((key, path.as_ref()?))))
        .chain(ota.device_crls.iter().map(|crl| ("device_crls", crl)));
    let files = identity_files
        .map(|(key, path)| ("identity", key, path))
        .filter(|_| identity.enabled)
        .chain(ota_files.map(|(key, path)| ("ota", key, path)).filter(|_| ota.enabled));
    for (section, key, path) in files {
        if let Err(error) = std::fs::File::open(path) {
            problems.push(format!("[{section}] {key} = {:?}: {error}", path.display().to_string()));
        }
    }
    let d = &config.datapath;
    let interfaces = [("lan_interface", Some(&d.lan_interface)), ("wan_interface", d.wan_interface.as_ref())]
        .into_iter()
        .chain([("quarantine_interface", d.quarantine_interface.as_ref())]);
    for (key, interface) in interfaces {
        if let Some(interface) = interface
            && nix::net::if_::if_nametoindex(interface.as_str()).is_err()
        {
            problems.push(format!("[datapath] {key} = {interface:?}: no such interface"));
        }
    }
    match policy {
        Some(policy) if problems.is_empty() => Ok(policy),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");

    /// A scratch folder with a configuration on loopback and a copy of the shipped policies,
    /// removed on drop (also when the test fails).
    struct Scratch(iotgw_test_support::services::Scratch);

    impl Scratch {
        fn new(name: &str, extra_config: &str) -> Self {
            let dir = iotgw_test_support::services::scratch(&format!("cli-run-{name}"));
            std::fs::create_dir_all(dir.join("policies")).expect("scratch dir");
            for file in crate::policy::load::toml_files(Path::new(SHIPPED)).expect("policies/") {
                std::fs::copy(&file, dir.join("policies").join(file.file_name().expect("name"))).expect("copy");
            }
            let config = format!(
                "[datapath]\nlan_interface = \"lo\"\npin_path = \"{0}/pins\"\n[store]\npath = \"{0}/iotgw.db\"\n\
                 [policy]\ndir = \"{0}/policies\"\n[identity]\nenabled = false\n{extra_config}",
                dir.display()
            );
            std::fs::write(dir.join("iotgw.toml"), config).expect("config");
            Self(dir)
        }

        fn config(&self) -> Config {
            crate::config::load(&self.0.join("iotgw.toml")).expect("the configuration parses")
        }

        fn run(&self) -> ExitCode {
            run(Args { config: self.0.join("iotgw.toml") }).expect("run returns an exit code")
        }
    }

    #[test]
    fn the_shipped_policies_on_loopback_pass_the_checks() {
        let scratch = Scratch::new("ok", "");
        check(&scratch.config()).unwrap_or_else(|problems| panic!("{problems:#?}"));
    }

    #[test]
    fn a_bad_response_rule_exits_with_ex_config_before_anything_is_loaded() {
        let scratch = Scratch::new("response", "");
        let bad = "[[response]]\nname = \"typo\"\ndetectors = [\"scan\"]\naction = \"quarantin\"\n";
        std::fs::write(scratch.0.join("policies/zz-response.toml"), bad).expect("write");
        let problems = check(&scratch.config()).expect_err("refused");
        assert!(problems[0].contains("zz-response.toml:1:1: [[response]] \"typo\": unknown action"), "{problems:#?}");
        assert_eq!(scratch.run(), ExitCode::from(EXIT_CONFIG));
        assert!(!scratch.0.join("pins").exists(), "nothing was loaded or pinned");
        assert!(!scratch.0.join("iotgw.db").exists(), "the store was not even opened");
    }

    #[test]
    fn every_problem_of_the_configuration_is_reported_at_once() {
        let scratch = Scratch::new("all", "[api]\ntokens_file = \"/nonexistent/iotgw-tokens.toml\"\n");
        let mut config = scratch.config();
        config.datapath.wan_interface = Some("iotgw-nope0".into());
        config.ota.enabled = true;
        config.ota.server_cert = Some(scratch.0.join("iotgw.toml"));
        config.ota.server_key = Some("/nonexistent/iotgw-ota.key".into());
        std::fs::write(scratch.0.join("policies/zz-bad.toml"), "[[response]]\ndetectors = []\naction = \"block\"\n")
            .expect("write");
        let problems = check(&config).expect_err("refused");
        let text = problems.join("\n");
        assert!(text.contains("zz-bad.toml:1:1: [[response]] \"response #"), "{text}");
        assert!(text.contains("[api] tokens: "), "{text}");
        assert!(text.contains("[datapath] wan_interface = \"iotgw-nope0\": no such interface"), "{text}");
        assert!(text.contains("[ota] server_key = \"/nonexistent/iotgw-ota.key\": "), "{text}");
        assert_eq!(EXIT_CONFIG, 78, "sysexits EX_CONFIG");
    }
}
