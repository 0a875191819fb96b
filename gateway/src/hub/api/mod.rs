//! The hub's HTTP API.
pub mod commands;
