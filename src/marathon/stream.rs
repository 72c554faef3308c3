//! (stub) marathon/stream
