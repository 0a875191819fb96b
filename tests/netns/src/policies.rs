//! Policy text shared by the lab tests: the lanes as the shipped `policies/lanes.toml` has
//! them, addressed for the lab, and the default verdicts. Each test adds its own classes.

/// Onboarding: DHCP and DNS to the gateway (and broadcast), EST enrollment on 8443.
/// Quarantine: DNS to the gateway.
pub const LANES: &str = r#"
[lanes.onboarding]
[[lanes.onboarding.allow]]
nets = ["255.255.255.255/32", "10.77.0.1/32"]
protocol = "udp"
ports = [53, 67, 68]
[[lanes.onboarding.allow]]
nets = ["10.77.0.1/32"]
protocol = "tcp"
ports = [8443]

[lanes.quarantine]
[[lanes.quarantine.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53]
"#;

/// The `[defaults]` verdicts. `LAB` is what most tests run with; a test changes only the
/// verdict it is about: `DefaultVerdicts { policy_miss: "pass", ..DefaultVerdicts::LAB }`.
#[derive(Clone, Copy, Debug)]
pub struct DefaultVerdicts<'a> {
    pub malformed: &'a str,
    pub unknown_device: &'a str,
    pub policy_miss: &'a str,
    pub quarantine: &'a str,
}

impl DefaultVerdicts<'_> {
    /// Malformed frames, unknown devices and policy misses dropped; quarantine redirected.
    pub const LAB: DefaultVerdicts<'static> =
        DefaultVerdicts { malformed: "drop", unknown_device: "drop", policy_miss: "drop", quarantine: "redirect" };

    /// The `[defaults]` table, as a policy file holds it.
    pub fn toml(&self) -> String {
        let Self { malformed, unknown_device, policy_miss, quarantine } = self;
        format!(
            "[defaults]\nmalformed = \"{malformed}\"\nunknown_device = \"{unknown_device}\"\npolicy_miss = \"{policy_miss}\"\nquarantine = \"{quarantine}\"\n"
        )
    }
}

/// The lab's default verdicts with the malformed-frame verdict chosen by the test.
pub fn defaults(malformed: &str) -> String {
    DefaultVerdicts { malformed, ..DefaultVerdicts::LAB }.toml()
}

/// The shipped policy files (`policies/*.toml` at the repository root, or `dir`), as
/// (file name, text) for `Scenario::start_with`.
pub fn shipped(dir: Option<&std::path::Path>) -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let dir = dir.unwrap_or(&root);
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| {
            (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).expect("policy file"))
        })
        .collect()
}

/// Class id of the lab's sensor class, and the policy id the compiler gives it.
pub const SENSOR_CLASS_ID: u16 = 20;
pub const SENSOR_POLICY_ID: u32 = gateway_ebpf::lane::FIRST_CLASS_POLICY + SENSOR_CLASS_ID as u32;

/// The lab's sensor class: MQTT to the upstream broker (`lab::UPSTREAM_IP`), nothing else.
pub const SENSOR_CLASS: &str = r#"
[[class]]
name = "sensor"
id = 20
[[class.allow]]
nets = ["10.78.0.2/32"]
protocol = "tcp"
ports = [1883]
"#;
