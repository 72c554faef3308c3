//! (stub) marathon/event
