//! Vulcand's settings: its flags and environment variables, its keys of the
//! TOML file and its TLS files, merged and checked into the `VulcandConfig`
//! its backend is built from.
//!
//! Invariant: every error names the Vulcand setting at fault, as the user gave it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{VulcandBackend, VulcandConfig};
use crate::backends::Backend;
use crate::backends::settings::{Settings, Sources, build_with};
use crate::settings::{ConfigError, Setting, bad, parse_duration, url_opt};

const URL: Setting = Setting { flag: "--vulcand", env: "SWITCHBOARD_VULCAND_URL", key: "vulcand" };
const SERVER_TTL: Setting =
    Setting { flag: "--vulcand-server-ttl", env: "SWITCHBOARD_VULCAND_SERVER_TTL", key: "vulcand_server_ttl" };

/// Vulcand's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Vulcand")]
#[group(id = "vulcand-settings")]
pub struct Args {
    /// Vulcand API; absent = Vulcand off.
    #[arg(id = "vulcand", long = "vulcand", value_name = "URL", env = "SWITCHBOARD_VULCAND_URL")]
    pub url: Option<String>,
    /// Register Vulcand servers with this TTL and refresh them by heartbeat.
    #[arg(
        id = "vulcand_server_ttl",
        long = "vulcand-server-ttl",
        value_name = "DUR",
        env = "SWITCHBOARD_VULCAND_SERVER_TTL"
    )]
    pub server_ttl: Option<String>,
    /// CA bundle for Vulcand behind a TLS proxy (overrides --tls-ca-file).
    #[arg(id = "vulcand_ca_file", long = "vulcand-ca-file", value_name = "FILE", env = "SWITCHBOARD_VULCAND_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for Vulcand (overrides --tls-cert-file).
    #[arg(
        id = "vulcand_cert_file",
        long = "vulcand-cert-file",
        value_name = "FILE",
        env = "SWITCHBOARD_VULCAND_CERT_FILE"
    )]
    pub cert_file: Option<PathBuf>,
    /// Client key for Vulcand (overrides --tls-key-file).
    #[arg(
        id = "vulcand_key_file",
        long = "vulcand-key-file",
        value_name = "FILE",
        env = "SWITCHBOARD_VULCAND_KEY_FILE"
    )]
    pub key_file: Option<PathBuf>,
}

/// Vulcand's keys of the TOML file (its TLS files are `[tls.vulcand]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub vulcand: Option<String>,
    pub vulcand_server_ttl: Option<String>,
}

/// Merges Vulcand's settings (`Kind::settings`).
pub fn merge(src: &Sources<'_>) -> Result<Settings, ConfigError> {
    let args = &src.args.vulcand;
    let file: File = src.file()?;
    let url = url_opt(URL.pick(&args.url, &file.vulcand))?;
    let server_ttl = match SERVER_TTL.pick(&args.server_ttl, &file.vulcand_server_ttl) {
        None => None,
        Some((raw, s)) => {
            let ttl = Some(parse_duration(&s, &raw)?).filter(|d| !d.is_zero());
            if ttl.is_some_and(|ttl| ttl < Duration::from_secs(1)) {
                return Err(bad(&s, "must be at least 1s"));
            }
            ttl
        }
    };
    let tls = src.tls([&args.ca_file, &args.cert_file, &args.key_file]);
    let mut out = Settings::off(src, tls);
    let Some(url) = url else { return Ok(out) };
    out.url = Some(url.clone());
    out.config = Some(std::sync::Arc::new(VulcandConfig {
        url,
        cluster: src.cluster.to_owned(),
        server_ttl,
        timeout: src.request_timeout,
        tls: out.tls.clone(),
    }));
    Ok(out)
}

/// Builds the Vulcand backend (`Kind::build`).
pub fn build(settings: &Settings, gate: &crate::ha::Fence) -> Result<Backend, ConfigError> {
    build_with(settings, |c| VulcandBackend::new(c).map(|b| b.gated(gate.clone())), super::VulcandConfigError::setting)
}
