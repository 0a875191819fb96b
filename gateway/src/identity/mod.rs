//! identity (in progress).
pub mod ca;
pub mod check;
pub mod core;
pub mod lifecycle;
pub mod names;
pub mod registry;

pub use registry::MIGRATIONS;

/// This component's section of the gateway config file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}
