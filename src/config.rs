//! Settings: flags, environment variables and the TOML file, merged (flag >
//! env > file > default) and validated into one `Config` before anything
//! starts.
//!
//! Invariants:
//! - Every error names the setting at fault (`--consul` / `SWITCHBOARD_CONSUL_URL`
//!   / the TOML key) and says what was wrong, in one line.
//! - Secrets come only from the environment or from files named by the
//!   environment (`*_FILE`), never from argv or the TOML file, and `Config`'s
//!   `Debug` never shows them (`Secret`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::labels::StaticService;
use crate::secret::{Secret, SecretSource};
use crate::tls::{Endpoint, EndpointTls, Kind, TlsFile};

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    /// The flag / env var / key, e.g. "--consul (SWITCHBOARD_CONSUL_URL)".
    pub setting: String,
    pub reason: String,
}

fn bad(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_owned(), reason: reason.into() }
}

/// Settings shared by every subcommand, as given on the command line or in
/// the environment (clap reads both; the flag wins).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML file with any of the settings below (flags and env vars win).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Marathon endpoint (repeatable); any may redirect to the leader.
    #[arg(long = "marathon", value_name = "URL", env = "SWITCHBOARD_MARATHON_URL", value_delimiter = ',')]
    pub marathon: Vec<String>,
    /// Consul agent HTTP API; absent = Consul off.
    #[arg(long, value_name = "URL", env = "SWITCHBOARD_CONSUL_URL")]
    pub consul: Option<String>,
    /// Kong Admin API; absent = Kong off.
    #[arg(long, value_name = "URL", env = "SWITCHBOARD_KONG_URL")]
    pub kong: Option<String>,
    /// Vulcand API; absent = Vulcand off.
    #[arg(long, value_name = "URL", env = "SWITCHBOARD_VULCAND_URL")]
    pub vulcand: Option<String>,
    /// Directory of the sled store (default ./switchboard-data).
    #[arg(long, value_name = "DIR", env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Memory the store may use for its page cache, e.g. 16MiB (default 4MiB).
    #[arg(long, value_name = "SIZE", env = "SWITCHBOARD_STORE_CACHE")]
    pub store_cache: Option<String>,
    /// Full resync period, e.g. 5m; 0 disables (default 5m).
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_RESYNC_INTERVAL")]
    pub resync_interval: Option<String>,
    /// Status/metrics server address (default 127.0.0.1:9102).
    #[arg(long, value_name = "ADDR", env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<String>,
    /// Name of this Marathon cluster; ownership is per cluster (default "default").
    #[arg(long, value_name = "NAME", env = "SWITCHBOARD_CLUSTER")]
    pub cluster: Option<String>,
    /// Separator for derived service names: "-" (default) or ".".
    #[arg(long, value_name = "SEP", env = "SWITCHBOARD_NAME_SEPARATOR")]
    pub name_separator: Option<String>,
    /// How long an incomplete instance waits before its app spec is fetched (default 2s).
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_GRACE_PERIOD")]
    pub grace_period: Option<String>,
    /// A stream silent this long is dead: reconnect and resync (default 30s).
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Longest line of Marathon's event stream, e.g. 64MiB (default); a longer
    /// one is skipped, counted, and followed by a resync.
    #[arg(long, value_name = "SIZE", env = "SWITCHBOARD_STREAM_LINE_LIMIT")]
    pub stream_line_limit: Option<String>,
    /// How long tombstones of dead tasks are kept (default 1h).
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_TOMBSTONE_RETENTION")]
    pub tombstone_retention: Option<String>,
    /// Kong forwarding topology: one Kong service per app pointing here (e.g. Vulcand's listener).
    #[arg(long, value_name = "URL", env = "SWITCHBOARD_KONG_FORWARD_TO")]
    pub kong_forward_to: Option<String>,
    /// Header carrying SWITCHBOARD_KONG_TOKEN (default Kong-Admin-Token).
    #[arg(long, value_name = "NAME", env = "SWITCHBOARD_KONG_TOKEN_HEADER")]
    pub kong_token_header: Option<String>,
    /// Register Vulcand servers with this TTL and refresh them by heartbeat.
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_VULCAND_SERVER_TTL")]
    pub vulcand_server_ttl: Option<String>,
    /// Timeout of each HTTP request to Marathon and the backends (default 10s).
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// HA: replicas elect a leader on a Consul lock; only the leader writes.
    #[arg(long, env = "SWITCHBOARD_HA")]
    pub ha: bool,
    /// Consul agent holding the HA lock (default: --consul).
    #[arg(long, value_name = "URL", env = "SWITCHBOARD_HA_CONSUL_URL")]
    pub ha_consul: Option<String>,
    /// TTL of the HA session (default 10s).
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_HA_SESSION_TTL")]
    pub ha_session_ttl: Option<String>,
    /// Lock delay of the HA session: how long the lock stays closed after its holder is lost (default 15s).
    #[arg(long, value_name = "DUR", env = "SWITCHBOARD_HA_LOCK_DELAY")]
    pub ha_lock_delay: Option<String>,
    /// This replica's name in the HA session (default hostname-pid).
    #[arg(long, value_name = "NAME", env = "SWITCHBOARD_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// Where tasks are registered in Consul: `single` (default: everything at
    /// --consul) or `per-host` (at the Consul agent on each task's host).
    #[arg(long, value_name = "MODE", env = "SWITCHBOARD_CONSUL_AGENT_MODE")]
    pub consul_agent_mode: Option<String>,
    /// Port of the per-host Consul agents (default 8500).
    #[arg(long, value_name = "PORT", env = "SWITCHBOARD_CONSUL_AGENT_PORT")]
    pub consul_agent_port: Option<String>,
    /// Scheme of the per-host Consul agents: http (default) or https.
    #[arg(long, value_name = "SCHEME", env = "SWITCHBOARD_CONSUL_AGENT_SCHEME")]
    pub consul_agent_scheme: Option<String>,
    /// Ops in flight at once per backend, as `N` for all or
    /// `consul=N,kong=N,vulcand=N` (default consul=8,kong=16,vulcand=8).
    #[arg(long, value_name = "LIMITS", env = "SWITCHBOARD_BACKEND_CONCURRENCY")]
    pub backend_concurrency: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS files: global, and per endpoint (an endpoint's own setting wins).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM bundle of CAs trusted besides the system store and bundled roots (every endpoint).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (every endpoint).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle for Marathon (overrides --tls-ca-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_MARATHON_CA_FILE")]
    pub marathon_ca_file: Option<PathBuf>,
    /// Client certificate for Marathon (overrides --tls-cert-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_MARATHON_CERT_FILE")]
    pub marathon_cert_file: Option<PathBuf>,
    /// Client key for Marathon (overrides --tls-key-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_MARATHON_KEY_FILE")]
    pub marathon_key_file: Option<PathBuf>,
    /// CA bundle for Consul (overrides --tls-ca-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONSUL_CA_FILE")]
    pub consul_ca_file: Option<PathBuf>,
    /// Client certificate for Consul (overrides --tls-cert-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONSUL_CERT_FILE")]
    pub consul_cert_file: Option<PathBuf>,
    /// Client key for Consul (overrides --tls-key-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_CONSUL_KEY_FILE")]
    pub consul_key_file: Option<PathBuf>,
    /// CA bundle for Kong (overrides --tls-ca-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_KONG_CA_FILE")]
    pub kong_ca_file: Option<PathBuf>,
    /// Client certificate for Kong (overrides --tls-cert-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_KONG_CERT_FILE")]
    pub kong_cert_file: Option<PathBuf>,
    /// Client key for Kong (overrides --tls-key-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_KONG_KEY_FILE")]
    pub kong_key_file: Option<PathBuf>,
    /// CA bundle for Vulcand behind a TLS proxy (overrides --tls-ca-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_VULCAND_CA_FILE")]
    pub vulcand_ca_file: Option<PathBuf>,
    /// Client certificate for Vulcand (overrides --tls-cert-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_VULCAND_CERT_FILE")]
    pub vulcand_cert_file: Option<PathBuf>,
    /// Client key for Vulcand (overrides --tls-key-file).
    #[arg(long, value_name = "FILE", env = "SWITCHBOARD_VULCAND_KEY_FILE")]
    pub vulcand_key_file: Option<PathBuf>,
}

impl TlsArgs {
    /// (ca, cert, key) of `endpoint`, or the global ones for `None`.
    fn files(&self, endpoint: Option<Endpoint>) -> [&Option<PathBuf>; 3] {
        match endpoint {
            None => [&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file],
            Some(Endpoint::Marathon) => [&self.marathon_ca_file, &self.marathon_cert_file, &self.marathon_key_file],
            Some(Endpoint::Consul) => [&self.consul_ca_file, &self.consul_cert_file, &self.consul_key_file],
            Some(Endpoint::Kong) => [&self.kong_ca_file, &self.kong_cert_file, &self.kong_key_file],
            Some(Endpoint::Vulcand) => [&self.vulcand_ca_file, &self.vulcand_cert_file, &self.vulcand_key_file],
        }
    }
}

/// `[tls]` in the TOML file: global files, and a table per endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFileConfig {
    #[serde(flatten)]
    pub files: TlsFilesToml,
    pub marathon: Option<TlsFilesToml>,
    pub consul: Option<TlsFilesToml>,
    pub kong: Option<TlsFilesToml>,
    pub vulcand: Option<TlsFilesToml>,
}

/// `ca_file`, `cert_file`, `key_file` of `[tls]` or `[tls.<endpoint>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFilesToml {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsFileConfig {
    fn files(&self, endpoint: Option<Endpoint>) -> [Option<PathBuf>; 3] {
        let t = match endpoint {
            None => Some(&self.files),
            Some(Endpoint::Marathon) => self.marathon.as_ref(),
            Some(Endpoint::Consul) => self.consul.as_ref(),
            Some(Endpoint::Kong) => self.kong.as_ref(),
            Some(Endpoint::Vulcand) => self.vulcand.as_ref(),
        };
        match t {
            Some(t) => [t.ca_file.clone(), t.cert_file.clone(), t.key_file.clone()],
            None => [None, None, None],
        }
    }
}

/// The TOML file, as written. Unknown keys are an error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub marathon: Option<Vec<String>>,
    pub consul: Option<String>,
    pub kong: Option<String>,
    pub vulcand: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub store_cache: Option<String>,
    pub resync_interval: Option<String>,
    pub listen: Option<String>,
    pub cluster: Option<String>,
    pub name_separator: Option<String>,
    pub grace_period: Option<String>,
    pub idle_timeout: Option<String>,
    pub stream_line_limit: Option<String>,
    pub tombstone_retention: Option<String>,
    pub kong_forward_to: Option<String>,
    pub kong_token_header: Option<String>,
    pub vulcand_server_ttl: Option<String>,
    pub request_timeout: Option<String>,
    pub ha: Option<bool>,
    pub ha_consul: Option<String>,
    pub ha_session_ttl: Option<String>,
    pub ha_lock_delay: Option<String>,
    pub replica_name: Option<String>,
    pub backend_concurrency: Option<String>,
    pub consul_agent_mode: Option<String>,
    /// `8501` or `"8501"`.
    #[serde(default, deserialize_with = "number_or_string")]
    pub consul_agent_port: Option<String>,
    pub consul_agent_scheme: Option<String>,
    /// Per-host mode: Consul agent URL per Marathon host (overrides the
    /// scheme://host:port rule).
    #[serde(default)]
    pub consul_agents: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub tls: TlsFileConfig,
    #[serde(default, rename = "static")]
    pub statics: Vec<StaticEntry>,
}

/// A TOML integer or string, as the string the flag would carry.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|r| match r {
        Raw::Number(n) => n.to_string(),
        Raw::Text(t) => t,
    }))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticEntry {
    pub name: String,
    pub instances: Vec<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl FileConfig {
    /// Parses and validates a TOML config file's text: unknown keys, bad
    /// URLs, durations and static services are errors naming the key.
    pub fn from_toml_str(text: &str) -> Result<FileConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            bad("in config file", msg)
        })?;
        let args = CommonArgs::default();
        Config::merge(&args, &file, &Env::none())?;
        Ok(file)
    }

    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("--config (SWITCHBOARD_CONFIG)", format!("cannot read {}: {e}", path.display())))?;
        FileConfig::from_toml_str(&text)
            .map_err(|e| ConfigError { setting: format!("{} in {}", e.setting, path.display()), reason: e.reason })
    }
}

/// Secrets read from the environment (or files it names).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub consul_token: Option<Secret>,
    pub kong_token: Option<Secret>,
    pub marathon_auth: Option<Secret>,
}

impl Env {
    pub fn none() -> Env {
        Env::default()
    }

    /// Reads `SWITCHBOARD_CONSUL_TOKEN`, `SWITCHBOARD_KONG_TOKEN`,
    /// `SWITCHBOARD_MARATHON_AUTH`, or their `*_FILE` variants.
    pub fn from_process() -> Result<Env, ConfigError> {
        fn read(name: &str) -> Result<Option<Secret>, ConfigError> {
            if let Ok(v) = std::env::var(name)
                && !v.is_empty()
            {
                return SecretSource::Env(name.to_owned()).read().map(Some).map_err(|e| bad(name, e));
            }
            let file_var = format!("{name}_FILE");
            if let Ok(path) = std::env::var(&file_var)
                && !path.is_empty()
            {
                let src = SecretSource::File { var: file_var.clone(), path: path.into() };
                return src.read().map(Some).map_err(|e| bad(&file_var, e));
            }
            Ok(None)
        }
        Ok(Env {
            consul_token: read("SWITCHBOARD_CONSUL_TOKEN")?,
            kong_token: read("SWITCHBOARD_KONG_TOKEN")?,
            marathon_auth: read("SWITCHBOARD_MARATHON_AUTH")?,
        })
    }
}

/// Validated settings, ready to build components from.
#[derive(Debug, Clone)]
pub struct Config {
    pub marathon: Vec<Url>,
    pub marathon_auth: Option<Secret>,
    pub consul: Option<Url>,
    pub consul_token: Option<Secret>,
    pub kong: Option<Url>,
    pub kong_token: Option<Secret>,
    pub kong_token_header: String,
    pub kong_forward_to: Option<Url>,
    pub vulcand: Option<Url>,
    pub vulcand_server_ttl: Option<Duration>,
    pub data_dir: PathBuf,
    /// sled's page cache in bytes (`--store-cache`).
    pub store_cache: u64,
    /// `None`: no periodic resync.
    pub resync_interval: Option<Duration>,
    pub listen: SocketAddr,
    pub cluster: String,
    pub name_separator: char,
    pub grace_period: Duration,
    pub idle_timeout: Duration,
    /// Longest line of the event stream, in bytes.
    pub stream_line_limit: usize,
    pub tombstone_retention: Duration,
    pub request_timeout: Duration,
    /// Ops in flight at once, by backend name.
    pub backend_concurrency: BTreeMap<&'static str, usize>,
    pub statics: Vec<StaticService>,
    /// `None` without `--ha`: this is the only writer.
    pub ha: Option<HaSettings>,
    /// Where this cluster's HA lock lives (`--ha-consul`, else `--consul`),
    /// with or without `--ha`: `reconcile --once` without `--ha` reads it to
    /// find a daemon leading the cluster. `None`: no Consul, no lock to check.
    pub ha_lock_consul: Option<(Url, &'static str)>,
    /// Where Consul registrations go (`--consul-agent-mode`).
    pub consul_agents: ConsulAgents,
    /// TLS files in force per endpoint (the endpoint's own, else global).
    pub tls: TlsConfig,
}

/// `--consul-agent-mode` and its companions (the Consul backend's own type).
pub use crate::backends::consul::Agents as ConsulAgents;

/// The TLS settings of every endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub marathon: EndpointTls,
    pub consul: EndpointTls,
    pub kong: EndpointTls,
    pub vulcand: EndpointTls,
}

impl TlsConfig {
    pub fn get(&self, endpoint: Endpoint) -> &EndpointTls {
        match endpoint {
            Endpoint::Marathon => &self.marathon,
            Endpoint::Consul => &self.consul,
            Endpoint::Kong => &self.kong,
            Endpoint::Vulcand => &self.vulcand,
        }
    }

    /// Endpoint setting > global setting, each flag/env > file.
    fn merge(args: &TlsArgs, file: &TlsFileConfig) -> TlsConfig {
        let one = |endpoint: Endpoint| {
            let kinds = [Kind::Ca, Kind::Cert, Kind::Key];
            let keys = ["ca_file", "cert_file", "key_file"];
            let own_args = args.files(Some(endpoint));
            let own_file = file.files(Some(endpoint));
            let global_args = args.files(None);
            let global_file = file.files(None);
            let mut out: [Option<TlsFile>; 3] = [None, None, None];
            for i in 0..3 {
                let env = |e: Option<Endpoint>| {
                    format!("SWITCHBOARD_{}_{}", e.map_or("TLS", Endpoint::name).to_uppercase(), keys[i].to_uppercase())
                };
                let flagged = |e: Option<Endpoint>| format!("{} ({})", crate::tls::flag(e, kinds[i]), env(e));
                out[i] = if let Some(p) = own_args[i] {
                    Some(TlsFile { path: p.clone(), setting: flagged(Some(endpoint)) })
                } else if let Some(p) = &own_file[i] {
                    Some(TlsFile {
                        path: p.clone(),
                        setting: format!("`tls.{}.{}` (config file)", endpoint.name(), keys[i]),
                    })
                } else if let Some(p) = global_args[i] {
                    Some(TlsFile { path: p.clone(), setting: flagged(None) })
                } else {
                    global_file[i]
                        .as_ref()
                        .map(|p| TlsFile { path: p.clone(), setting: format!("`tls.{}` (config file)", keys[i]) })
                };
            }
            let [ca, cert, key] = out;
            EndpointTls { endpoint, ca, cert, key }
        };
        TlsConfig {
            marathon: one(Endpoint::Marathon),
            consul: one(Endpoint::Consul),
            kong: one(Endpoint::Kong),
            vulcand: one(Endpoint::Vulcand),
        }
    }
}

pub use crate::ha::settings::HaSettings;

impl Config {
    /// What the HA elector needs of the config; `None` without `--ha`.
    pub fn ha_wiring(&self) -> Option<crate::ha::settings::Wiring> {
        self.ha.clone().map(|settings| crate::ha::settings::Wiring {
            settings,
            cluster: self.cluster.clone(),
            request_timeout: self.request_timeout,
            consul_token: self.consul_token.clone(),
            tls: self.tls.consul.clone(),
        })
    }
}

/// Ops in flight at once per backend unless `--backend-concurrency` says
/// otherwise: each kind's own default.
pub fn default_concurrency() -> BTreeMap<&'static str, usize> {
    crate::backends::KINDS.iter().map(|k| (k.name, k.concurrency)).collect()
}

/// `N` (every backend) or `consul=N,kong=N,vulcand=N` (the rest keep their
/// default); each N from 1 to 256.
fn parse_concurrency(setting: &str, raw: &str) -> Result<BTreeMap<&'static str, usize>, ConfigError> {
    let mut out = default_concurrency();
    let number = |v: &str| -> Result<usize, ConfigError> {
        match v.trim().parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => Ok(n),
            _ => Err(bad(setting, format!("{v:?} is not a number from 1 to 256"))),
        }
    };
    let raw = raw.trim();
    if !raw.contains('=') {
        let n = number(raw)?;
        out.values_mut().for_each(|v| *v = n);
        return Ok(out);
    }
    for pair in raw.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, n) = pair.split_once('=').ok_or_else(|| bad(setting, format!("{pair:?} is not backend=N")))?;
        let Some(kind) = crate::backends::kind(name.trim()) else {
            let names: Vec<&str> = crate::backends::KINDS.iter().map(|k| k.name).collect();
            return Err(bad(setting, format!("{:?} is not a backend ({})", name.trim(), names.join(", "))));
        };
        out.insert(kind.name, number(n)?);
    }
    Ok(out)
}

const MARATHON: &str = "--marathon (SWITCHBOARD_MARATHON_URL)";

fn parse_url(setting: &str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| bad(setting, format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(setting, format!("{raw:?}: scheme must be http or https")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(setting, format!("{raw:?} has no host")));
    }
    Ok(url)
}

/// A size such as `64MiB`, `16MB` or `1048576` (bytes); at least 1 KiB, so
/// Marathon's ordinary events always fit.
fn parse_size(setting: &str, raw: &str) -> Result<usize, ConfigError> {
    let size: bytesize::ByteSize =
        raw.trim().parse().map_err(|_| bad(setting, format!("{raw:?} is not a size like 64MiB")))?;
    let bytes = usize::try_from(size.as_u64()).map_err(|_| bad(setting, format!("{raw:?} is too large")))?;
    if bytes < 1024 {
        return Err(bad(setting, format!("{raw:?} is below 1KiB")));
    }
    Ok(bytes)
}

/// Parses `30s`, `5m`, `1h30m`, `250ms`; a bare `0` is zero.
pub fn parse_duration(setting: &str, raw: &str) -> Result<Duration, ConfigError> {
    let raw = raw.trim();
    if raw == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(raw).map_err(|e| bad(setting, format!("{raw:?} is not a duration like 30s or 5m: {e}")))
}

fn setting(flag: &str, env: &str, key: &str, from_file: bool) -> String {
    if from_file { format!("`{key}` (config file)") } else { format!("{flag} ({env})") }
}

impl Config {
    /// Merges flags/env (`args`), the config file and secrets, then validates.
    pub fn merge(args: &CommonArgs, file: &FileConfig, env: &Env) -> Result<Config, ConfigError> {
        // Pick the value and remember where it came from, for error messages.
        macro_rules! pick {
            ($field:ident, $flag:expr, $env:expr) => {{
                match (&args.$field, &file.$field) {
                    (Some(v), _) => Some((v.clone(), setting($flag, $env, stringify!($field), false))),
                    (None, Some(v)) => Some((v.clone(), setting($flag, $env, stringify!($field), true))),
                    (None, None) => None,
                }
            }};
        }
        let url_opt = |v: Option<(String, String)>| -> Result<Option<Url>, ConfigError> {
            v.map(|(raw, s)| parse_url(&s, &raw)).transpose()
        };
        let dur = |v: Option<(String, String)>, default: Duration| -> Result<Duration, ConfigError> {
            v.map(|(raw, s)| parse_duration(&s, &raw)).transpose().map(|d| d.unwrap_or(default))
        };

        let (marathon_raw, marathon_setting) = if !args.marathon.is_empty() {
            (args.marathon.clone(), MARATHON.to_owned())
        } else {
            (file.marathon.clone().unwrap_or_default(), "`marathon` (config file)".to_owned())
        };
        let marathon = marathon_raw
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|raw| parse_url(&marathon_setting, raw))
            .collect::<Result<Vec<_>, _>>()?;

        let consul = url_opt(pick!(consul, "--consul", "SWITCHBOARD_CONSUL_URL"))?;
        let kong = url_opt(pick!(kong, "--kong", "SWITCHBOARD_KONG_URL"))?;
        let vulcand = url_opt(pick!(vulcand, "--vulcand", "SWITCHBOARD_VULCAND_URL"))?;
        let kong_forward_to = url_opt(pick!(kong_forward_to, "--kong-forward-to", "SWITCHBOARD_KONG_FORWARD_TO"))?;

        let resync =
            dur(pick!(resync_interval, "--resync-interval", "SWITCHBOARD_RESYNC_INTERVAL"), Duration::from_secs(300))?;
        let grace_period =
            dur(pick!(grace_period, "--grace-period", "SWITCHBOARD_GRACE_PERIOD"), Duration::from_secs(2))?;
        let idle_setting = pick!(idle_timeout, "--idle-timeout", "SWITCHBOARD_IDLE_TIMEOUT");
        let idle_name = idle_setting.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        let idle_timeout = dur(idle_setting, Duration::from_secs(30))?;
        if idle_timeout.is_zero() {
            return Err(bad(&idle_name, "must be more than 0"));
        }
        let stream_line_limit = match pick!(stream_line_limit, "--stream-line-limit", "SWITCHBOARD_STREAM_LINE_LIMIT") {
            None => crate::marathon::stream::DEFAULT_MAX_LINE,
            Some((raw, setting)) => parse_size(&setting, &raw)?,
        };
        let store_cache = match pick!(store_cache, "--store-cache", "SWITCHBOARD_STORE_CACHE") {
            None => crate::store::DEFAULT_CACHE_BYTES,
            Some((raw, setting)) => parse_size(&setting, &raw)? as u64,
        };
        let tombstone_retention = dur(
            pick!(tombstone_retention, "--tombstone-retention", "SWITCHBOARD_TOMBSTONE_RETENTION"),
            Duration::from_secs(3600),
        )?;
        let timeout_setting = pick!(request_timeout, "--request-timeout", "SWITCHBOARD_REQUEST_TIMEOUT");
        let timeout_name = timeout_setting.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        let request_timeout = dur(timeout_setting, Duration::from_secs(10))?;
        if request_timeout.is_zero() {
            return Err(bad(&timeout_name, "must be more than 0"));
        }
        let backend_concurrency =
            match pick!(backend_concurrency, "--backend-concurrency", "SWITCHBOARD_BACKEND_CONCURRENCY") {
                None => default_concurrency(),
                Some((raw, setting)) => parse_concurrency(&setting, &raw)?,
            };
        let ttl_setting = pick!(vulcand_server_ttl, "--vulcand-server-ttl", "SWITCHBOARD_VULCAND_SERVER_TTL");
        let ttl_name = ttl_setting.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        let vulcand_server_ttl =
            ttl_setting.map(|(raw, s)| parse_duration(&s, &raw)).transpose()?.filter(|d| !d.is_zero());
        if let Some(ttl) = vulcand_server_ttl
            && ttl < Duration::from_secs(1)
        {
            return Err(bad(&ttl_name, "must be at least 1s"));
        }

        let listen = match pick!(listen, "--listen", "SWITCHBOARD_LISTEN") {
            Some((raw, s)) => raw.trim().parse().map_err(|e| bad(&s, format!("{raw:?} is not ADDR:PORT: {e}")))?,
            None => SocketAddr::from(([127, 0, 0, 1], 9102)),
        };
        let cluster = match pick!(cluster, "--cluster", "SWITCHBOARD_CLUSTER") {
            Some((raw, s)) => {
                let ok = !raw.is_empty()
                    && raw.len() <= 64
                    && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    return Err(bad(&s, format!("{raw:?}: use 1-64 characters of [A-Za-z0-9_-]")));
                }
                raw
            }
            None => "default".to_owned(),
        };
        let name_separator = match pick!(name_separator, "--name-separator", "SWITCHBOARD_NAME_SEPARATOR") {
            Some((raw, s)) => match raw.as_str() {
                "-" => '-',
                "." => '.',
                _ => return Err(bad(&s, format!("{raw:?}: must be \"-\" or \".\""))),
            },
            None => '-',
        };
        let kong_token_header = match pick!(kong_token_header, "--kong-token-header", "SWITCHBOARD_KONG_TOKEN_HEADER") {
            Some((raw, s)) => {
                if raw.is_empty() || !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(bad(&s, format!("{raw:?} is not an HTTP header name")));
                }
                raw
            }
            None => "Kong-Admin-Token".to_owned(),
        };
        let data_dir =
            args.data_dir.clone().or_else(|| file.data_dir.clone()).unwrap_or_else(|| "./switchboard-data".into());

        let consul_agents = match pick!(consul_agent_mode, "--consul-agent-mode", "SWITCHBOARD_CONSUL_AGENT_MODE") {
            None => ConsulAgents::Single,
            Some((raw, s)) => match raw.trim() {
                "single" => ConsulAgents::Single,
                "per-host" => {
                    let scheme =
                        match pick!(consul_agent_scheme, "--consul-agent-scheme", "SWITCHBOARD_CONSUL_AGENT_SCHEME") {
                            None => "http".to_owned(),
                            Some((raw, s)) => match raw.trim() {
                                "http" | "https" => raw.trim().to_owned(),
                                _ => return Err(bad(&s, format!("{raw:?}: must be http or https"))),
                            },
                        };
                    let port = match pick!(consul_agent_port, "--consul-agent-port", "SWITCHBOARD_CONSUL_AGENT_PORT") {
                        None => 8500,
                        Some((raw, s)) => match raw.trim().parse::<u16>() {
                            Ok(p) if p > 0 => p,
                            _ => return Err(bad(&s, format!("{raw:?} is not a port (1-65535)"))),
                        },
                    };
                    let mut map = std::collections::BTreeMap::new();
                    for (host, raw) in &file.consul_agents {
                        let url = parse_url(&format!("`consul_agents.{host}` (config file)"), raw)?;
                        map.insert(host.clone(), url);
                    }
                    ConsulAgents::PerHost { scheme, port, map }
                }
                _ => return Err(bad(&s, format!("{raw:?}: must be single or per-host"))),
            },
        };
        if consul_agents == ConsulAgents::Single && !file.consul_agents.is_empty() {
            return Err(bad(
                "`consul_agents` (config file)",
                "only used with consul_agent_mode = \"per-host\" (--consul-agent-mode per-host)",
            ));
        }
        let tls = TlsConfig::merge(&args.tls, &file.tls);

        let mut statics = Vec::new();
        for (i, s) in file.statics.iter().enumerate() {
            let svc = StaticService { name: s.name.clone(), instances: s.instances.clone(), labels: s.labels.clone() };
            crate::labels::static_registrations(&svc, &crate::labels::LabelOptions { separator: name_separator })
                .map_err(|e| bad(&format!("`static[{i}]` ({})", s.name), format!("{}: {}", e.label, e.reason)))?;
            statics.push(svc);
        }

        let ha_on = args.ha || file.ha.unwrap_or(false);
        let ha_consul = url_opt(pick!(ha_consul, "--ha-consul", "SWITCHBOARD_HA_CONSUL_URL"))?;
        let dur_named = |v: Option<(String, String)>| -> Result<Option<(Duration, String)>, ConfigError> {
            v.map(|(raw, s)| parse_duration(&s, &raw).map(|d| (d, s))).transpose()
        };
        let ha_lock_consul = match (&ha_consul, &consul) {
            (Some(u), _) => Some((u.clone(), "--ha-consul")),
            (None, Some(u)) => Some((u.clone(), "--consul")),
            (None, None) => None,
        };
        let ha = HaSettings::merge(
            ha_on,
            ha_consul,
            consul.as_ref(),
            dur_named(pick!(ha_session_ttl, "--ha-session-ttl", "SWITCHBOARD_HA_SESSION_TTL"))?,
            dur_named(pick!(ha_lock_delay, "--ha-lock-delay", "SWITCHBOARD_HA_LOCK_DELAY"))?,
            pick!(replica_name, "--replica-name", "SWITCHBOARD_REPLICA_NAME"),
            request_timeout,
        )
        .map_err(|e| bad(&e.setting, e.reason))?;

        Ok(Config {
            marathon,
            marathon_auth: env.marathon_auth.clone(),
            consul,
            consul_token: env.consul_token.clone(),
            kong,
            kong_token: env.kong_token.clone(),
            kong_token_header,
            kong_forward_to,
            vulcand,
            vulcand_server_ttl,
            data_dir,
            store_cache,
            resync_interval: (!resync.is_zero()).then_some(resync),
            listen,
            cluster,
            name_separator,
            grace_period,
            idle_timeout,
            stream_line_limit,
            tombstone_retention,
            request_timeout,
            backend_concurrency,
            statics,
            ha,
            ha_lock_consul,
            consul_agents,
            tls,
        })
    }

    /// Reads the file named by `--config` (if any) and the environment, and merges.
    pub fn load(args: &CommonArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Config::merge(args, &file, &Env::from_process()?)
    }

    /// Checks what a daemon or a reconcile needs: at least one Marathon URL,
    /// a data dir that can be created and written, `--consul` when agents
    /// are per host, and TLS files that can be read and parsed.
    pub fn require_runnable(&self) -> Result<(), ConfigError> {
        if self.marathon.is_empty() {
            return Err(bad(MARATHON, "at least one Marathon URL is required"));
        }
        if self.consul.is_none() && self.consul_agents != ConsulAgents::Single {
            return Err(bad(
                "--consul-agent-mode (SWITCHBOARD_CONSUL_AGENT_MODE)",
                "per-host needs --consul too: its catalog lists what Switchboard registered on every host",
            ));
        }
        let used = [
            (Endpoint::Marathon, true),
            (Endpoint::Consul, self.consul.is_some()),
            (Endpoint::Kong, self.kong.is_some()),
            (Endpoint::Vulcand, self.vulcand.is_some()),
        ];
        for (endpoint, on) in used {
            if on {
                self.tls.get(endpoint).check().map_err(|e| ConfigError { setting: e.setting(), reason: e.reason() })?;
            }
        }
        check_writable(&self.data_dir)
    }
}

fn check_writable(dir: &Path) -> Result<(), ConfigError> {
    const S: &str = "--data-dir (SWITCHBOARD_DATA_DIR)";
    std::fs::create_dir_all(dir).map_err(|e| bad(S, format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(".switchboard-write-test");
    std::fs::write(&probe, b"ok").map_err(|e| bad(S, format!("{} is not writable: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(args: CommonArgs, toml: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(toml).unwrap();
        Config::merge(&args, &file, &Env::none())
    }

    #[test]
    fn defaults() {
        let c = merge(CommonArgs::default(), "").unwrap();
        assert_eq!(c.resync_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.listen.to_string(), "127.0.0.1:9102");
        assert_eq!(c.cluster, "default");
        assert_eq!(c.grace_period, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert!(c.consul.is_none());
    }

    #[test]
    fn flag_wins_over_file() {
        let args = CommonArgs { consul: Some("http://127.0.0.1:1".into()), ..Default::default() };
        let c = merge(args, "consul = \"http://127.0.0.1:2\"\nresync_interval = \"0\"").unwrap();
        assert_eq!(c.consul.unwrap().as_str(), "http://127.0.0.1:1/");
        assert_eq!(c.resync_interval, None);
    }

    #[test]
    fn errors_name_the_setting() {
        let e = merge(CommonArgs { consul: Some("not a url".into()), ..Default::default() }, "").unwrap_err();
        assert!(e.to_string().contains("--consul (SWITCHBOARD_CONSUL_URL)"), "{e}");
        let e = merge(CommonArgs::default(), "resync_interval = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("`resync_interval` (config file)"), "{e}");
        let e = FileConfig::from_toml_str("consul_url = \"http://x\"").unwrap_err();
        assert!(e.to_string().contains("consul_url"), "{e}");
        let e = merge(CommonArgs { name_separator: Some("_".into()), ..Default::default() }, "").unwrap_err();
        assert!(e.to_string().contains("--name-separator"), "{e}");
        let e = FileConfig::from_toml_str("[[static]]\nname = \"m\"\ninstances = [\"nope\"]\n").unwrap_err();
        assert!(e.to_string().contains("static[0]"), "{e}");
    }

    #[test]
    fn static_services_load() {
        let f = FileConfig::from_toml_str(
            "[[static]]\nname = \"marathon\"\ninstances = [\"10.0.12.10:8080\"]\nlabels = { consul = \"marathon\", \"kong.hosts\" = \"marathon.service.consul\" }\n",
        )
        .unwrap();
        assert_eq!(f.statics.len(), 1);
    }

    #[test]
    fn ha_settings() {
        let c = merge(CommonArgs::default(), "").unwrap();
        assert_eq!(c.ha, None);
        let ha = |args: CommonArgs, toml: &str| merge(CommonArgs { ha: true, ..args }, toml);
        let e = ha(CommonArgs::default(), "").unwrap_err().to_string();
        assert!(
            e.contains("--ha-consul (SWITCHBOARD_HA_CONSUL_URL)") && e.contains("--consul (SWITCHBOARD_CONSUL_URL)"),
            "{e}"
        );
        let c = ha(CommonArgs { consul: Some("http://c:8500".into()), ..Default::default() }, "").unwrap();
        let s = c.ha.unwrap();
        assert_eq!(s.consul.as_str(), "http://c:8500/");
        assert_eq!((s.session_ttl, s.lock_delay), (Duration::from_secs(10), Duration::from_secs(15)));
        let c = merge(CommonArgs::default(), "ha = true\nha_consul = \"http://l:8500\"\nconsul = \"http://c:8500\"\nha_session_ttl = \"1s\"\nha_lock_delay = \"1200ms\"\nrequest_timeout = \"800ms\"\nreplica_name = \"a\"").unwrap();
        let s = c.ha.unwrap();
        assert_eq!(s.consul.as_str(), "http://l:8500/");
        assert_eq!(s.replica_name.as_deref(), Some("a"));
        // The lock delay must outlast the fencing margin, and cover a request in flight.
        let e = merge(
            CommonArgs::default(),
            "ha = true\nconsul = \"http://c\"\nha_session_ttl = \"3s\"\nha_lock_delay = \"1s\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("`ha_lock_delay` (config file)"), "{e}");
        let e = ha(
            CommonArgs {
                consul: Some("http://c".into()),
                ha_session_ttl: Some("3s".into()),
                ha_lock_delay: Some("2s".into()),
                ..Default::default()
            },
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("--ha-lock-delay") && e.to_string().contains("--request-timeout"), "{e}");
        let e = ha(
            CommonArgs { consul: Some("http://c".into()), ha_session_ttl: Some("100ms".into()), ..Default::default() },
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("--ha-session-ttl"), "{e}");
        let e = ha(
            CommonArgs { consul: Some("http://c".into()), replica_name: Some("a b".into()), ..Default::default() },
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("--replica-name"), "{e}");
    }

    #[test]
    fn tls_endpoint_setting_wins_over_global_and_flag_over_file() {
        let args = CommonArgs {
            tls: TlsArgs {
                tls_ca_file: Some("/flag/global-ca.pem".into()),
                consul_cert_file: Some("/flag/consul-cert.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let toml = "[tls]\nca_file = \"/file/ca.pem\"\nkey_file = \"/file/key.pem\"\n[tls.kong]\nca_file = \"/file/kong-ca.pem\"\n";
        let c = merge(args, toml).unwrap();
        let consul = &c.tls.consul;
        assert_eq!(consul.ca.as_ref().unwrap().path, PathBuf::from("/flag/global-ca.pem"));
        assert_eq!(consul.ca.as_ref().unwrap().setting, "--tls-ca-file (SWITCHBOARD_TLS_CA_FILE)");
        assert_eq!(consul.cert.as_ref().unwrap().setting, "--consul-cert-file (SWITCHBOARD_CONSUL_CERT_FILE)");
        assert_eq!(consul.key.as_ref().unwrap().setting, "`tls.key_file` (config file)");
        let kong = &c.tls.kong;
        assert_eq!(kong.ca.as_ref().unwrap().path, PathBuf::from("/file/kong-ca.pem"));
        assert_eq!(kong.ca.as_ref().unwrap().setting, "`tls.kong.ca_file` (config file)");
        assert_eq!(c.tls.marathon.endpoint, Endpoint::Marathon);
        let e = FileConfig::from_toml_str("[tls.consul]\ncafile = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("cafile"), "{e}");
    }

    #[test]
    fn consul_agent_mode() {
        let c = merge(CommonArgs::default(), "").unwrap();
        assert_eq!(c.consul_agents, ConsulAgents::Single);
        let args = CommonArgs { consul_agent_mode: Some("per-host".into()), ..Default::default() };
        let c = merge(args, "consul_agent_port = 8501\n[consul_agents]\n\"10.0.0.1\" = \"https://a:8501\"\n").unwrap();
        let ConsulAgents::PerHost { scheme, port, map } = c.consul_agents else { panic!("not per-host") };
        assert_eq!((scheme.as_str(), port), ("http", 8501));
        assert_eq!(map["10.0.0.1"].as_str(), "https://a:8501/");

        let f: FileConfig = toml::from_str("consul_agent_port = \"8502\"").unwrap();
        assert_eq!(f.consul_agent_port.as_deref(), Some("8502"));
        let e = merge(CommonArgs { consul_agent_mode: Some("each".into()), ..Default::default() }, "").unwrap_err();
        assert!(e.to_string().contains("--consul-agent-mode (SWITCHBOARD_CONSUL_AGENT_MODE)"), "{e}");
        let e = merge(CommonArgs::default(), "consul_agent_mode = \"per-host\"\nconsul_agent_scheme = \"ftp\"")
            .unwrap_err();
        assert!(e.to_string().contains("`consul_agent_scheme` (config file)"), "{e}");
        let e = merge(CommonArgs::default(), "consul_agent_mode = \"per-host\"\n[consul_agents]\nh = \"nope\"")
            .unwrap_err();
        assert!(e.to_string().contains("consul_agents.h"), "{e}");
        let e = merge(CommonArgs::default(), "[consul_agents]\nh = \"http://h:8500\"").unwrap_err();
        assert!(e.to_string().contains("per-host"), "{e}");
    }

    #[test]
    fn secrets_never_in_debug() {
        let env = Env { consul_token: Some(Secret::new("s3cret")), ..Env::none() };
        let c = Config::merge(&CommonArgs::default(), &FileConfig::default(), &env).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
