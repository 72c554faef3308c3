//! (stub) kong simulator
