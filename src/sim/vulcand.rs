//! (stub) vulcand simulator
