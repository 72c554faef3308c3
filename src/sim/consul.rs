//! (stub) consul simulator
