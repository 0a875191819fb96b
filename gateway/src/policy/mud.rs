//! mud
