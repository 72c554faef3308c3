//! (stub) labels
