//! Each backend's settings as the rest of Switchboard sees them, whatever the
//! backend: its flags (`Args`, one `flatten` per backend), what it is merged
//! from (`Sources`), and what comes out (`Settings`), which `Config` holds
//! for every kind in `KINDS` order and `daemon::build_backends` turns into
//! backends through each `Kind::build`.
//!
//! A backend's own `settings.rs` (in its folder) holds its flags, its TOML
//! keys (`File`), its merge and validation (errors name its own flags), and
//! its `build`; its `Kind` points at them.
//!
//! Invariant: nothing here names a backend, except `Args`, where clap needs
//! one field per backend to flatten its flags into the command line.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::{Backend, Kind};
use crate::secret::Secret;
use crate::settings::{ConfigError, Env, TlsSources};
use crate::tls::{Endpoint, EndpointTls};

/// Every backend's flags (and environment variables), flattened into each
/// subcommand's `CommonArgs`: one line per backend.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "backend-settings")]
pub struct Args {
    #[command(flatten)]
    pub consul: super::consul::settings::Args,
    #[command(flatten)]
    pub kong: super::kong::settings::Args,
    #[command(flatten)]
    pub vulcand: super::vulcand::settings::Args,
}

/// What one kind's settings are merged from.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub kind: &'static Kind,
    /// Every backend's flags: a kind reads its own field.
    pub args: &'a Args,
    /// Its own keys of the config file (`Kind::file_keys`), taken out of it.
    pub file: &'a toml::Table,
    pub env: &'a Env,
    pub tls: TlsSources<'a>,
    /// `--cluster`, validated.
    pub cluster: &'a str,
    /// `--request-timeout`, validated.
    pub request_timeout: Duration,
}

impl Sources<'_> {
    /// Its own keys of the config file, as its `File` struct.
    pub fn file<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        crate::settings::from_table(self.file)
    }

    /// Its TLS files in force: `own` (its `--<kind>-{ca,cert,key}-file`), else
    /// `[tls.<kind>]`, else the global ones.
    pub fn tls(&self, own: [&Option<std::path::PathBuf>; 3]) -> EndpointTls {
        self.tls.endpoint(self.kind.endpoint(), own)
    }

    /// Its credentials (`Kind::credentials`), when the environment has them.
    pub fn credentials(&self) -> Option<Secret> {
        self.kind.credentials.and_then(|var| self.env.secret(var)).cloned()
    }
}

/// A backend's own validated config (`ConsulConfig`, ...), held without its
/// type so that `Config` lists no backend; its `Kind::build` takes it back.
pub trait BackendConfig: Any + std::fmt::Debug + Send + Sync {}

impl<T: Any + std::fmt::Debug + Send + Sync> BackendConfig for T {}

/// One kind's settings, merged and validated. `Config` holds one for every
/// kind, on or off.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kind: &'static Kind,
    /// `--<kind>` (its URL); `None`: the backend is off.
    pub url: Option<Url>,
    /// The TLS files in force for its endpoint (checked by
    /// `Config::require_runnable` when it is on).
    pub tls: EndpointTls,
    /// Its credentials (`Kind::credentials`), when given.
    pub credentials: Option<Secret>,
    /// What `Kind::build` builds it from; `Some` when it is on.
    pub config: Option<Arc<dyn BackendConfig>>,
    /// Why a daemon or a reconcile cannot run with these settings (reported
    /// by `Config::require_runnable` only, so `switchboard state` still runs).
    pub unrunnable: Option<ConfigError>,
}

impl Settings {
    /// An off backend with the TLS files and credentials it would use.
    pub fn off(src: &Sources<'_>, tls: EndpointTls) -> Settings {
        Settings { kind: src.kind, url: None, tls, credentials: src.credentials(), config: None, unrunnable: None }
    }

    pub fn is_on(&self) -> bool {
        self.config.is_some()
    }

    /// Its own config as `T`; an error naming the kind if it is off or of
    /// another type (a `Kind` whose `build` does not match its `settings`).
    pub fn config<T: Any>(&self) -> Result<&T, ConfigError> {
        let any: Option<&dyn Any> = self.config.as_deref().map(|c| c as &dyn Any);
        any.and_then(|c| c.downcast_ref::<T>()).ok_or_else(|| {
            crate::settings::bad(&format!("--{}", self.kind.name), "the backend is off or its settings are not its own")
        })
    }
}

impl Kind {
    /// Its TLS endpoint: `--<name>-ca-file`, `[tls.<name>]`, ...
    pub const fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.name)
    }
}

/// A backend config's validation error as a `ConfigError`, naming its setting.
pub fn invalid(setting: &str, e: &dyn std::error::Error) -> ConfigError {
    crate::settings::bad(setting, e.to_string())
}

/// Builds `B` from settings that are on, wrapping the error in the setting
/// it names.
pub fn build_with<C: Any + Clone, B, E>(
    settings: &Settings,
    new: impl FnOnce(C) -> Result<B, E>,
    setting: impl Fn(&E) -> &'static str,
) -> Result<Backend, ConfigError>
where
    B: super::Routing + super::Registry + 'static,
    E: std::error::Error,
{
    let config: &C = settings.config()?;
    new(config.clone()).map(Backend::new).map_err(|e| invalid(setting(&e), &e))
}
