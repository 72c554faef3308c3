//! (stub) consul backend
