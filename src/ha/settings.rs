//! The HA settings (`--ha`, `--ha-consul`, `--ha-session-ttl`,
//! `--ha-lock-delay`, `--replica-name`), validated here, next to the lease
//! arithmetic they must satisfy. `config` reads the flags, environment and
//! file and hands the values here; `ha` never reads `config`.

use std::time::Duration;

use url::Url;

/// A setting that cannot be used, and why (`config` turns it into its error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub setting: String,
    pub reason: String,
}

fn bad(setting: &str, reason: impl Into<String>) -> SettingError {
    SettingError { setting: setting.to_owned(), reason: reason.into() }
}

/// What the elector needs: the HA settings and the rest of the config it
/// uses (cluster, request timeout, Consul's token and TLS).
#[derive(Debug, Clone)]
pub struct Wiring {
    pub settings: HaSettings,
    pub cluster: String,
    pub request_timeout: Duration,
    pub consul_token: Option<crate::secret::Secret>,
    pub tls: crate::tls::EndpointTls,
}

/// The HA settings, validated (see `ha` for what they mean together).
#[derive(Debug, Clone, PartialEq)]
pub struct HaSettings {
    /// The Consul agent holding the lock.
    pub consul: Url,
    pub session_ttl: Duration,
    pub lock_delay: Duration,
    /// `None`: hostname-pid, resolved when the replica starts.
    pub replica_name: Option<String>,
}

const HA_TTL: &str = "--ha-session-ttl (SWITCHBOARD_HA_SESSION_TTL)";
const HA_DELAY: &str = "--ha-lock-delay (SWITCHBOARD_HA_LOCK_DELAY)";

impl HaSettings {
    /// Validates the HA settings; `None` when HA is off.
    #[allow(clippy::too_many_arguments)]
    pub fn merge(
        on: bool,
        ha_consul: Option<Url>,
        consul: Option<&Url>,
        ttl: Option<(Duration, String)>,
        delay: Option<(Duration, String)>,
        replica_name: Option<(String, String)>,
        request_timeout: Duration,
    ) -> Result<Option<HaSettings>, SettingError> {
        if !on {
            return Ok(None);
        }
        let Some(consul) = ha_consul.or_else(|| consul.cloned()) else {
            return Err(bad(
                "--ha (SWITCHBOARD_HA)",
                "needs a Consul agent for the lock: set --ha-consul (SWITCHBOARD_HA_CONSUL_URL) or --consul (SWITCHBOARD_CONSUL_URL)",
            ));
        };
        let (session_ttl, ttl_name) = ttl.unwrap_or((super::DEFAULT_TTL, HA_TTL.to_owned()));
        if session_ttl < Duration::from_secs(1) || session_ttl > Duration::from_secs(86_400) {
            return Err(bad(
                &ttl_name,
                format!("{session_ttl:?}: must be between 1s and 24h (Consul itself wants at least 10s)"),
            ));
        }
        let (lock_delay, delay_name) = delay.unwrap_or((super::DEFAULT_LOCK_DELAY, HA_DELAY.to_owned()));
        let timing = super::Timing { ttl: session_ttl, lock_delay };
        if lock_delay > Duration::from_secs(60) {
            return Err(bad(&delay_name, format!("{lock_delay:?}: Consul caps the lock delay at 60s")));
        }
        // The old leader sends its last write before its lease's end, one
        // margin before Consul may drop its session, and gives it up by then
        // (the gate); the lock delay keeps a new leader out for the margin
        // plus one request timeout beyond that, whatever the TTL (`README`, HA).
        let needed = timing.margin() + request_timeout;
        if lock_delay < needed {
            return Err(bad(
                &delay_name,
                format!(
                    "{lock_delay:?} is shorter than the fencing margin ({:?}, a third of {ttl_name} {session_ttl:?}) plus one --request-timeout ({request_timeout:?}): set --ha-lock-delay to at least {needed:?}, so no write of an old leader can land after a new one took over",
                    timing.margin()
                ),
            ));
        }
        let replica_name = match replica_name {
            Some((raw, s)) => {
                let ok = !raw.is_empty()
                    && raw.len() <= 128
                    && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    return Err(bad(&s, format!("{raw:?}: use 1-128 characters of [A-Za-z0-9._-]")));
                }
                Some(raw)
            }
            None => None,
        };
        Ok(Some(HaSettings { consul, session_ttl, lock_delay, replica_name }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ttl: u64, delay: u64, timeout: u64) -> Result<Option<HaSettings>, SettingError> {
        let ms = Duration::from_millis;
        let consul = Url::parse("http://127.0.0.1:8500").unwrap();
        let named = |v: u64, s: &str| Some((ms(v), s.to_owned()));
        HaSettings::merge(true, Some(consul), None, named(ttl, HA_TTL), named(delay, HA_DELAY), None, ms(timeout))
    }

    #[test]
    fn the_lock_delay_covers_the_margin_and_one_request_timeout_whatever_the_ttl() {
        // Defaults: TTL 10 s (margin 3.33 s) + request timeout 10 s = 13.33 s ≤ 15 s.
        assert!(check(10_000, 15_000, 10_000).is_ok());
        assert!(check(3_000, 2_000, 1_000).is_ok(), "exactly margin + timeout");
        let e = check(3_000, 1_999, 1_000).unwrap_err();
        assert_eq!(e.setting, HA_DELAY);
        assert!(e.reason.contains("--ha-lock-delay to at least 2s") && e.reason.contains("1.999s"), "{}", e.reason);
        // The example: TTL 30 s, lock delay 15 s (> TTL/3, once enough) is refused now.
        let e = check(30_000, 15_000, 10_000).unwrap_err();
        assert!(e.reason.contains("at least 20s"), "{}", e.reason);
        // A long TTL cannot make up for a short lock delay.
        assert!(check(60_000, 15_000, 1_000).is_err());
    }
}
