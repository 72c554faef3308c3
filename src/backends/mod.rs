//! The one trait every registry (Consul, Kong, Vulcand) implements. The
//! operations the planner hands to it (`Op`, `Selection`, `Rejection`) are the
//! plan's words (`crate::plan`), re-exported here.
//!
//! Invariants:
//! - A backend sees `Registration`s and `Op`s only, never Marathon types.
//! - Ops are idempotent: registering twice equals once; deregistering
//!   something absent is success.
//! - `list_owned` returns only entries this Switchboard (this `--cluster`)
//!   owns; anything else is invisible to the planner and so never deleted.

pub mod consul;
pub mod kong;
pub mod settings;
pub mod vulcand;

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::Registration;

pub use crate::plan::{Op, Rejection, Selection};

/// What the rest of Switchboard knows of one kind of backend besides its
/// code: each backend folder defines its `KIND`, and `KINDS` lists them once.
/// Its settings come with it (`settings`, `build`: its folder's
/// `settings.rs`), so a new backend is a new folder, a line in `KINDS` and a
/// line in `settings::Args` (clap needs a field to flatten its flags).
#[derive(Clone, Copy)]
pub struct Kind {
    /// As in `Routing::name`: logs, metrics, store keys, `--backend-concurrency`.
    pub name: &'static str,
    /// Ops in flight at once unless `--backend-concurrency` says otherwise
    /// (BENCHMARKS.md: how they were chosen).
    pub concurrency: usize,
    /// The environment variable of its credentials, named when it refuses them.
    pub credentials: Option<&'static str>,
    /// Whether its own tags or meta tell what is ours whatever the version, so
    /// HA replicas need not share its ledger.
    pub self_described: bool,
    /// Its keys of the TOML file (`crate::settings::field_names` of its
    /// `File`), taken out of the file for it.
    pub file_keys: fn() -> &'static [&'static str],
    /// Its settings, merged from its flags, its keys, its credentials and TLS
    /// files, and validated; errors name its own flags.
    pub settings: fn(&settings::Sources<'_>) -> Result<settings::Settings, crate::settings::ConfigError>,
    /// Its backend, from settings that are on.
    pub build: fn(&settings::Settings, &crate::ha::Fence) -> Result<Backend, crate::settings::ConfigError>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every kind of backend, in the order they are reported.
pub const KINDS: &[Kind] = &[consul::KIND, kong::KIND, vulcand::KIND];

/// The kind called `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Whose the names are that a service's first registration would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The backend's own tags or meta tell ours from theirs (checked when
    /// writing): nothing to record.
    Tagged,
    /// The ledger is the only ownership record and nobody holds the names:
    /// Switchboard records its intent durably, then writes.
    Free,
    /// Someone else holds them: refuse, naming the holder.
    Held(String),
}

/// One entity `switchboard adopt` found named by this cluster's scheme on a
/// backend whose ledger is the only ownership record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its kind, as the backend calls it (`server`, `frontend`, `target`, ...).
    pub entity: &'static str,
    /// Its id or name on the backend.
    pub id: String,
    /// The Switchboard service name it stands for.
    pub service: String,
    /// The ledger entry it would be owned through (instance-level entities,
    /// and an app's skeleton where the backend needs one); `None` for an
    /// app-level entity, owned through its service's intent.
    pub registration: Option<Registration>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Connection refused, timeout, 5xx, 429: retry later.
    #[error("{backend}: {what}: {message}")]
    Transient { backend: &'static str, what: String, message: String },
    /// 4xx or a value the backend refuses: retrying does not help until
    /// the input changes.
    #[error("{backend}: {what}: {message}")]
    Permanent { backend: &'static str, what: String, message: String },
    /// The HA gate stopped a write request (`tls::SendError::is_fenced`):
    /// this replica holds no lease now. Not the backend's failure: the op
    /// stays queued as it was, for whoever leads next.
    #[error("{backend}: {what}: {message}")]
    Fenced { backend: &'static str, what: String, message: String },
}

impl BackendError {
    /// Worth trying again later (a fenced write too: by the next leader).
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. } | BackendError::Fenced { .. })
    }

    pub fn is_fenced(&self) -> bool {
        matches!(self, BackendError::Fenced { .. })
    }

    /// A request `tls::HttpClient::send` did not get an answer to: fenced,
    /// or a transport failure (a TLS one explained with the settings that
    /// fix it, through `explain`).
    pub fn from_send(
        backend: &'static str,
        what: String,
        err: &crate::tls::SendError,
        explain: impl FnOnce(&reqwest::Error) -> Option<String>,
    ) -> BackendError {
        match err {
            crate::tls::SendError::Http(e) => match explain(e) {
                Some(message) => BackendError::Transient { backend, what, message },
                None => BackendError::from_reqwest(backend, what, e),
            },
            fenced => BackendError::Fenced { backend, what, message: fenced.to_string() },
        }
    }

    /// Classifies an HTTP status: 5xx and 429 are transient, other 4xx
    /// permanent.
    pub fn from_status(backend: &'static str, what: String, status: u16, body: &str) -> BackendError {
        let message = format!("HTTP {status}: {}", body.trim());
        if status >= 500 || status == 429 || status == 408 {
            BackendError::Transient { backend, what, message }
        } else {
            BackendError::Permanent { backend, what, message }
        }
    }

    /// A reqwest error (connect, timeout, body) is transient.
    pub fn from_reqwest(backend: &'static str, what: String, err: &reqwest::Error) -> BackendError {
        // Print the error chain without the URL (it could carry userinfo).
        let mut message = err.without_url_ref().to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        BackendError::Transient { backend, what, message }
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        if self.is_timeout() {
            "timed out".to_owned()
        } else if self.is_connect() {
            "connection failed".to_owned()
        } else if self.is_decode() {
            "could not decode response".to_owned()
        } else {
            "request failed".to_owned()
        }
    }
}

/// The pure half of a backend: what it should hold and how its ops are
/// grouped. Every method is required (no default bodies), so no wrapper or
/// new backend can leave one out by accident.
pub trait Routing: Send + Sync {
    /// `consul`, `kong` or `vulcand`: used in logs, metrics, store keys.
    fn name(&self) -> &'static str;

    /// Which desired registrations this backend should hold, and which it
    /// refuses (bad label values, conflicts), each named against its app and
    /// label.
    fn select(&self, desired: &[Registration]) -> Selection;

    /// What `select` weighs `reg` against in other apps (a service name, a
    /// host and path): apps that share a key are selected together, so the
    /// planner selects one app, or one group of apps that share keys, at a
    /// time. Empty: `select` judges each app alone.
    fn conflict_keys(&self, reg: &Registration) -> Vec<String>;

    /// The lane of an op on `reg`: ops of one lane share a fate (one agent,
    /// one server), so a transient failure backs off only its lane. `None`:
    /// the whole backend is one lane.
    fn lane(&self, reg: &Registration) -> Option<String>;

    /// Whether `observed` (from `list_owned`) already equals `desired`, so no
    /// write is needed. Backends compare only what they can read back.
    fn same(&self, desired: &Registration, observed: &Registration) -> bool;
}

/// The I/O half of a backend: reads and writes of the registry. Only the
/// backend's applier calls it, and every write passes the applier's fence.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Everything this backend holds that this Switchboard owns, as
    /// registrations. `ledger` is what Switchboard recorded registering here:
    /// backends without tags use it as the ownership record.
    async fn list_owned(&self, ledger: &[Registration]) -> Result<Vec<Registration>, BackendError>;

    /// Apply one op, idempotently.
    async fn apply(&self, op: &Op) -> Result<(), BackendError>;

    /// Before the first write of a service that neither the ledger nor a
    /// recorded intent makes ours: whose are the app-level names `reg` would
    /// write? Backends without tags (the ledger is their only ownership
    /// record) read them here; the rest answer `Tagged`.
    async fn claim(&self, reg: &Registration) -> Result<Claim, BackendError>;

    /// Everything on the backend named by this cluster's scheme that only a
    /// ledger could make ours (`switchboard adopt`, after a lost data dir),
    /// each with the ledger entry it would be owned through: the matching
    /// registration of `desired` (what Marathon runs now) where there is
    /// one, else one made from what the backend shows. Backends whose tags
    /// or meta say who owns what answer nothing. Reads only.
    async fn adoptable(&self, desired: &[Registration]) -> Result<Vec<Found>, BackendError>;

    /// How often `heartbeat` must run, for backends whose entries expire
    /// (Vulcand servers with a TTL). `None`: no heartbeat.
    fn heartbeat_interval(&self) -> Option<std::time::Duration>;

    /// Refresh the entries in `ledger` (what Switchboard registered here) so
    /// they do not expire while Switchboard is alive.
    async fn heartbeat(&self, ledger: &[Registration]) -> Result<(), BackendError>;
}

/// One configured backend: its routing half (pure, used by the planner and
/// the applier's plans) and its registry half (I/O, used by the applier
/// only). Usually one value implements both.
#[derive(Clone)]
pub struct Backend {
    pub routing: Arc<dyn Routing>,
    pub registry: Arc<dyn Registry>,
}

impl Backend {
    /// Both halves from one value.
    pub fn new<B: Routing + Registry + 'static>(b: B) -> Backend {
        let b = Arc::new(b);
        Backend { routing: b.clone(), registry: b }
    }

    pub fn name(&self) -> &'static str {
        self.routing.name()
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name()).finish()
    }
}

#[cfg(test)]
mod gate_tests {
    /// The non-test code of every file under `src/backends`.
    fn backend_sources() -> Vec<(std::path::PathBuf, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Unit tests (at the end of a file) may talk to simulators directly.
                    let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
                    out.push((path, code));
                }
            }
        }
        let mut out = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backends"), &mut out);
        out
    }

    #[test]
    fn every_backend_request_passes_the_gate() {
        let sources = backend_sources();
        assert!(sources.len() >= 10, "found only {} files", sources.len());
        for (path, code) in &sources {
            for (n, line) in code.lines().enumerate() {
                // reqwest's own sends: `RequestBuilder::send()`, `Client::execute(..)`.
                let bypass = line.contains(".send()") || line.contains(".execute(");
                assert!(
                    !bypass,
                    "{}:{}: a backend request that bypasses the HA gate (use tls::HttpClient::send): {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        let gated = |code: &str| code.split_whitespace().collect::<String>().contains("self.http.send(");
        let senders = sources.iter().filter(|(_, code)| gated(code)).count();
        assert_eq!(senders, 3, "one gated send per backend client");
    }
}
