//! Consul's settings: its flags and environment variables, its keys of the
//! TOML file, its token and TLS files, merged and checked into the
//! `ConsulConfig` its backend is built from.
//!
//! Invariant: every error names the Consul setting at fault, as the user gave
//! it (`--consul-agent-mode (SWITCHBOARD_CONSUL_AGENT_MODE)`, `` `consul_agents.h`
//! (config file) ``).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Agents, ConsulBackend, ConsulConfig};
use crate::backends::Backend;
use crate::backends::settings::{Settings, Sources, build_with};
use crate::settings::{ConfigError, Setting, bad, parse_url, url_opt};

const URL: Setting = Setting { flag: "--consul", env: "SWITCHBOARD_CONSUL_URL", key: "consul" };
const MODE: Setting =
    Setting { flag: "--consul-agent-mode", env: "SWITCHBOARD_CONSUL_AGENT_MODE", key: "consul_agent_mode" };
const PORT: Setting =
    Setting { flag: "--consul-agent-port", env: "SWITCHBOARD_CONSUL_AGENT_PORT", key: "consul_agent_port" };
const REPLACE: Setting = Setting { flag: "--replace", env: "SWITCHBOARD_REPLACE", key: "replace" };
const SCHEME: Setting =
    Setting { flag: "--consul-agent-scheme", env: "SWITCHBOARD_CONSUL_AGENT_SCHEME", key: "consul_agent_scheme" };

/// Consul's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Consul")]
#[group(id = "consul-settings")]
pub struct Args {
    /// Consul agent HTTP API; absent = Consul off.
    #[arg(id = "consul", long = "consul", value_name = "URL", env = "SWITCHBOARD_CONSUL_URL")]
    pub url: Option<String>,
    /// Where tasks are registered in Consul: `single` (default: everything at
    /// --consul) or `per-host` (at the Consul agent on each task's host).
    #[arg(
        id = "consul_agent_mode",
        long = "consul-agent-mode",
        value_name = "MODE",
        env = "SWITCHBOARD_CONSUL_AGENT_MODE"
    )]
    pub agent_mode: Option<String>,
    /// Port of the per-host Consul agents (default 8500).
    #[arg(
        id = "consul_agent_port",
        long = "consul-agent-port",
        value_name = "PORT",
        env = "SWITCHBOARD_CONSUL_AGENT_PORT"
    )]
    pub agent_port: Option<String>,
    /// Scheme of the per-host Consul agents: http (default) or https.
    #[arg(
        id = "consul_agent_scheme",
        long = "consul-agent-scheme",
        value_name = "SCHEME",
        env = "SWITCHBOARD_CONSUL_AGENT_SCHEME"
    )]
    pub agent_scheme: Option<String>,
    /// Take over from marathon-consul: `marathon-consul` (its tag `marathon`)
    /// or `marathon-consul:<its --consul-tag>`. Its registration of a task is
    /// deregistered once Switchboard's own is in place.
    #[arg(id = "replace", long = "replace", value_name = "TOOL[:TAG]", env = "SWITCHBOARD_REPLACE")]
    pub replace: Option<String>,
    /// CA bundle for Consul (overrides --tls-ca-file).
    #[arg(id = "consul_ca_file", long = "consul-ca-file", value_name = "FILE", env = "SWITCHBOARD_CONSUL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for Consul (overrides --tls-cert-file).
    #[arg(
        id = "consul_cert_file",
        long = "consul-cert-file",
        value_name = "FILE",
        env = "SWITCHBOARD_CONSUL_CERT_FILE"
    )]
    pub cert_file: Option<PathBuf>,
    /// Client key for Consul (overrides --tls-key-file).
    #[arg(id = "consul_key_file", long = "consul-key-file", value_name = "FILE", env = "SWITCHBOARD_CONSUL_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// Consul's keys of the TOML file (its TLS files are `[tls.consul]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub consul: Option<String>,
    pub consul_agent_mode: Option<String>,
    /// `8501` or `"8501"`.
    #[serde(default, deserialize_with = "crate::settings::number_or_string")]
    pub consul_agent_port: Option<String>,
    pub consul_agent_scheme: Option<String>,
    /// `--replace`: `marathon-consul[:tag]`.
    pub replace: Option<String>,
    /// Per-host mode: Consul agent URL per Marathon host (overrides the
    /// scheme://host:port rule).
    #[serde(default)]
    pub consul_agents: BTreeMap<String, String>,
}

/// Merges Consul's settings (`Kind::settings`).
pub fn merge(src: &Sources<'_>) -> Result<Settings, ConfigError> {
    let args = &src.args.consul;
    let file: File = src.file()?;
    let url = url_opt(URL.pick(&args.url, &file.consul))?;
    let agents = match MODE.pick(&args.agent_mode, &file.consul_agent_mode) {
        None => Agents::Single,
        Some((raw, s)) => match raw.trim() {
            "single" => Agents::Single,
            "per-host" => {
                let scheme = match SCHEME.pick(&args.agent_scheme, &file.consul_agent_scheme) {
                    None => "http".to_owned(),
                    Some((raw, s)) => match raw.trim() {
                        "http" | "https" => raw.trim().to_owned(),
                        _ => return Err(bad(&s, format!("{raw:?}: must be http or https"))),
                    },
                };
                let port = match PORT.pick(&args.agent_port, &file.consul_agent_port) {
                    None => 8500,
                    Some((raw, s)) => match raw.trim().parse::<u16>() {
                        Ok(p) if p > 0 => p,
                        _ => return Err(bad(&s, format!("{raw:?} is not a port (1-65535)"))),
                    },
                };
                let mut map = BTreeMap::new();
                for (host, raw) in &file.consul_agents {
                    let url = parse_url(&format!("`consul_agents.{host}` (config file)"), raw)?;
                    map.insert(host.clone(), url);
                }
                Agents::PerHost { scheme, port, map }
            }
            _ => return Err(bad(&s, format!("{raw:?}: must be single or per-host"))),
        },
    };
    if agents == Agents::Single && !file.consul_agents.is_empty() {
        return Err(bad(
            "`consul_agents` (config file)",
            "only used with consul_agent_mode = \"per-host\" (--consul-agent-mode per-host)",
        ));
    }
    let replace = match REPLACE.pick(&args.replace, &file.replace) {
        None => None,
        Some((_, s)) if url.is_none() => {
            return Err(bad(&s, "only used with --consul (it replaces Consul registrations)"));
        }
        Some((raw, s)) => Some(super::Replace::parse(&raw).map_err(|e| bad(&s, e.to_string()))?),
    };
    let tls = src.tls([&args.ca_file, &args.cert_file, &args.key_file]);
    let mut out = Settings::off(src, tls);
    let Some(url) = url else {
        if agents != Agents::Single {
            out.unrunnable = Some(bad(
                &MODE.flagged(),
                "per-host needs --consul too: its catalog lists what Switchboard registered on every host",
            ));
        }
        return Ok(out);
    };
    out.url = Some(url.clone());
    out.config = Some(std::sync::Arc::new(ConsulConfig {
        url,
        token: out.credentials.clone(),
        cluster: src.cluster.to_owned(),
        timeout: src.request_timeout,
        agents,
        tls: out.tls.clone(),
        replace,
    }));
    Ok(out)
}

/// Builds the Consul backend (`Kind::build`).
pub fn build(settings: &Settings, gate: &crate::ha::Fence) -> Result<Backend, ConfigError> {
    build_with(settings, |c| ConsulBackend::new(c).map(|b| b.gated(gate.clone())), super::ConsulConfigError::setting)
}
