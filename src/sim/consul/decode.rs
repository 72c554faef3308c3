//! Decoding and validation of register bodies, with the texts a modern
//! Consul agent answers (reference §1–§2): strict field names, Go JSON type
//! errors, meta, weights and check rules.
//!
//! Invariant: pure functions; an `Err` is the exact 400 body Consul sends.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Service, SimCheck};

/// Case-insensitive field lookup, as Go's JSON decoding does.
pub(super) fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "EnableTagOverride",
    "enable_tag_override",
    "Weights",
    "Check",
    "Checks",
    "TaggedAddresses",
    "tagged_addresses",
    "Kind",
    "Proxy",
    "Connect",
    "SocketPath",
    "LocallyRegisteredAsSidecar",
];

const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "ID",
    "Name",
    "Notes",
    "ScriptArgs",
    "args",
    "DockerContainerID",
    "Shell",
    "HTTP",
    "Method",
    "Header",
    "Body",
    "TCP",
    "UDP",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "H2PingUseTLS",
    "OSService",
    "AliasNode",
    "AliasService",
    "TLSServerName",
    "TLSSkipVerify",
    "tls_skip_verify",
    "Interval",
    "TTL",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "deregister_critical_service_after",
    "Status",
    "SuccessBeforePassing",
    "FailuresBeforeWarning",
    "FailuresBeforeCritical",
    "OutputMaxSize",
    "ServiceID",
    "ServiceName",
    "Type",
];

fn decode_failed(msg: impl std::fmt::Display) -> String {
    format!("Request decode failed: {msg}")
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(v: &Value, field: &str, go_type: &str) -> String {
    decode_failed(format!("json: cannot unmarshal {} into Go struct field {field} of type {go_type}", json_kind(v)))
}

fn check_unknown(obj: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    for k in obj.keys() {
        if !known.iter().any(|f| f.eq_ignore_ascii_case(k)) {
            return Err(decode_failed(format!("json: unknown field {k:?}")));
        }
    }
    Ok(())
}

fn opt_str(obj: &Value, name: &str) -> Result<String, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(type_error(v, name, "string")),
    }
}

fn opt_int(obj: &Value, name: &str) -> Result<i64, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_i64().ok_or_else(|| type_error(v, name, "int")),
    }
}

/// Go duration: a number (nanoseconds) or a string like `10s`, `1m30s`, `500ms`.
fn opt_duration(obj: &Value, name: &str) -> Result<i128, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_i64().map(i128::from).ok_or_else(|| type_error(&json!(0.5), name, "int64")),
        Some(Value::String(s)) => {
            parse_go_duration(s).ok_or_else(|| decode_failed(format!("time: invalid duration {s:?}")))
        }
        Some(v) => Err(type_error(v, name, "time.Duration")),
    }
}

/// Parses Go's `time.ParseDuration` syntax into nanoseconds.
pub(super) fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * scale;
    }
    let ns = total.round() as i128;
    Some(if neg { -ns } else { ns })
}

pub(super) fn decode_register(body: &[u8], no_meta: bool) -> Result<Service, String> {
    let v: Value = serde_json::from_slice(body).map_err(decode_failed)?;
    let Some(obj) = v.as_object() else {
        return Err(decode_failed(format!(
            "json: cannot unmarshal {} into Go value of type structs.ServiceDefinition",
            json_kind(&v)
        )));
    };
    // Pre-1.7 agents (and so pre-1.0.7 ones) ignore unknown fields.
    if !no_meta {
        check_unknown(obj, SERVICE_FIELDS)?;
    }
    let name = opt_str(&v, "Name")?;
    let id = opt_str(&v, "ID")?;
    let address = opt_str(&v, "Address")?;
    let port = opt_int(&v, "Port")?;
    let tags = match field(&v, "Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or_else(|| type_error(t, "Tags", "string")))
            .collect::<Result<_, _>>()?,
        Some(t) => return Err(type_error(t, "Tags", "[]string")),
    };
    let meta: BTreeMap<String, String> = match field(&v, "Meta") {
        _ if no_meta => BTreeMap::new(),
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, val)| match val {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(type_error(other, "Meta", "string")),
            })
            .collect::<Result<_, _>>()?,
        Some(m) => return Err(type_error(m, "Meta", "map[string]string")),
    };
    let enable_tag_override = match field(&v, "EnableTagOverride").or_else(|| field(&v, "enable_tag_override")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(b) => return Err(type_error(b, "EnableTagOverride", "bool")),
    };
    let weights = match field(&v, "Weights") {
        None | Some(Value::Null) => (1, 1),
        Some(w @ Value::Object(_)) => (opt_int(w, "Passing")?, opt_int(w, "Warning")?),
        Some(w) => return Err(type_error(w, "Weights", "api.AgentWeights")),
    };
    let mut raw_checks: Vec<CheckFields> = Vec::new();
    match field(&v, "Check") {
        None | Some(Value::Null) => {}
        Some(c @ Value::Object(m)) => {
            check_unknown(m, CHECK_FIELDS)?;
            if m.values().any(|x| !is_empty_json(x)) {
                raw_checks.push(decode_check(c)?);
            }
        }
        Some(c) => return Err(type_error(c, "Check", "structs.CheckType")),
    }
    match field(&v, "Checks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for c in a {
                let Some(m) = c.as_object() else {
                    return Err(type_error(c, "Checks", "structs.CheckType"));
                };
                check_unknown(m, CHECK_FIELDS)?;
                raw_checks.push(decode_check(c)?);
            }
        }
        Some(c) => return Err(type_error(c, "Checks", "structs.CheckTypes")),
    }

    if name.is_empty() {
        return Err("Missing service name".to_owned());
    }
    validate_meta(&meta).map_err(|e| format!("Invalid Service Meta: {e}"))?;
    if weights.0 < 1 {
        return Err("Invalid Weights: Passing must be greater than 0".to_owned());
    }
    if weights.1 < 0 {
        return Err("Invalid Weights: Warning must be greater or equal than 0".to_owned());
    }
    if weights.0 > 65535 || weights.1 > 65535 {
        return Err("Invalid Weights: DNS Weight must be between 0 and 65535".to_owned());
    }
    let id = if id.is_empty() { name.clone() } else { id };
    let many = raw_checks.len() > 1;
    let mut checks = Vec::new();
    for (n, c) in raw_checks.into_iter().enumerate() {
        let kind = validate_check(&c).map_err(|e| format!("Invalid check: {e}"))?;
        let status = match c.status.as_str() {
            "" => "critical".to_owned(),
            "passing" | "warning" | "critical" => c.status,
            _ => return Err("Status for checks must 'passing', 'warning', 'critical'".to_owned()),
        };
        let check_id = match c.id {
            i if !i.is_empty() => i,
            _ if many => format!("service:{id}:{}", n + 1),
            _ => format!("service:{id}"),
        };
        let check_name = if c.name.is_empty() { format!("Service '{name}' check") } else { c.name };
        checks.push(SimCheck { id: check_id, name: check_name, kind, status });
    }
    if matches!(address.as_str(), "0.0.0.0" | "::" | "[::]") {
        return Err("Invalid service address".to_owned());
    }
    Ok(Service { id, name, tags, address, port, meta, weights, enable_tag_override, checks })
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The fields of one check object that the simulator uses, decoded.
struct CheckFields {
    interval: i128,
    ttl: i128,
    kind: Option<&'static str>,
    status: String,
    id: String,
    name: String,
}

/// Decodes one check object; only type and syntax errors here.
fn decode_check(c: &Value) -> Result<CheckFields, String> {
    let interval = opt_duration(c, "Interval")?;
    let ttl = opt_duration(c, "TTL")?;
    opt_duration(c, "Timeout")?;
    opt_duration(c, "DeregisterCriticalServiceAfter")?;
    let kind = if !opt_str(c, "HTTP")?.is_empty() {
        Some("http")
    } else if !opt_str(c, "TCP")?.is_empty() {
        Some("tcp")
    } else if !opt_str(c, "GRPC")?.is_empty() {
        Some("grpc")
    } else if !opt_str(c, "UDP")?.is_empty() {
        Some("udp")
    } else if field(c, "ScriptArgs").is_some_and(|a| !is_empty_json(a)) {
        Some("script")
    } else {
        None
    };
    let mut id = opt_str(c, "CheckID")?;
    if id.is_empty() {
        id = opt_str(c, "ID")?;
    }
    Ok(CheckFields { interval, ttl, kind, status: opt_str(c, "Status")?, id, name: opt_str(c, "Name")? })
}

/// `CheckType.Validate` of a modern agent; returns the check's type.
fn validate_check(c: &CheckFields) -> Result<&'static str, String> {
    if c.interval > 0 && c.ttl > 0 {
        return Err("Interval and TTL cannot both be specified".to_owned());
    }
    match c.kind {
        Some(_) if c.interval <= 0 => {
            Err("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks".to_owned())
        }
        Some(k) => Ok(k),
        None if c.ttl <= 0 => Err("TTL must be > 0 for TTL checks".to_owned()),
        None => Ok("ttl"),
    }
}

/// `validateMetadata` + `validateMetaPair` of `agent/structs/structs.go`.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".to_owned());
    }
    for (k, v) in meta {
        let problem = if k.is_empty() {
            Some("Key cannot be blank")
        } else if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            Some("Key contains invalid characters")
        } else if k.len() > 128 {
            Some("Key is too long (limit: 128 characters)")
        } else if k.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use")
        } else if v.len() > 512 {
            Some("Value is too long (limit: 512 characters)")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(format!("Couldn't load metadata pair ('{k}', '{v}'): {p}"));
        }
    }
    Ok(())
}
