//! (stub) marathon/client
