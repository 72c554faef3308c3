//! Switchboard keeps Consul, Kong and Vulcand in step with what Apache
//! Marathon runs.
//!
//! Read top to bottom, the modules retell the data flow:
//!
//! - [`model`]: domain words (ids, `AppSpec`, `TaskFacts`, `Registration`).
//! - [`marathon`]: Marathon's event stream and REST API (apps, and pods as apps), parsed into typed events.
//! - [`assemble`]: pure folding of one event into per-instance records.
//! - [`store`]: sled trees holding specs, facts, pending instances, the ledger, queued ops.
//! - [`labels`]: pure translation of an app spec + instance into registrations.
//! - [`plan`]: pure diff of desired registrations against what a backend holds.
//! - [`backends`]: Consul, Kong, Vulcand behind one trait.
//! - [`reconcile`]: the reconcile core, a file per role: consumer (folds events), planner
//!   (dirty apps → wants), applier (one per backend: plans, merges listings, drains, the only
//!   writer of its queue and ledger, the one gate of backend writes), resync.
//! - [`ha`]: leader election on a Consul lock, and the fence: only the leader writes.
//! - [`daemon`]: wiring, timers, shutdown; [`http`]: health, readiness, metrics, status page;
//!   [`status`]: the status model the page, `/api/status` and `switchboard state` share; [`metrics`].
//! - [`once`] (`reconcile --once`), [`adopt`], [`state`], [`demo`]: the other subcommands; [`config`]: settings
//!   (each backend's own in its folder; [`settings`]: the words they share).
//! - [`tls`]: the one builder of HTTP clients: trust, client certificates, rotation.
//! - [`sim`]: simulators used by tests, `switchboard demo` and `switchboard sim`.
//! - [`bench`]: the `switchboard-bench` harness (processes, phases, report, plot).

pub mod adopt;
pub mod assemble;
pub mod backends;
pub mod bench;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod ha;
pub mod http;
pub mod labels;
pub mod marathon;
pub mod metrics;
pub mod model;
pub mod once;
pub mod plan;
pub mod reconcile;
pub mod secret;
pub mod settings;
pub mod sim;
pub mod state;
pub mod status;
pub mod store;
pub mod tls;
