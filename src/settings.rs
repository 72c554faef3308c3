//! The words every part's settings are made of, so that `config` (the common
//! settings, and the assembly) and each backend's own `settings.rs` speak
//! alike without importing each other: `ConfigError` naming the setting at
//! fault, `Setting` (a flag, its environment variable and its TOML key) and
//! where a value came from, the parsers (URL, duration, size), `Env` (secrets
//! from the environment), and the TLS files of one endpoint.
//!
//! Invariants:
//! - Every error names the setting at fault as the user gave it: the flag and
//!   its variable (`--consul (SWITCHBOARD_CONSUL_URL)`) or the TOML key
//!   (`` `consul` (config file) ``).
//! - Secrets come only from the environment or from files it names (`*_FILE`).
//! - No I/O but reading secrets (`Env::from_process`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::secret::{Secret, SecretSource};
use crate::tls::{Endpoint, EndpointTls, Kind, TlsFile};

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    /// The flag / env var / key, e.g. "--consul (SWITCHBOARD_CONSUL_URL)".
    pub setting: String,
    pub reason: String,
}

pub fn bad(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_owned(), reason: reason.into() }
}

/// One setting: its flag, its environment variable and its TOML key.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
    pub key: &'static str,
}

impl Setting {
    /// `--consul (SWITCHBOARD_CONSUL_URL)`.
    pub fn flagged(&self) -> String {
        format!("{} ({})", self.flag, self.env)
    }

    /// `` `consul` (config file) ``.
    pub fn in_file(&self) -> String {
        format!("`{}` (config file)", self.key)
    }

    /// The flag's (or env's) value, else the file's, with the setting it came
    /// from, for error messages.
    pub fn pick(&self, arg: &Option<String>, file: &Option<String>) -> Option<(String, String)> {
        match (arg, file) {
            (Some(v), _) => Some((v.clone(), self.flagged())),
            (None, Some(v)) => Some((v.clone(), self.in_file())),
            (None, None) => None,
        }
    }
}

pub fn parse_url(setting: &str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| bad(setting, format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(setting, format!("{raw:?}: scheme must be http or https")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(setting, format!("{raw:?} has no host")));
    }
    Ok(url)
}

/// `parse_url` of a picked value.
pub fn url_opt(v: Option<(String, String)>) -> Result<Option<Url>, ConfigError> {
    v.map(|(raw, s)| parse_url(&s, &raw)).transpose()
}

/// A size such as `64MiB`, `16MB` or `1048576` (bytes); at least 1 KiB, so
/// Marathon's ordinary events always fit.
pub fn parse_size(setting: &str, raw: &str) -> Result<usize, ConfigError> {
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

/// A TOML integer or string, as the string the flag would carry.
pub fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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

/// The names of a struct's fields as serde reads them: the TOML keys a
/// backend's `File` takes out of the config file.
pub fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    // Always an error: the point is the field list it saw.
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// Deserializes keys taken out of the config file (a backend's own) as `T`.
pub fn from_table<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, ConfigError> {
    toml::Value::Table(table.clone()).try_into().map_err(|e: toml::de::Error| bad("in config file", e.message()))
}

/// Secrets read from the environment (or files it names), by variable.
#[derive(Debug, Clone, Default)]
pub struct Env {
    secrets: BTreeMap<String, Secret>,
}

impl Env {
    pub fn none() -> Env {
        Env::default()
    }

    /// `var` set to `secret` (tests, the demo).
    pub fn with(mut self, var: &str, secret: Secret) -> Env {
        self.secrets.insert(var.to_owned(), secret);
        self
    }

    pub fn secret(&self, var: &str) -> Option<&Secret> {
        self.secrets.get(var)
    }

    /// Reads each of `vars`, or its `*_FILE` variant.
    pub fn from_process(vars: &[&str]) -> Result<Env, ConfigError> {
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
        let mut env = Env::none();
        for var in vars {
            if let Some(s) = read(var)? {
                env = env.with(var, s);
            }
        }
        Ok(env)
    }
}

/// `ca_file`, `cert_file`, `key_file` of `[tls]` or `[tls.<endpoint>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFilesToml {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `[tls]` in the TOML file: global files, and a table per endpoint
/// (`config` checks that each names an endpoint).
#[derive(Debug, Clone, Default)]
pub struct TlsFileConfig {
    pub files: TlsFilesToml,
    pub endpoints: BTreeMap<String, TlsFilesToml>,
}

impl<'de> Deserialize<'de> for TlsFileConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let table = toml::Table::deserialize(d)?;
        let mut files = toml::Table::new();
        let mut endpoints = BTreeMap::new();
        for (key, value) in table {
            if let toml::Value::Table(t) = value {
                let one: TlsFilesToml = toml::Value::Table(t)
                    .try_into()
                    .map_err(|e: toml::de::Error| D::Error::custom(format!("tls.{key}: {}", e.message())))?;
                endpoints.insert(key, one);
            } else {
                files.insert(key, value);
            }
        }
        let files = toml::Value::Table(files).try_into().map_err(|e: toml::de::Error| {
            D::Error::custom(format!("tls: {} (or a table [tls.<endpoint>])", e.message()))
        })?;
        Ok(TlsFileConfig { files, endpoints })
    }
}

const TLS_KEYS: [&str; 3] = ["ca_file", "cert_file", "key_file"];
const TLS_KINDS: [Kind; 3] = [Kind::Ca, Kind::Cert, Kind::Key];

impl TlsFilesToml {
    fn files(&self) -> [&Option<PathBuf>; 3] {
        [&self.ca_file, &self.cert_file, &self.key_file]
    }
}

/// The global TLS files (`--tls-*-file`, `[tls]`) and the `[tls.<endpoint>]`
/// tables: what one endpoint's files are merged from, besides its own flags.
#[derive(Debug, Clone, Copy)]
pub struct TlsSources<'a> {
    /// `--tls-ca-file`, `--tls-cert-file`, `--tls-key-file`.
    pub global_args: [&'a Option<PathBuf>; 3],
    pub file: &'a TlsFileConfig,
}

impl TlsSources<'_> {
    /// The files in force for `endpoint`: its own setting > the global one,
    /// each flag/env > file. `own_args`: its `--<endpoint>-{ca,cert,key}-file`.
    pub fn endpoint(&self, endpoint: Endpoint, own_args: [&Option<PathBuf>; 3]) -> EndpointTls {
        let own_file = self.file.endpoints.get(endpoint.name()).map(TlsFilesToml::files);
        let global_file = self.file.files.files();
        let mut out: [Option<TlsFile>; 3] = [None, None, None];
        for i in 0..3 {
            let env = |e: Option<Endpoint>| {
                format!("SWITCHBOARD_{}_{}", e.map_or("TLS", Endpoint::name).to_uppercase(), TLS_KEYS[i].to_uppercase())
            };
            let flagged = |e: Option<Endpoint>| format!("{} ({})", crate::tls::flag(e, TLS_KINDS[i]), env(e));
            out[i] = if let Some(p) = own_args[i] {
                Some(TlsFile { path: p.clone(), setting: flagged(Some(endpoint)) })
            } else if let Some(p) = own_file.and_then(|f| f[i].as_ref()) {
                Some(TlsFile {
                    path: p.clone(),
                    setting: format!("`tls.{}.{}` (config file)", endpoint.name(), TLS_KEYS[i]),
                })
            } else if let Some(p) = self.global_args[i] {
                Some(TlsFile { path: p.clone(), setting: flagged(None) })
            } else {
                global_file[i]
                    .as_ref()
                    .map(|p| TlsFile { path: p.clone(), setting: format!("`tls.{}` (config file)", TLS_KEYS[i]) })
            };
        }
        let [ca, cert, key] = out;
        EndpointTls { endpoint, ca, cert, key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Two {
        one: Option<String>,
        #[serde(rename = "other")]
        two: Option<u16>,
    }

    #[test]
    fn field_names_are_the_toml_keys() {
        assert_eq!(field_names::<Two>(), &["one", "other"]);
    }

    #[test]
    fn tls_tables_split_into_global_files_and_endpoints() {
        let t: TlsFileConfig = toml::from_str("ca_file = \"/a\"\n[consul]\nkey_file = \"/k\"\n").unwrap();
        assert_eq!(t.files.ca_file, Some(PathBuf::from("/a")));
        assert_eq!(t.endpoints["consul"].key_file, Some(PathBuf::from("/k")));
        let e = toml::from_str::<TlsFileConfig>("cafile = \"/a\"\n").unwrap_err();
        assert!(e.to_string().contains("cafile"), "{e}");
        let e = toml::from_str::<TlsFileConfig>("[kong]\ncafile = \"/a\"\n").unwrap_err();
        assert!(e.to_string().contains("cafile") && e.to_string().contains("tls.kong"), "{e}");
    }

    #[test]
    fn a_picked_value_names_where_it_came_from() {
        const S: Setting = Setting { flag: "--x", env: "SWITCHBOARD_X", key: "x" };
        assert_eq!(S.pick(&Some("1".into()), &Some("2".into())), Some(("1".into(), "--x (SWITCHBOARD_X)".into())));
        assert_eq!(S.pick(&None, &Some("2".into())), Some(("2".into(), "`x` (config file)".into())));
        assert_eq!(S.pick(&None, &None), None);
    }
}
