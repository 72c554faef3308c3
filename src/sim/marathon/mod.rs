//! In-process Marathon: one in-memory model serving the REST API and the SSE
//! event bus, with scenario methods that emit the events real Marathon sends.
//!
//! Invariants:
//! - `Model` is pure (no I/O): each scenario method mutates it and returns
//!   the events Marathon would publish, in Marathon's order (`docs/marathon.md`).
//!   The caller decides when (and whether) to `emit` them, so tests can drop,
//!   reorder or delay events.
//! - Timestamps come from a logical clock that strictly increases with every
//!   event; nothing reads the wall clock.
//! - The server's std Mutexes are never held across an `.await`.
//! - Binds 127.0.0.1:0 only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{AppId, TaskState, Timestamp};

mod model;
mod pods;
mod server;

pub use model::{Generation, Model, ModelOptions, SimEvent};
pub use server::{MarathonSim, RedirectingSim};

#[cfg(test)]
mod tests;
