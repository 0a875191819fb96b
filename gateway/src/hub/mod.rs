//! The fleet hub, `iotgw hub --config FILE`: it consumes every gateway's reports from NATS
//! JetStream into PostgreSQL, serves the fleet API and console, publishes signed policy bundles
//! and sends commands to gateways. The wire format it shares with gateways is `crate::fleet`.
pub mod config;
pub mod store;

pub use config::Config;
