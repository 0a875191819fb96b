//! Network-namespace lab shared by the integration tests.
