//! TLS for every HTTP client Switchboard builds: trust (system store + the
//! bundled Mozilla roots + an optional CA bundle), an optional client
//! certificate for mutual TLS, and certificate files re-read when they change.
//!
//! Invariants:
//! - Every reqwest client of Marathon (REST and event stream) and of the
//!   backends is built here (`HttpClient::build`); nothing else configures TLS.
//! - Trust is the system trust store AND the bundled roots, plus the CA bundle
//!   when one is set: a company CA installed on the host is honoured, and a
//!   host without a usable store still reaches public endpoints.
//! - A file that cannot be read or parsed is an error naming the setting and
//!   the file, at start-up; later (rotation), the last good client stays in
//!   use and the failure is logged once per content of the files.
//! - Files are re-read at most every `RECHECK`, on use (no task of its own);
//!   a change rebuilds the client, which also drops pooled connections made
//!   with the old certificate.
//! - No secret material is ever logged: only setting names and paths.
//! - Every write request of a backend (any method but GET and HEAD) goes out
//!   through `HttpClient::send`, the HA gate: only while this replica's lease
//!   holds, and given up when the lease ends (`SendError::Fenced`). Without
//!   `--ha` the gate always allows. Backends never call reqwest's `send`
//!   themselves (`backends::gate_tests::every_backend_request_passes_the_gate`).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often the certificate files are checked for a change, at most.
pub const RECHECK: Duration = Duration::from_secs(2);

/// An endpoint with TLS settings of its own: Marathon, or a backend (each
/// backend's folder names its own, after its `Kind`), so nothing here lists
/// the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint(&'static str);

impl Endpoint {
    pub const MARATHON: Endpoint = Endpoint("marathon");

    /// The endpoint called `name` (`consul`, ...).
    pub const fn new(name: &'static str) -> Endpoint {
        Endpoint(name)
    }

    /// `marathon`, `consul`, ...: the flag prefix and TOML table name.
    pub fn name(self) -> &'static str {
        self.0
    }
}

impl Default for Endpoint {
    fn default() -> Endpoint {
        Endpoint::MARATHON
    }
}

/// Which of the three files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ca,
    Cert,
    Key,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::Ca => "ca-file",
            Kind::Cert => "cert-file",
            Kind::Key => "key-file",
        }
    }
}

/// The flag of a setting, e.g. `--consul-ca-file` (endpoint) or
/// `--tls-ca-file` (global).
pub fn flag(endpoint: Option<Endpoint>, kind: Kind) -> String {
    format!("--{}-{}", endpoint.map_or("tls", Endpoint::name), kind.suffix())
}

/// One configured file and the setting it came from (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFile {
    pub path: PathBuf,
    /// E.g. "--consul-ca-file (SWITCHBOARD_CONSUL_CA_FILE)" or
    /// "`tls.ca_file` (config file)".
    pub setting: String,
}

/// The TLS settings in force for one endpoint (its own, else the global ones).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointTls {
    pub endpoint: Endpoint,
    /// PEM bundle of extra trusted CAs.
    pub ca: Option<TlsFile>,
    /// PEM client certificate (chain) for mutual TLS; set with `key`.
    pub cert: Option<TlsFile>,
    /// PEM private key of `cert`.
    pub key: Option<TlsFile>,
}

/// A TLS file that cannot be used, or a client that cannot be built; the
/// setting (and file) at fault is named.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct TlsError {
    /// E.g. "--consul-ca-file (SWITCHBOARD_CONSUL_CA_FILE)".
    pub setting: String,
    /// What is wrong, with the file's path.
    pub reason: String,
}

impl TlsError {
    pub fn setting(&self) -> String {
        self.setting.clone()
    }

    pub fn reason(&self) -> String {
        self.reason.clone()
    }
}

/// The bytes of the configured files, read once.
struct Material {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    fingerprint: u64,
}

impl EndpointTls {
    /// Checks that cert and key come together.
    pub fn validate(&self) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(c), None) => Err(TlsError {
                setting: c.setting.clone(),
                reason: format!("a client certificate needs its key: set {} too", flag(Some(self.endpoint), Kind::Key)),
            }),
            (None, Some(k)) => Err(TlsError {
                setting: k.setting.clone(),
                reason: format!(
                    "a client key needs its certificate: set {} too",
                    flag(Some(self.endpoint), Kind::Cert)
                ),
            }),
            _ => Ok(()),
        }
    }

    fn read(&self) -> Result<Material, TlsError> {
        // Small files, read synchronously: at start-up and at most every
        // RECHECK afterwards.
        let read = |f: &Option<TlsFile>| -> Result<Option<Vec<u8>>, TlsError> {
            f.as_ref()
                .map(|f| {
                    std::fs::read(&f.path).map_err(|e| TlsError {
                        setting: f.setting.clone(),
                        reason: format!("cannot read {}: {e}", f.path.display()),
                    })
                })
                .transpose()
        };
        let (ca, cert, key) = (read(&self.ca)?, read(&self.cert)?, read(&self.key)?);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&ca, &cert, &key).hash(&mut h);
        Ok(Material { ca, cert, key, fingerprint: h.finish() })
    }

    /// Reads and parses the files (start-up check): errors name the setting
    /// and the file.
    pub fn check(&self) -> Result<(), TlsError> {
        self.validate()?;
        let m = self.read()?;
        self.apply(&m, reqwest::Client::builder()).map(|_| ())
    }

    /// Applies the files to a client builder: extra roots and identity.
    fn apply(&self, m: &Material, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, TlsError> {
        let parse = |f: &Option<TlsFile>, reason: String| {
            let (setting, path) = f.as_ref().map(|f| (f.setting.clone(), f.path.clone())).unwrap_or_default();
            TlsError { setting, reason: format!("{}: {reason}", path.display()) }
        };
        if let Some(ca) = &m.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| parse(&self.ca, format!("not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(parse(&self.ca, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&m.cert, &m.key) {
            let certs = reqwest::Certificate::from_pem_bundle(cert)
                .map_err(|e| parse(&self.cert, format!("not a PEM certificate: {e}")))?;
            if certs.is_empty() {
                return Err(parse(&self.cert, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned()));
            }
            if !looks_like_key(key) {
                return Err(parse(&self.key, "holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)".to_owned()));
            }
            let mut pem = key.clone();
            pem.push(b'\n');
            pem.extend_from_slice(cert);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| parse(&self.key, format!("not a usable PEM private key: {}", chain(&e))))?;
            b = b.identity(identity);
        }
        Ok(b)
    }
}

fn looks_like_key(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.lines().any(|l| l.starts_with("-----BEGIN") && l.contains("PRIVATE KEY-----"))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

type Base = Box<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>;

/// A reqwest client that follows its certificate files: `get` hands out the
/// current client, rebuilt when the files changed. Cheap to clone (shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
    /// The HA fence every write request passes (`send`); `Fence::always()`
    /// (no `--ha`, or a client that never writes to a backend) lets all pass.
    gate: crate::ha::Fence,
}

/// A request `HttpClient::send` did not get an answer to.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A write while this replica holds no lease: not sent.
    #[error("not sent: this replica does not hold the HA lease")]
    Fenced,
    /// The lease ended while the write was in flight: given up at its end.
    #[error("given up: the HA lease ended while the request was in flight")]
    LeaseEnded,
    /// Sent, and reqwest failed (connect, timeout, body); also a request
    /// that could not be built.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl SendError {
    /// The gate stopped it (not sent, or given up at the lease's end): not a
    /// failure of the backend.
    pub fn is_fenced(&self) -> bool {
        matches!(self, SendError::Fenced | SendError::LeaseEnded)
    }
}

struct Inner {
    tls: EndpointTls,
    /// The caller's options (timeouts, redirects, headers), applied to every
    /// rebuild.
    base: Base,
    /// The client in force. Std lock: held only to clone or swap it.
    current: RwLock<reqwest::Client>,
    /// When the files were last looked at, and what they held then. A
    /// `try_lock` keeps concurrent callers from checking twice.
    watch: Mutex<(Instant, u64)>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("tls", &self.inner.tls).finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client from `base()` plus the TLS settings. Errors name the
    /// setting and the file.
    pub fn build(
        tls: EndpointTls,
        base: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Result<HttpClient, TlsError> {
        tls.validate()?;
        let base: Base = Box::new(base);
        let material = tls.read()?;
        let client = make(&tls, &material, &base)?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                tls,
                base,
                current: RwLock::new(client),
                watch: Mutex::new((Instant::now(), material.fingerprint)),
            }),
            gate: crate::ha::Fence::always(),
        })
    }

    /// The same client (one pool, one set of TLS files) with its write
    /// requests behind `gate` (the HA fence).
    pub fn gated(&self, gate: crate::ha::Fence) -> HttpClient {
        HttpClient { inner: self.inner.clone(), gate }
    }

    /// Sends `req` (built on a client from `get`). A GET or HEAD goes out
    /// as it is. A write passes the gate: not sent without the lease
    /// (`SendError::Fenced`), counted in flight while it runs (a leader
    /// stepping down waits for it), and given up when the lease ends
    /// (`SendError::LeaseEnded`): it is raced against the lease's end, which
    /// each renewal of the same tenure moves on (`WriteGuard::lease_ended`).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        let (client, req) = req.build_split();
        let req = req?;
        if matches!(*req.method(), reqwest::Method::GET | reqwest::Method::HEAD) {
            return Ok(client.execute(req).await?);
        }
        let Some(write) = self.gate.begin_write() else { return Err(SendError::Fenced) };
        let result = tokio::select! {
            answer = client.execute(req) => answer.map_err(SendError::Http),
            // Dropping the request's future closes its connection.
            _ = write.lease_ended() => Err(SendError::LeaseEnded),
        };
        // The write has landed (or been given up): no longer in flight.
        drop(write);
        result
    }

    /// The client to send with now (re-reads the files if due).
    pub fn get(&self) -> reqwest::Client {
        self.recheck();
        match self.inner.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn recheck(&self) {
        let inner = &self.inner;
        if inner.tls.ca.is_none() && inner.tls.cert.is_none() {
            return;
        }
        let Ok(mut watch) = inner.watch.try_lock() else { return };
        if watch.0.elapsed() < RECHECK {
            return;
        }
        watch.0 = Instant::now();
        let material = match inner.tls.read() {
            Ok(m) => m,
            Err(e) => {
                // Mid-rotation (file briefly absent) or broken: keep the last
                // good client; say so once per state of the files.
                if watch.1 != 0 {
                    tracing::warn!(endpoint = inner.tls.endpoint.name(), error = %e, "tls files unreadable, keeping the current client");
                    watch.1 = 0;
                }
                return;
            }
        };
        if material.fingerprint == watch.1 {
            return;
        }
        watch.1 = material.fingerprint;
        match make(&inner.tls, &material, &inner.base) {
            Ok(client) => {
                match inner.current.write() {
                    Ok(mut c) => *c = client,
                    Err(poisoned) => *poisoned.into_inner() = client,
                }
                tracing::info!(endpoint = inner.tls.endpoint.name(), "tls files changed, client rebuilt");
            }
            Err(e) => {
                tracing::warn!(endpoint = inner.tls.endpoint.name(), error = %e, "tls files changed but are unusable, keeping the current client");
            }
        }
    }

    /// A TLS failure in `err`, explained for the user with the settings that
    /// fix it; `None` when `err` is not a TLS failure.
    pub fn explain(&self, err: &reqwest::Error) -> Option<String> {
        explain(self.inner.tls.endpoint, err)
    }
}

fn make(tls: &EndpointTls, m: &Material, base: &Base) -> Result<reqwest::Client, TlsError> {
    let b = base().use_rustls_tls().tls_built_in_root_certs(true);
    let b = tls.apply(m, b)?;
    b.build().map_err(|e| TlsError {
        setting: flag(Some(tls.endpoint), Kind::Ca),
        reason: format!("cannot build the HTTP client for {}: {}", tls.endpoint.name(), chain(&e.without_url())),
    })
}

/// `scheme://host:port` of the request that failed, without userinfo or path.
fn origin(err: &reqwest::Error) -> String {
    match err.url() {
        Some(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            _ => u.scheme().to_owned(),
        },
        None => "the server".to_owned(),
    }
}

/// Explains a TLS failure (see `HttpClient::explain`). Reads rustls' error
/// and alert names in the error chain (`invalid peer certificate:
/// UnknownIssuer`, `received fatal alert: CertificateRequired`), as reqwest
/// exposes no typed TLS error; `tests/tls.rs` pins the wording this relies on.
pub fn explain(endpoint: Endpoint, err: &reqwest::Error) -> Option<String> {
    let text = chain(err);
    let e = Some(endpoint);
    let (what, fix) = if text.contains("invalid peer certificate") {
        let detail = if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
            "certificate not trusted".to_owned()
        } else {
            let tail = text.rsplit("invalid peer certificate: ").next().unwrap_or("").trim();
            format!("certificate refused ({tail})")
        };
        (detail, format!("set {} or {}", flag(e, Kind::Ca), flag(None, Kind::Ca)))
    } else if text.contains("CertificateRequired")
        || text.contains("certificate required")
        || text.contains("BadCertificate")
        || text.contains("UnknownCA")
        || text.contains("alert: HandshakeFailure")
    {
        let detail = if text.contains("CertificateRequired") || text.contains("certificate required") {
            "the server requires a client certificate"
        } else if text.contains("HandshakeFailure") {
            "the server refused the handshake (it may require a client certificate)"
        } else {
            "the server refused the client certificate"
        };
        (
            detail.to_owned(),
            format!(
                "set {}/{} or {}/{}",
                flag(e, Kind::Cert),
                flag(e, Kind::Key),
                flag(None, Kind::Cert),
                flag(None, Kind::Key)
            ),
        )
    } else {
        return None;
    };
    Some(format!("TLS handshake with {} failed: {what} ({fix})", origin(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, name: &str, body: &str) -> TlsFile {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        TlsFile { path, setting: format!("--consul-{name} (SWITCHBOARD_CONSUL_X)") }
    }

    #[test]
    fn flags() {
        assert_eq!(flag(Some(Endpoint::new("consul")), Kind::Ca), "--consul-ca-file");
        assert_eq!(flag(None, Kind::Key), "--tls-key-file");
    }

    #[test]
    fn unreadable_and_unparsable_files_name_setting_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFile { path: dir.path().join("nope.pem"), setting: "--consul-ca-file (X)".into() };
        let tls = EndpointTls { endpoint: Endpoint::new("consul"), ca: Some(missing), ..Default::default() };
        let e = HttpClient::build(tls, reqwest::Client::builder).unwrap_err().to_string();
        assert!(e.contains("--consul-ca-file") && e.contains("nope.pem"), "{e}");

        let junk = file(dir.path(), "ca-file", "hello");
        let tls = EndpointTls { endpoint: Endpoint::new("consul"), ca: Some(junk), ..Default::default() };
        let e = HttpClient::build(tls, reqwest::Client::builder).unwrap_err().to_string();
        assert!(e.contains("--consul-ca-file") && e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn cert_without_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = file(dir.path(), "cert-file", "x");
        let tls = EndpointTls { endpoint: Endpoint::new("kong"), cert: Some(cert), ..Default::default() };
        let e = HttpClient::build(tls, reqwest::Client::builder).unwrap_err().to_string();
        assert!(e.contains("--kong-key-file"), "{e}");
    }

    /// A server on loopback answering every request after `delay`; counts them.
    async fn slow_server(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/"), hits)
    }

    #[tokio::test]
    async fn writes_pass_the_gate_only_within_the_lease_and_reads_always() {
        use std::sync::atomic::Ordering::SeqCst;
        let (url, hits) = slow_server(Duration::from_millis(0)).await;
        let plain = HttpClient::build(EndpointTls::default(), reqwest::Client::builder).unwrap();
        assert!(plain.send(plain.get().put(&url)).await.is_ok(), "no --ha: always");

        let lapsed = crate::ha::Fence::leased_until(Instant::now() - Duration::from_millis(1)).unwrap();
        let gated = plain.gated(lapsed);
        let before = hits.load(SeqCst);
        for req in [gated.get().put(&url), gated.get().post(&url), gated.get().delete(&url)] {
            let err = gated.send(req).await.unwrap_err();
            assert!(matches!(err, SendError::Fenced) && err.is_fenced(), "{err}");
        }
        assert_eq!(hits.load(SeqCst), before, "a fenced write is never sent");
        assert!(gated.send(gated.get().get(&url)).await.is_ok(), "reads pass without a lease");
        assert_eq!(hits.load(SeqCst), before + 1);

        let leased = plain.gated(crate::ha::Fence::leased_until(Instant::now() + Duration::from_secs(60)).unwrap());
        assert!(leased.send(leased.get().put(&url)).await.is_ok());
    }

    #[tokio::test]
    async fn a_write_in_flight_is_given_up_when_the_lease_ends() {
        let (url, hits) = slow_server(Duration::from_secs(30)).await;
        let client =
            HttpClient::build(EndpointTls::default(), || reqwest::Client::builder().timeout(Duration::from_secs(20)))
                .unwrap();
        // The lease starts once the client is built (slow on a loaded machine).
        let until = Instant::now() + Duration::from_millis(500);
        let fence = crate::ha::Fence::leased_until(until).unwrap();
        let client = client.gated(fence.clone());
        let err = client.send(client.get().put(&url)).await.unwrap_err();
        let ended = Instant::now();
        assert!(matches!(err, SendError::LeaseEnded), "{err}");
        assert!(
            ended >= until && ended < until + Duration::from_secs(2),
            "given up {:?} after the lease's end",
            ended - until
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "it was sent");
        assert!(fence.begin_write().is_none(), "the lease has ended");
    }

    #[test]
    fn no_files_builds() {
        let c = HttpClient::build(EndpointTls::default(), reqwest::Client::builder).unwrap();
        let _ = c.get();
    }
}
