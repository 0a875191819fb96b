//! api (to be filled in by its issue).

/// This component's section of the gateway config file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}
