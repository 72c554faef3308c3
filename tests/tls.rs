//! TLS through the `switchboard` binary: a test CA made here with `rcgen`, a
//! TLS-terminating proxy (tokio-rustls) on 127.0.0.1:0 in front of each
//! simulator, and the daemon or `reconcile --once` pointed at `https://`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, eventually, s};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A certificate authority made for one test.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca { pem: cert.pem(), der: cert.der().clone(), issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate for `names` (IPs become IP SANs): (cert PEM, key PEM, cert DER, key DER).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// Server side: the server's certificate, and the CA client certificates
/// must chain to (`None`: no client certificate asked for).
fn server_config(server: &Leaf, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der.clone()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone()));
    Arc::new(builder.with_single_cert(vec![server.cert_der.clone()], key).expect("server config"))
}

/// Terminates TLS on 127.0.0.1:0 and forwards the bytes to `target`.
/// `set_config` swaps the server's configuration and drops every open
/// connection, so the next request makes a new handshake.
struct TlsProxy {
    addr: SocketAddr,
    config: watch::Sender<Arc<rustls::ServerConfig>>,
    /// Handshakes the server refused, with rustls' reason.
    refused: Arc<Mutex<Vec<String>>>,
}

impl TlsProxy {
    async fn start(target: SocketAddr, config: Arc<rustls::ServerConfig>) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = watch::channel(config);
        let refused = Arc::new(Mutex::new(Vec::new()));
        let r = refused.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut rx = rx.clone();
                let r = r.clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(rx.borrow_and_update().clone());
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            r.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    let Ok(mut upstream) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        TlsProxy { addr, config: tx, refused }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn set_config(&self, config: Arc<rustls::ServerConfig>) {
        self.config.send_replace(config);
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

fn target(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").trim_end_matches('/').parse().expect("sim address")
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write");
    path
}

fn app(id: &str, service: &str) -> Value {
    json!({"id": id, "labels": {"consul": service}, "portDefinitions": [{"port": 0, "name": "http", "labels": {}}]})
}

struct World {
    marathon: MarathonSim,
    consul: ConsulSim,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    World {
        marathon: MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() })
            .await
            .expect("marathon sim"),
        consul: ConsulSim::start(ConsulSimOptions::default()).await.expect("consul sim"),
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl World {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn file(&self, name: &str, body: &str) -> String {
        write(self.dir.path(), name, body).display().to_string()
    }

    fn registered(&self, app: &str) -> usize {
        self.consul.services().values().filter(|v| v["Meta"]["marathon_app_id"] == app).count()
    }

    /// `reconcile --once`, each run on a data dir of its own (a failed
    /// run's queued ops keep their backoff in the store).
    async fn reconcile(&self, args: &[String]) -> (Option<i32>, String) {
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let data = self.path(&format!("once-{n}"));
        let out = common::run_cli([s(&["reconcile", "--once", "--data-dir", &data]), args.to_vec()].concat()).await;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    }

    fn deploy(&self, id: &str, service: &str, n: usize) {
        let events = self.marathon.model().deploy(app(id, service), n);
        self.marathon.emit(&events);
    }
}

/// Marathon (REST and event stream) and Consul both behind TLS with the
/// test CA, trusted through each endpoint's own setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificates_verified_against_the_configured_ca() {
    let w = world().await;
    let ca = Ca::new("test ca");
    let unrelated = Ca::new("unrelated ca");
    let server = ca.leaf(&["127.0.0.1", "localhost"]);
    let m = TlsProxy::start(target(w.marathon.url().as_str()), server_config(&server, None)).await;
    let c = TlsProxy::start(target(&w.consul.url()), server_config(&server, None)).await;
    let ca_file = w.file("ca.pem", &ca.pem);
    let unrelated_file = w.file("unrelated.pem", &unrelated.pem);
    // Each endpoint's own setting wins over the global one (a CA that
    // signed nothing): Marathon's from the environment, Consul's a flag.
    let d = Daemon::start_with_env(
        &w.dir.path().join("data"),
        &s(&[
            "--marathon",
            &m.url(),
            "--consul",
            &c.url(),
            "--tls-ca-file",
            &unrelated_file,
            "--consul-ca-file",
            &ca_file,
        ]),
        &[("SWITCHBOARD_MARATHON_CA_FILE", ca_file.as_str())],
    );
    eventually("event stream attached over TLS", WAIT, || w.marathon.subscribers() > 0).await;
    w.deploy("/shop/web", "web", 2);
    eventually("registered through TLS", WAIT, || w.registered("/shop/web") == 2).await;
    assert!(m.refused().is_empty() && c.refused().is_empty(), "{:?} {:?}", m.refused(), c.refused());
    drop(d);

    // Same again with the Consul setting pointing at the unrelated CA: refused.
    let (code, out) = w
        .reconcile(&s(&[
            "--marathon",
            &m.url(),
            "--consul",
            &c.url(),
            "--tls-ca-file",
            &ca_file,
            "--consul-ca-file",
            &unrelated_file,
        ]))
        .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certificate not trusted") && out.contains("--consul-ca-file"), "{out}");
}

/// No CA setting: the test CA is in neither the system store nor the
/// bundled roots, and the error says which setting fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused_naming_the_setting() {
    let w = world().await;
    let ca = Ca::new("test ca");
    let c = TlsProxy::start(target(&w.consul.url()), server_config(&ca.leaf(&["127.0.0.1"]), None)).await;
    w.deploy("/shop/web", "web", 1);
    let (code, out) = w.reconcile(&s(&["--marathon", w.marathon.url().as_str(), "--consul", &c.url()])).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("TLS handshake with {} failed: certificate not trusted", c.url()))
            && out.contains("--consul-ca-file")
            && out.contains("--tls-ca-file"),
        "{out}"
    );
    assert_eq!(w.registered("/shop/web"), 0);
    // With the CA: converges.
    let ca_file = w.file("ca.pem", &ca.pem);
    let (code, out) = w
        .reconcile(&s(&["--marathon", w.marathon.url().as_str(), "--consul", &c.url(), "--tls-ca-file", &ca_file]))
        .await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.registered("/shop/web"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_or_unparsable_files_stop_start_up_naming_setting_and_file() {
    let w = world().await;
    let base = s(&["--marathon", w.marathon.url().as_str(), "--consul", &w.consul.url()]);
    let missing = w.path("missing.pem");
    let (code, out) = w.reconcile(&[base.clone(), s(&["--consul-ca-file", &missing])].concat()).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--consul-ca-file") && out.contains(&missing), "{out}");

    let junk = w.file("junk.pem", "not a certificate\n");
    let (code, out) = w.reconcile(&[base.clone(), s(&["--tls-ca-file", &junk])].concat()).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--tls-ca-file") && out.contains(&junk) && out.contains("no PEM certificate"), "{out}");

    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["client"]);
    let cert = w.file("client.pem", &leaf.cert_pem);
    let (code, out) =
        w.reconcile(&[base.clone(), s(&["--consul-cert-file", &cert, "--consul-key-file", &junk])].concat()).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--consul-key-file") && out.contains(&junk), "{out}");

    // From the config file: the TOML key is named.
    let config = w.file("switchboard.toml", &format!("[tls.consul]\nca_file = {missing:?}\n"));
    let (code, out) = w.reconcile(&[base, s(&["--config", &config])].concat()).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("tls.consul.ca_file") && out.contains(&missing), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let w = world().await;
    let ca = Ca::new("test ca");
    let c = TlsProxy::start(target(&w.consul.url()), server_config(&ca.leaf(&["127.0.0.1"]), Some(&ca))).await;
    w.deploy("/shop/web", "web", 1);
    let ca_file = w.file("ca.pem", &ca.pem);
    let args = s(&["--marathon", w.marathon.url().as_str(), "--consul", &c.url(), "--consul-ca-file", &ca_file]);

    // Without a client certificate the server refuses the handshake.
    let (code, out) = w.reconcile(&args).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("client certificate") && out.contains("--consul-cert-file"), "{out}");
    assert!(!c.refused().is_empty());
    assert_eq!(w.registered("/shop/web"), 0);

    // A certificate from another CA is refused too.
    let other = Ca::new("other ca").leaf(&["switchboard"]);
    let (cert, key) = (w.file("other.pem", &other.cert_pem), w.file("other-key.pem", &other.key_pem));
    let (code, out) =
        w.reconcile(&[args.clone(), s(&["--tls-cert-file", &cert, "--tls-key-file", &key])].concat()).await;
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(w.registered("/shop/web"), 0);

    // With one signed by the CA the server trusts: registered.
    let leaf = ca.leaf(&["switchboard"]);
    let (cert, key) = (w.file("client.pem", &leaf.cert_pem), w.file("client-key.pem", &leaf.key_pem));
    let (code, out) = w.reconcile(&[args, s(&["--tls-cert-file", &cert, "--tls-key-file", &key])].concat()).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(w.registered("/shop/web"), 1);
}

/// The server moves to a new client CA; the daemon keeps running while its
/// client certificate and key files are rewritten with ones from the new CA,
/// and picks them up without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_certificate_is_picked_up_without_restart() {
    let w = world().await;
    let ca = Ca::new("server ca");
    let old_clients = Ca::new("client ca 1");
    let new_clients = Ca::new("client ca 2");
    let server = ca.leaf(&["127.0.0.1"]);
    let c = TlsProxy::start(target(&w.consul.url()), server_config(&server, Some(&old_clients))).await;
    let leaf = old_clients.leaf(&["switchboard"]);
    let ca_file = w.file("ca.pem", &ca.pem);
    let cert = w.file("client.pem", &leaf.cert_pem);
    let key = w.file("client-key.pem", &leaf.key_pem);
    let d = Daemon::start_with_env(
        &w.dir.path().join("data"),
        &s(&["--marathon", w.marathon.url().as_str(), "--consul", &c.url(), "--consul-ca-file", &ca_file]),
        &[("SWITCHBOARD_CONSUL_CERT_FILE", cert.as_str()), ("SWITCHBOARD_CONSUL_KEY_FILE", key.as_str())],
    );
    eventually("stream subscribed", WAIT, || w.marathon.subscribers() > 0).await;
    w.deploy("/shop/web", "web", 1);
    eventually("registered with the first certificate", WAIT, || w.registered("/shop/web") == 1).await;

    // The server now only accepts client certificates of the new CA.
    let refused_before = c.refused().len();
    c.set_config(server_config(&server, Some(&new_clients)));
    w.deploy("/shop/api", "api", 1);
    eventually("the old certificate is refused", WAIT, || c.refused().len() > refused_before).await;
    assert_eq!(w.registered("/shop/api"), 0);

    let fresh = new_clients.leaf(&["switchboard"]);
    std::fs::write(&key, &fresh.key_pem).expect("rotate key");
    std::fs::write(&cert, &fresh.cert_pem).expect("rotate cert");
    eventually("registered with the rotated certificate", WAIT, || w.registered("/shop/api") == 1).await;
    assert!(d.log().contains("tls files changed"), "no rotation logged");
}

/// The system trust store is consulted (here pointed at the test CA through
/// `SSL_CERT_FILE`, which the system-store loader honours, so nothing outside
/// the test's directory is read): no CA setting needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_in_the_system_trust_store_is_trusted() {
    let w = world().await;
    let ca = Ca::new("company ca");
    let c = TlsProxy::start(target(&w.consul.url()), server_config(&ca.leaf(&["127.0.0.1"]), None)).await;
    w.deploy("/shop/web", "web", 1);
    let store = w.file("system-store.pem", &ca.pem);
    let data = w.path("system-store-data");
    let out = tokio::task::spawn_blocking({
        let (marathon, consul) = (w.marathon.url().to_string(), c.url());
        move || {
            std::process::Command::new(common::BIN)
                .args(["reconcile", "--once", "--data-dir", &data, "--marathon", &marathon, "--consul", &consul])
                .env("SSL_CERT_FILE", &store)
                .env_remove("SSL_CERT_DIR")
                .env_remove("SWITCHBOARD_CONSUL_URL")
                .output()
                .expect("run switchboard")
        }
    })
    .await
    .expect("join");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(w.registered("/shop/web"), 1);
}

/// Kong's Admin API over TLS with its own CA setting, and Marathon's wrong
/// CA named in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_over_tls_and_marathon_errors_name_their_settings() {
    use switchboard::sim::kong::{KongSim, KongSimOptions};
    let w = world().await;
    let kong = KongSim::start(KongSimOptions::default()).await.expect("kong sim");
    let ca = Ca::new("kong ca");
    let server = ca.leaf(&["127.0.0.1"]);
    let k = TlsProxy::start(target(kong.url().as_str()), server_config(&server, None)).await;
    let events = w.marathon.model().deploy(
        json!({"id": "/shop/web", "labels": {"kong.hosts": "shop.example.com"}, "portDefinitions": [{"port": 0}]}),
        1,
    );
    w.marathon.emit(&events);
    let ca_file = w.file("kong-ca.pem", &ca.pem);
    let (code, out) = w
        .reconcile(&s(&["--marathon", w.marathon.url().as_str(), "--kong", &k.url(), "--kong-ca-file", &ca_file]))
        .await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(kong.services().as_array().map(Vec::len), Some(1), "{}", kong.services());

    // Marathon behind TLS with a CA nobody configured.
    let m = TlsProxy::start(target(w.marathon.url().as_str()), server_config(&server, None)).await;
    let (code, out) = w.reconcile(&s(&["--marathon", &m.url(), "--kong", &k.url(), "--kong-ca-file", &ca_file])).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("certificate not trusted") && out.contains("--marathon-ca-file"), "{out}");
}

/// The server moves to a certificate from a new CA; rewriting the CA file
/// is enough, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_ca_file_is_picked_up_without_restart() {
    let w = world().await;
    let (old_ca, new_ca) = (Ca::new("ca 2025"), Ca::new("ca 2026"));
    let c = TlsProxy::start(target(&w.consul.url()), server_config(&old_ca.leaf(&["127.0.0.1"]), None)).await;
    let ca_file = w.file("ca.pem", &old_ca.pem);
    let d = Daemon::start(
        &w.dir.path().join("data"),
        &s(&["--marathon", w.marathon.url().as_str(), "--consul", &c.url(), "--consul-ca-file", &ca_file]),
    );
    eventually("stream subscribed", WAIT, || w.marathon.subscribers() > 0).await;
    w.deploy("/shop/web", "web", 1);
    eventually("registered under the old CA", WAIT, || w.registered("/shop/web") == 1).await;

    c.set_config(server_config(&new_ca.leaf(&["127.0.0.1"]), None));
    w.deploy("/shop/api", "api", 1);
    eventually("the new server certificate is not trusted yet", WAIT, || {
        d.log().contains("certificate not trusted (set --consul-ca-file or --tls-ca-file)")
    })
    .await;
    assert_eq!(w.registered("/shop/api"), 0);

    std::fs::write(&ca_file, &new_ca.pem).expect("rotate ca");
    eventually("registered once the CA file holds the new CA", WAIT, || w.registered("/shop/api") == 1).await;
}
