//! The fleet hub, `iotgw hub --config FILE`: it consumes every gateway's reports from NATS
//! JetStream into PostgreSQL, serves the fleet API and console, publishes signed policy bundles
//! and sends commands to gateways. The wire format it shares with gateways is `crate::fleet`.
//!
//! `service` runs it: `streams` on the broker, `store` (PostgreSQL), `ingest` (reports into
//! PostgreSQL, with `clone`, the certificate clone check).
use std::sync::Arc;

pub mod api;
pub mod bundles;
pub mod clone;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod ingest;
pub mod service;
pub mod store;
pub mod streams;

pub use config::Config;

/// What every part of the running hub shares.
#[derive(Clone)]
pub struct Hub {
    pub config: Arc<Config>,
    pub pool: sqlx::PgPool,
    pub jetstream: async_nats::jetstream::Context,
}
