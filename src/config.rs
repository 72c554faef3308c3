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
    /// Ops in flight at once per backend, as `N` for all or
    /// `consul=N,kong=N,vulcand=N` (default consul=8,kong=16,vulcand=8).
    #[arg(long, value_name = "LIMITS", env = "SWITCHBOARD_BACKEND_CONCURRENCY")]
    pub backend_concurrency: Option<String>,
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
    pub backend_concurrency: Option<String>,
    #[serde(default, rename = "static")]
    pub statics: Vec<StaticEntry>,
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
}

/// Ops in flight at once per backend unless `--backend-concurrency` says
/// otherwise (BENCHMARKS.md: how they were chosen).
pub const DEFAULT_CONCURRENCY: [(&str, usize); 3] = [("consul", 8), ("kong", 16), ("vulcand", 8)];

/// `N` (every backend) or `consul=N,kong=N,vulcand=N` (the rest keep their
/// default); each N from 1 to 256.
fn parse_concurrency(setting: &str, raw: &str) -> Result<BTreeMap<&'static str, usize>, ConfigError> {
    let mut out: BTreeMap<&'static str, usize> = DEFAULT_CONCURRENCY.into_iter().collect();
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
        let Some((key, _)) = DEFAULT_CONCURRENCY.iter().find(|(k, _)| *k == name.trim()) else {
            return Err(bad(setting, format!("{:?} is not a backend (consul, kong or vulcand)", name.trim())));
        };
        out.insert(key, number(n)?);
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
                None => DEFAULT_CONCURRENCY.into_iter().collect(),
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

        let mut statics = Vec::new();
        for (i, s) in file.statics.iter().enumerate() {
            let svc = StaticService { name: s.name.clone(), instances: s.instances.clone(), labels: s.labels.clone() };
            crate::labels::static_registrations(&svc, &crate::labels::LabelOptions { separator: name_separator })
                .map_err(|e| bad(&format!("`static[{i}]` ({})", s.name), format!("{}: {}", e.label, e.reason)))?;
            statics.push(svc);
        }

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
    /// and a data dir that can be created and written.
    pub fn require_runnable(&self) -> Result<(), ConfigError> {
        if self.marathon.is_empty() {
            return Err(bad(MARATHON, "at least one Marathon URL is required"));
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
    fn secrets_never_in_debug() {
        let env = Env { consul_token: Some(Secret::new("s3cret")), ..Env::none() };
        let c = Config::merge(&CommonArgs::default(), &FileConfig::default(), &env).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
