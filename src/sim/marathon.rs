//! (stub) marathon simulator
