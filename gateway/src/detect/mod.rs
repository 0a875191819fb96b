//! detect (to be filled in by its issue).
