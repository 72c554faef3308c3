//! `Config::merge`: precedence, errors naming the setting, and every kind
//! bringing its own settings.

use super::*;
use crate::backends::consul::{Agents, ConsulConfig};

fn merge(args: CommonArgs, toml: &str) -> Result<Config, ConfigError> {
    Config::merge(&args, &FileConfig::parse(toml)?, &Env::none())
}

fn consul_at(url: &str) -> CommonArgs {
    let mut args = CommonArgs::default();
    args.backends.consul.url = Some(url.into());
    args
}

fn url_of(c: &Config, kind: &str) -> Option<String> {
    c.backend(kind).and_then(|b| b.url.as_ref()).map(Url::to_string)
}

#[test]
fn defaults() {
    let c = merge(CommonArgs::default(), "").unwrap();
    assert_eq!(c.resync_interval, Some(Duration::from_secs(300)));
    assert_eq!(c.listen.to_string(), "127.0.0.1:9102");
    assert_eq!(c.cluster, "default");
    assert_eq!(c.grace_period, Duration::from_secs(2));
    assert_eq!(c.idle_timeout, Duration::from_secs(30));
    assert!(url_of(&c, "consul").is_none());
    assert!(c.backends.iter().all(|b| !b.is_on()));
}

#[test]
fn flag_wins_over_file() {
    let c = merge(consul_at("http://127.0.0.1:1"), "consul = \"http://127.0.0.1:2\"\nresync_interval = \"0\"").unwrap();
    assert_eq!(url_of(&c, "consul").as_deref(), Some("http://127.0.0.1:1/"));
    assert_eq!(c.resync_interval, None);
    let c = merge(CommonArgs::default(), "kong = \"http://127.0.0.1:2\"").unwrap();
    assert_eq!(url_of(&c, "kong").as_deref(), Some("http://127.0.0.1:2/"));
}

#[test]
fn errors_name_the_setting() {
    let e = merge(consul_at("not a url"), "").unwrap_err();
    assert!(e.to_string().contains("--consul (SWITCHBOARD_CONSUL_URL)"), "{e}");
    let e = merge(CommonArgs::default(), "resync_interval = \"soon\"").unwrap_err();
    assert!(e.to_string().contains("`resync_interval` (config file)"), "{e}");
    let e = FileConfig::from_toml_str("consul_url = \"http://x\"").unwrap_err();
    assert!(e.to_string().contains("consul_url"), "{e}");
    let e = FileConfig::from_toml_str("kong_forward_to = 5").unwrap_err();
    assert!(e.to_string().contains("in config file"), "{e}");
    let e = merge(CommonArgs { name_separator: Some("_".into()), ..Default::default() }, "").unwrap_err();
    assert!(e.to_string().contains("--name-separator"), "{e}");
    let e = FileConfig::from_toml_str("[[static]]\nname = \"m\"\ninstances = [\"nope\"]\n").unwrap_err();
    assert!(e.to_string().contains("static[0]"), "{e}");
    let e = FileConfig::from_toml_str("vulcand_server_ttl = \"500ms\"").unwrap_err();
    assert!(e.to_string().contains("`vulcand_server_ttl` (config file)"), "{e}");
    let e = FileConfig::from_toml_str("kong_token_header = \"a b\"").unwrap_err();
    assert!(e.to_string().contains("`kong_token_header` (config file)"), "{e}");
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
    let c = ha(consul_at("http://c:8500"), "").unwrap();
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
        CommonArgs { ha_session_ttl: Some("3s".into()), ha_lock_delay: Some("2s".into()), ..consul_at("http://c") },
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("--ha-lock-delay") && e.to_string().contains("--request-timeout"), "{e}");
    let e = ha(CommonArgs { ha_session_ttl: Some("100ms".into()), ..consul_at("http://c") }, "").unwrap_err();
    assert!(e.to_string().contains("--ha-session-ttl"), "{e}");
    let e = ha(CommonArgs { replica_name: Some("a b".into()), ..consul_at("http://c") }, "").unwrap_err();
    assert!(e.to_string().contains("--replica-name"), "{e}");
}

#[test]
fn ha_uses_consul_token_and_tls_even_with_consul_off() {
    let mut args = CommonArgs { ha: true, ha_consul: Some("http://l:8500".into()), ..Default::default() };
    args.backends.consul.ca_file = Some("/consul-ca.pem".into());
    let env = Env::none().with("SWITCHBOARD_CONSUL_TOKEN", Secret::new("t0ken"));
    let c = Config::merge(&args, &FileConfig::default(), &env).unwrap();
    assert!(c.backends.iter().all(|b| !b.is_on()));
    let w = c.ha_wiring().expect("--ha");
    assert_eq!(w.consul_token.map(|t| t.expose().to_owned()).as_deref(), Some("t0ken"));
    assert_eq!(w.tls.ca.map(|f| f.path), Some(PathBuf::from("/consul-ca.pem")));
    assert_eq!(w.tls.endpoint, Endpoint::new("consul"));
}

#[test]
fn tls_endpoint_setting_wins_over_global_and_flag_over_file() {
    let mut args = CommonArgs {
        tls: TlsArgs { tls_ca_file: Some("/flag/global-ca.pem".into()), ..Default::default() },
        ..Default::default()
    };
    args.backends.consul.cert_file = Some("/flag/consul-cert.pem".into());
    let toml = "[tls]\nca_file = \"/file/ca.pem\"\nkey_file = \"/file/key.pem\"\n[tls.kong]\nca_file = \"/file/kong-ca.pem\"\n";
    let c = merge(args, toml).unwrap();
    let consul = &c.backend("consul").unwrap().tls;
    assert_eq!(consul.ca.as_ref().unwrap().path, PathBuf::from("/flag/global-ca.pem"));
    assert_eq!(consul.ca.as_ref().unwrap().setting, "--tls-ca-file (SWITCHBOARD_TLS_CA_FILE)");
    assert_eq!(consul.cert.as_ref().unwrap().setting, "--consul-cert-file (SWITCHBOARD_CONSUL_CERT_FILE)");
    assert_eq!(consul.key.as_ref().unwrap().setting, "`tls.key_file` (config file)");
    let kong = &c.backend("kong").unwrap().tls;
    assert_eq!(kong.ca.as_ref().unwrap().path, PathBuf::from("/file/kong-ca.pem"));
    assert_eq!(kong.ca.as_ref().unwrap().setting, "`tls.kong.ca_file` (config file)");
    assert_eq!(c.tls.marathon.endpoint, Endpoint::MARATHON);
    let e = FileConfig::from_toml_str("[tls.consul]\ncafile = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("cafile"), "{e}");
    let e = FileConfig::from_toml_str("[tls.nomad]\nca_file = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("`tls.nomad` (config file)"), "{e}");
}

#[test]
fn secrets_never_in_debug() {
    let env = Env::none().with("SWITCHBOARD_CONSUL_TOKEN", Secret::new("s3cret"));
    let c = Config::merge(&consul_at("http://c:8500"), &FileConfig::default(), &env).unwrap();
    assert_eq!(c.secrets().len(), 1);
    assert!(!format!("{c:?}").contains("s3cret"));
}

/// `KINDS`, the command line, the file and the built backends agree:
/// every kind's flags are in `--help`, each kind's settings name its own
/// flags and keys, and each kind that is on builds its backend.
#[test]
fn every_kind_brings_its_own_settings() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }
    let parse = |argv: &[&str]| {
        let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("switchboard").chain(argv.iter().copied()))
            .expect("flags parse");
        Config::merge(&cli.common, &FileConfig::default(), &Env::none())
    };
    let help = <Cli as clap::CommandFactory>::command().render_long_help().to_string();
    let mut on = vec!["--marathon", "http://127.0.0.1:9"];
    let flags: Vec<String> = KINDS.iter().map(|k| format!("--{}", k.name)).collect();
    for (kind, flag) in KINDS.iter().zip(&flags) {
        let env = format!("SWITCHBOARD_{}", kind.name.to_uppercase());
        for f in [flag.clone(), format!("{flag}-ca-file"), format!("{flag}-cert-file"), format!("{flag}-key-file")] {
            assert!(help.contains(&format!("{f} <")), "{f} missing from --help:\n{help}");
        }
        assert!(help.contains(&format!("{env}_URL")), "{env}_URL missing from --help");
        // Its URL, from the flag and from the file, each named in the error.
        let e = parse(&[flag.as_str(), "not a url"]).unwrap_err();
        assert_eq!(e.setting, format!("{flag} ({env}_URL)"));
        let e = FileConfig::from_toml_str(&format!("{} = \"nope\"", kind.name)).unwrap_err();
        assert_eq!(e.setting, format!("`{}` (config file)", kind.name));
        // Its TLS endpoint: a certificate without its key names its own flag.
        let c = parse(&["--marathon", "http://m", flag.as_str(), "http://b", &format!("{flag}-cert-file"), "/c.pem"])
            .unwrap();
        let e = c.require_runnable().unwrap_err();
        assert_eq!(e.setting, format!("{flag}-cert-file ({env}_CERT_FILE)"));
        // Its keys are its own.
        let keys = (kind.file_keys)();
        assert!(keys.contains(&kind.name), "{} reads its URL from `{}`", kind.name, kind.name);
        for other in KINDS.iter().filter(|o| o.name != kind.name) {
            assert!(
                keys.iter().all(|k| !(other.file_keys)().contains(k)),
                "{} and {} share a key",
                kind.name,
                other.name
            );
        }
        on.extend([flag.as_str(), "http://127.0.0.1:9"]);
    }
    let c = parse(&on).unwrap();
    let kinds: Vec<&str> = c.backends.iter().map(|b| b.kind.name).collect();
    assert_eq!(kinds, KINDS.iter().map(|k| k.name).collect::<Vec<_>>());
    let built = crate::daemon::build_backends(&c, &crate::ha::Fence::always()).expect("every kind builds");
    assert_eq!(built.iter().map(|b| b.name()).collect::<Vec<_>>(), kinds);
    assert!(crate::daemon::build_backends(&parse(&[]).unwrap(), &crate::ha::Fence::always()).unwrap().is_empty());
}

/// Where the Consul backend would register, as merged.
fn agents(c: &Config) -> Agents {
    let s = c.backend("consul").expect("consul settings");
    s.config::<ConsulConfig>().map(|c| c.agents.clone()).unwrap_or_default()
}

fn on(mode: Option<&str>) -> CommonArgs {
    let mut args = CommonArgs::default();
    args.backends.consul.url = Some("http://127.0.0.1:8500".into());
    args.backends.consul.agent_mode = mode.map(str::to_owned);
    args
}

#[test]
fn consul_agent_mode() {
    let c = merge(on(None), "").unwrap();
    assert_eq!(agents(&c), Agents::Single);
    let c =
        merge(on(Some("per-host")), "consul_agent_port = 8501\n[consul_agents]\n\"10.0.0.1\" = \"https://a:8501\"\n")
            .unwrap();
    let Agents::PerHost { scheme, port, map } = agents(&c) else { panic!("not per-host") };
    assert_eq!((scheme.as_str(), port), ("http", 8501));
    assert_eq!(map["10.0.0.1"].as_str(), "https://a:8501/");

    let c = merge(on(None), "consul_agent_mode = \"per-host\"\nconsul_agent_port = \"8502\"").unwrap();
    assert!(matches!(agents(&c), Agents::PerHost { port: 8502, .. }));
    let e = merge(on(Some("each")), "").unwrap_err();
    assert!(e.to_string().contains("--consul-agent-mode (SWITCHBOARD_CONSUL_AGENT_MODE)"), "{e}");
    let e =
        merge(CommonArgs::default(), "consul_agent_mode = \"per-host\"\nconsul_agent_scheme = \"ftp\"").unwrap_err();
    assert!(e.to_string().contains("`consul_agent_scheme` (config file)"), "{e}");
    let e =
        merge(CommonArgs::default(), "consul_agent_mode = \"per-host\"\n[consul_agents]\nh = \"nope\"").unwrap_err();
    assert!(e.to_string().contains("consul_agents.h"), "{e}");
    let e = merge(CommonArgs::default(), "[consul_agents]\nh = \"http://h:8500\"").unwrap_err();
    assert!(e.to_string().contains("per-host"), "{e}");
}

#[test]
fn per_host_without_consul_is_refused_only_when_running() {
    let mut args = CommonArgs { marathon: vec!["http://m:8080".into()], ..Default::default() };
    args.backends.consul.agent_mode = Some("per-host".into());
    let c = merge(args, "").expect("a config that `switchboard state` can use");
    let e = c.require_runnable().unwrap_err();
    assert_eq!(e.setting, "--consul-agent-mode (SWITCHBOARD_CONSUL_AGENT_MODE)");
    assert!(e.reason.contains("per-host needs --consul too"), "{e}");
}

#[test]
fn replace_setting() {
    let tag = |c: &Config| {
        let consul: &ConsulConfig = c.backend("consul").unwrap().config().unwrap();
        consul.replace.as_ref().map(|r| r.tag().to_owned())
    };
    let consul = || consul_at("http://127.0.0.1:8500");
    assert_eq!(tag(&merge(consul(), "").unwrap()), None);
    let mut args = consul();
    args.backends.consul.replace = Some("marathon-consul".into());
    assert_eq!(tag(&merge(args, "").unwrap()).as_deref(), Some("marathon"));
    assert_eq!(tag(&merge(consul(), "replace = \"marathon-consul:prod\"").unwrap()).as_deref(), Some("prod"));

    let mut args = consul();
    args.backends.consul.replace = Some("registrator".into());
    let e = merge(args, "").unwrap_err();
    assert!(e.to_string().contains("--replace (SWITCHBOARD_REPLACE)"), "{e}");
    assert!(e.to_string().contains("\"registrator\""), "{e}");
    let e = merge(consul(), "replace = \"marathon-consul:\"").unwrap_err();
    assert!(e.to_string().contains("`replace` (config file)"), "{e}");
    let mut args = CommonArgs::default();
    args.backends.consul.replace = Some("marathon-consul".into());
    let e = merge(args, "").unwrap_err();
    assert!(e.to_string().contains("--replace") && e.to_string().contains("--consul"), "{e}");
}
