//! Settings: flags, environment variables and the TOML file, merged (flag >
//! env > file > default) and validated into one `Config` before anything
//! starts.
//!
//! The common settings are here; each backend brings its own (flags, TOML
//! keys, credentials, TLS endpoint, validation: `backends/<x>/settings.rs`),
//! listed once in `backends::KINDS`. `Config::merge` merges the common ones,
//! then hands each kind its sources and keeps what it returns
//! (`backends::settings::Settings`), on or off; `daemon::build_backends`
//! builds the ones that are on.
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

use crate::backends::KINDS;
use crate::backends::settings::Sources;
use crate::labels::StaticService;
use crate::secret::Secret;
use crate::settings::{TlsFileConfig, TlsSources, bad, parse_size, parse_url};
use crate::tls::{Endpoint, EndpointTls};

pub use crate::backends::settings::Settings as BackendSettings;
pub use crate::settings::{ConfigError, Env, parse_duration};

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
    /// Ops in flight at once per backend, as `N` for all or
    /// `consul=N,kong=N,vulcand=N` (default consul=8,kong=16,vulcand=8).
    #[arg(long, value_name = "LIMITS", env = "SWITCHBOARD_BACKEND_CONCURRENCY")]
    pub backend_concurrency: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Each backend's own flags (`backends::settings::Args`), under a heading
    /// of its own in `--help`.
    #[command(flatten)]
    pub backends: crate::backends::settings::Args,
}

/// TLS files: global, and Marathon's (each backend's are among its flags).
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
}

/// The TOML file, as written: the common keys here (unknown keys are an
/// error), each backend's keys taken out for it (`Kind::file_keys`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub marathon: Option<Vec<String>>,
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
    pub request_timeout: Option<String>,
    pub ha: Option<bool>,
    pub ha_consul: Option<String>,
    pub ha_session_ttl: Option<String>,
    pub ha_lock_delay: Option<String>,
    pub replica_name: Option<String>,
    pub backend_concurrency: Option<String>,
    #[serde(default)]
    pub tls: TlsFileConfig,
    #[serde(default, rename = "static")]
    pub statics: Vec<StaticEntry>,
    /// Each backend's keys, by kind name (empty tables for kinds the file
    /// does not mention).
    #[serde(skip)]
    pub backends: BTreeMap<&'static str, toml::Table>,
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
    /// Parses a TOML config file's text: each backend takes its own keys
    /// out, and what is left must be common keys.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        let in_file = |e: toml::de::Error| bad("in config file", e.message());
        let mut table: toml::Table = toml::from_str(text).map_err(in_file)?;
        let mut backends = BTreeMap::new();
        for kind in KINDS {
            let own: toml::Table =
                (kind.file_keys)().iter().filter_map(|k| table.remove(*k).map(|v| ((*k).to_owned(), v))).collect();
            backends.insert(kind.name, own);
        }
        let mut file: FileConfig = toml::Value::Table(table).try_into().map_err(in_file)?;
        file.backends = backends;
        Ok(file)
    }

    /// Parses and validates a TOML config file's text: unknown keys, bad
    /// URLs, durations and static services are errors naming the key.
    pub fn from_toml_str(text: &str) -> Result<FileConfig, ConfigError> {
        let file = FileConfig::parse(text)?;
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

const MARATHON_AUTH: &str = "SWITCHBOARD_MARATHON_AUTH";

/// The environment variables secrets are read from (each also as `*_FILE`):
/// Marathon's and each backend's credentials.
pub fn secret_vars() -> Vec<&'static str> {
    KINDS.iter().filter_map(|k| k.credentials).chain([MARATHON_AUTH]).collect()
}

/// Validated settings, ready to build components from.
#[derive(Debug, Clone)]
pub struct Config {
    pub marathon: Vec<Url>,
    pub marathon_auth: Option<Secret>,
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
    /// Every kind's settings (`KINDS` order), on (`is_on`) or off.
    pub backends: Vec<BackendSettings>,
    /// Marathon's TLS files in force (a backend's are in its settings).
    pub tls: TlsConfig,
}

/// Marathon's TLS settings (its own, else global).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub marathon: EndpointTls,
}

pub use crate::ha::settings::HaSettings;

/// The Consul backend's name: the HA lock lives on Consul.
const CONSUL: &str = crate::backends::consul::KIND.name;

impl Config {
    /// The settings of the kind called `name`, on or off.
    pub fn backend(&self, name: &str) -> Option<&BackendSettings> {
        self.backends.iter().find(|b| b.kind.name == name)
    }

    /// Every secret in force (Marathon's, each backend's credentials), for
    /// the log redactor.
    pub fn secrets(&self) -> Vec<&Secret> {
        self.marathon_auth.iter().chain(self.backends.iter().filter_map(|b| b.credentials.as_ref())).collect()
    }

    /// Consul's token and TLS files, which the HA elector and `reconcile
    /// --once`'s lock check use whether or not Consul is a backend here.
    pub fn consul_access(&self) -> (Option<Secret>, EndpointTls) {
        match self.backend(CONSUL) {
            Some(s) => (s.credentials.clone(), s.tls.clone()),
            None => (None, EndpointTls { endpoint: Endpoint::new(CONSUL), ..Default::default() }),
        }
    }

    /// What the HA elector needs of the config; `None` without `--ha`.
    pub fn ha_wiring(&self) -> Option<crate::ha::settings::Wiring> {
        let (consul_token, tls) = self.consul_access();
        self.ha.clone().map(|settings| crate::ha::settings::Wiring {
            settings,
            cluster: self.cluster.clone(),
            request_timeout: self.request_timeout,
            consul_token,
            tls,
        })
    }
}

/// Ops in flight at once per backend unless `--backend-concurrency` says
/// otherwise: each kind's own default.
pub fn default_concurrency() -> BTreeMap<&'static str, usize> {
    KINDS.iter().map(|k| (k.name, k.concurrency)).collect()
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
            let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            return Err(bad(setting, format!("{:?} is not a backend ({})", name.trim(), names.join(", "))));
        };
        out.insert(kind.name, number(n)?);
    }
    Ok(out)
}

const MARATHON: &str = "--marathon (SWITCHBOARD_MARATHON_URL)";

fn setting(flag: &str, env: &str, key: &str, from_file: bool) -> String {
    if from_file { format!("`{key}` (config file)") } else { format!("{flag} ({env})") }
}

impl Config {
    /// Merges flags/env (`args`), the config file and secrets, then validates:
    /// the common settings first, then each kind's own (`Kind::settings`).
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
        let url_opt = crate::settings::url_opt;
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
        let data_dir =
            args.data_dir.clone().or_else(|| file.data_dir.clone()).unwrap_or_else(|| "./switchboard-data".into());

        for name in file.tls.endpoints.keys() {
            if name != Endpoint::MARATHON.name() && crate::backends::kind(name).is_none() {
                let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
                return Err(bad(
                    &format!("`tls.{name}` (config file)"),
                    format!("not an endpoint: marathon, {}", names.join(", ")),
                ));
            }
        }
        let tls_sources = TlsSources {
            global_args: [&args.tls.tls_ca_file, &args.tls.tls_cert_file, &args.tls.tls_key_file],
            file: &file.tls,
        };
        let tls = TlsConfig {
            marathon: tls_sources.endpoint(
                Endpoint::MARATHON,
                [&args.tls.marathon_ca_file, &args.tls.marathon_cert_file, &args.tls.marathon_key_file],
            ),
        };

        let no_keys = toml::Table::new();
        let mut backends = Vec::with_capacity(KINDS.len());
        for kind in KINDS {
            let sources = Sources {
                kind,
                args: &args.backends,
                file: file.backends.get(kind.name).unwrap_or(&no_keys),
                env,
                tls: tls_sources,
                cluster: &cluster,
                request_timeout,
            };
            backends.push((kind.settings)(&sources)?);
        }
        let consul = backends.iter().find(|b| b.kind.name == CONSUL).and_then(|b| b.url.clone());

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
            marathon_auth: env.secret(MARATHON_AUTH).cloned(),
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
            backends,
            tls,
        })
    }

    /// Reads the file named by `--config` (if any) and the environment, and merges.
    pub fn load(args: &CommonArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Config::merge(args, &file, &Env::from_process(&secret_vars())?)
    }

    /// Checks what a daemon or a reconcile needs: at least one Marathon URL,
    /// a data dir that can be created and written, what each backend needs
    /// (`--consul` when agents are per host), and TLS files that can be read
    /// and parsed.
    pub fn require_runnable(&self) -> Result<(), ConfigError> {
        if self.marathon.is_empty() {
            return Err(bad(MARATHON, "at least one Marathon URL is required"));
        }
        if let Some(e) = self.backends.iter().find_map(|b| b.unrunnable.clone()) {
            return Err(e);
        }
        let used =
            std::iter::once(&self.tls.marathon).chain(self.backends.iter().filter(|b| b.is_on()).map(|b| &b.tls));
        for tls in used {
            tls.check().map_err(|e| ConfigError { setting: e.setting(), reason: e.reason() })?;
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
mod tests;
