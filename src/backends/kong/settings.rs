//! Kong's settings: its flags and environment variables, its keys of the TOML
//! file, its token and TLS files, merged and checked into the `KongConfig`
//! its backend is built from.
//!
//! Invariant: every error names the Kong setting at fault, as the user gave it.

use std::path::PathBuf;

use serde::Deserialize;

use super::{KongBackend, KongConfig};
use crate::backends::Backend;
use crate::backends::settings::{Settings, Sources, build_with};
use crate::settings::{ConfigError, Setting, bad, url_opt};

const URL: Setting = Setting { flag: "--kong", env: "SWITCHBOARD_KONG_URL", key: "kong" };
const FORWARD_TO: Setting =
    Setting { flag: "--kong-forward-to", env: "SWITCHBOARD_KONG_FORWARD_TO", key: "kong_forward_to" };
const TOKEN_HEADER: Setting =
    Setting { flag: "--kong-token-header", env: "SWITCHBOARD_KONG_TOKEN_HEADER", key: "kong_token_header" };

/// Kong's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Kong")]
#[group(id = "kong-settings")]
pub struct Args {
    /// Kong Admin API; absent = Kong off.
    #[arg(id = "kong", long = "kong", value_name = "URL", env = "SWITCHBOARD_KONG_URL")]
    pub url: Option<String>,
    /// Kong forwarding topology: one Kong service per app pointing here (e.g. Vulcand's listener).
    #[arg(id = "kong_forward_to", long = "kong-forward-to", value_name = "URL", env = "SWITCHBOARD_KONG_FORWARD_TO")]
    pub forward_to: Option<String>,
    /// Header carrying SWITCHBOARD_KONG_TOKEN (default Kong-Admin-Token).
    #[arg(
        id = "kong_token_header",
        long = "kong-token-header",
        value_name = "NAME",
        env = "SWITCHBOARD_KONG_TOKEN_HEADER"
    )]
    pub token_header: Option<String>,
    /// CA bundle for Kong (overrides --tls-ca-file).
    #[arg(id = "kong_ca_file", long = "kong-ca-file", value_name = "FILE", env = "SWITCHBOARD_KONG_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for Kong (overrides --tls-cert-file).
    #[arg(id = "kong_cert_file", long = "kong-cert-file", value_name = "FILE", env = "SWITCHBOARD_KONG_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Client key for Kong (overrides --tls-key-file).
    #[arg(id = "kong_key_file", long = "kong-key-file", value_name = "FILE", env = "SWITCHBOARD_KONG_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// Kong's keys of the TOML file (its TLS files are `[tls.kong]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub kong: Option<String>,
    pub kong_forward_to: Option<String>,
    pub kong_token_header: Option<String>,
}

/// Merges Kong's settings (`Kind::settings`).
pub fn merge(src: &Sources<'_>) -> Result<Settings, ConfigError> {
    let args = &src.args.kong;
    let file: File = src.file()?;
    let url = url_opt(URL.pick(&args.url, &file.kong))?;
    let forward_to = url_opt(FORWARD_TO.pick(&args.forward_to, &file.kong_forward_to))?;
    let token_header = match TOKEN_HEADER.pick(&args.token_header, &file.kong_token_header) {
        Some((raw, s)) => {
            if raw.is_empty() || !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad(&s, format!("{raw:?} is not an HTTP header name")));
            }
            raw
        }
        None => "Kong-Admin-Token".to_owned(),
    };
    let tls = src.tls([&args.ca_file, &args.cert_file, &args.key_file]);
    let mut out = Settings::off(src, tls);
    let Some(url) = url else { return Ok(out) };
    out.url = Some(url.clone());
    out.config = Some(std::sync::Arc::new(KongConfig {
        url,
        token: out.credentials.clone(),
        token_header,
        cluster: src.cluster.to_owned(),
        forward_to,
        timeout: src.request_timeout,
        tls: out.tls.clone(),
    }));
    Ok(out)
}

/// Builds the Kong backend (`Kind::build`).
pub fn build(settings: &Settings, gate: &crate::ha::Fence) -> Result<Backend, ConfigError> {
    build_with(settings, |c| KongBackend::new(c).map(|b| b.gated(gate.clone())), super::KongConfigError::setting)
}
