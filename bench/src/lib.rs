//! Shared helpers for iotgw's benchmarks.
