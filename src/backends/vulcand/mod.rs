//! (stub) vulcand backend
