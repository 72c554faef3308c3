//! Kong 1.x–3.x entities: upstreams, services, routes (PUT by name, tags, 409 unique violations).

use super::*;

const UPSTREAM_FIELDS: &[&str] = &[
    "id",
    "name",
    "algorithm",
    "hash_on",
    "hash_fallback",
    "hash_on_header",
    "hash_fallback_header",
    "hash_on_cookie",
    "hash_on_cookie_path",
    "slots",
    "healthchecks",
    "tags",
    "host_header",
    "client_certificate",
    "use_srv_name",
    "created_at",
    "updated_at",
];

pub(super) fn build_upstream(
    era: Gen,
    mut body: Map<String, Value>,
    name_from_url: Option<&str>,
    id: String,
) -> Result<Value, Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(&body, UPSTREAM_FIELDS, &mut v);
    if let Some(n) = name_from_url {
        body.insert("name".into(), json!(n));
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        v.insert("name".into(), "required field missing".into());
    } else if is_ip(&name) {
        v.insert("name".into(), format!("Invalid name ('{name}'); no ip addresses allowed"));
    } else if name.contains(':') {
        v.insert("name".into(), format!("Invalid name ('{name}'); no port allowed"));
    } else if !is_hostname(&name) {
        v.insert("name".into(), format!("Invalid name ('{name}'); must be a valid hostname"));
    }
    let slots = body.get("slots").and_then(Value::as_u64).unwrap_or(10000);
    if !(10..=65536).contains(&slots) {
        v.insert("slots".into(), "value should be between 10 and 65536".into());
    }
    let tags = check_tags(era, &body, &mut v);
    if !v.is_empty() {
        return Err(Violation(v));
    }
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": 1_700_000_000, "updated_at": 1_700_000_000, "name": name,
        "algorithm": get("algorithm", json!("round-robin")), "hash_on": get("hash_on", json!("none")),
        "hash_fallback": get("hash_fallback", json!("none")), "hash_on_header": get("hash_on_header", Value::Null),
        "hash_fallback_header": get("hash_fallback_header", Value::Null), "hash_on_cookie": get("hash_on_cookie", Value::Null),
        "hash_on_cookie_path": get("hash_on_cookie_path", json!("/")), "slots": slots,
        "healthchecks": get("healthchecks", json!({"active": {}, "passive": {}, "threshold": 0})),
        "host_header": get("host_header", Value::Null), "client_certificate": get("client_certificate", Value::Null),
        "use_srv_name": get("use_srv_name", json!(false)),
    });
    if era.tags {
        out["tags"] = tags;
    }
    Ok(out)
}

const SERVICE_FIELDS: &[&str] = &[
    "id",
    "name",
    "protocol",
    "host",
    "port",
    "path",
    "retries",
    "connect_timeout",
    "write_timeout",
    "read_timeout",
    "tags",
    "client_certificate",
    "tls_verify",
    "tls_verify_depth",
    "ca_certificates",
    "enabled",
    "url",
    "created_at",
    "updated_at",
];

pub(super) fn build_service(
    era: Gen,
    mut body: Map<String, Value>,
    name_from_url: Option<&str>,
    id: String,
) -> Result<Value, Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(&body, SERVICE_FIELDS, &mut v);
    if let Some(n) = name_from_url {
        body.insert("name".into(), json!(n));
    }
    if let Some(u) = body.remove("url") {
        match u.as_str().and_then(|s| url::Url::parse(s).ok()) {
            Some(u) => {
                body.insert("protocol".into(), json!(u.scheme()));
                body.insert("host".into(), json!(u.host_str().unwrap_or_default()));
                body.insert("port".into(), json!(u.port_or_known_default().unwrap_or(80)));
                let p = u.path();
                body.insert("path".into(), if p == "/" || p.is_empty() { Value::Null } else { json!(p) });
            }
            None => {
                v.insert("url".into(), "missing host in url".into());
            }
        }
    }
    let name = body.get("name").cloned().unwrap_or(Value::Null);
    if let Some(n) = name.as_str()
        && (n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c)))
    {
        v.insert("name".into(), "invalid value: only alphanumerics and '.', '-', '_', '~' allowed".into());
    }
    let host = body.get("host").and_then(Value::as_str).unwrap_or_default().to_owned();
    if host.is_empty() {
        v.insert("host".into(), "required field missing".into());
    } else if host.contains(':') && !is_ip(&host) {
        v.insert("host".into(), "must not have a port".into());
    } else if !is_ip(&host) && !is_hostname(&host) {
        v.insert("host".into(), "invalid value: must be a hostname or an ip address".into());
    }
    let path = body.get("path").cloned().unwrap_or(Value::Null);
    if let Some(p) = path.as_str()
        && (!p.starts_with('/') || p.contains("//"))
    {
        v.insert("path".into(), "should start with: /".into());
    }
    let tags = check_tags(era, &body, &mut v);
    if !v.is_empty() {
        return Err(Violation(v));
    }
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": 1_700_000_000, "updated_at": 1_700_000_000, "name": name,
        "protocol": get("protocol", json!("http")), "host": host, "port": get("port", json!(80)), "path": path,
        "retries": get("retries", json!(5)), "connect_timeout": get("connect_timeout", json!(60000)),
        "write_timeout": get("write_timeout", json!(60000)), "read_timeout": get("read_timeout", json!(60000)),
        "client_certificate": Value::Null, "tls_verify": Value::Null, "tls_verify_depth": Value::Null,
        "ca_certificates": Value::Null, "enabled": get("enabled", json!(true)),
    });
    if era.tags {
        out["tags"] = tags;
    }
    Ok(out)
}

const ROUTE_FIELDS: &[&str] = &[
    "id",
    "name",
    "protocols",
    "methods",
    "hosts",
    "paths",
    "headers",
    "snis",
    "sources",
    "destinations",
    "strip_path",
    "preserve_host",
    "regex_priority",
    "path_handling",
    "https_redirect_status_code",
    "request_buffering",
    "response_buffering",
    "tags",
    "service",
    "created_at",
    "updated_at",
];

pub(super) fn build_route(
    db: &Db,
    era: Gen,
    mut body: Map<String, Value>,
    name_from_url: Option<&str>,
    id: String,
) -> Result<Value, Reply> {
    let mut v = BTreeMap::new();
    reject_unknown(&body, ROUTE_FIELDS, &mut v);
    if let Some(n) = name_from_url {
        body.insert("name".into(), json!(n));
    }
    let hosts = str_list(body.get("hosts"));
    let paths = str_list(body.get("paths"));
    let methods = str_list(body.get("methods"));
    for (field, list) in [("hosts", &hosts), ("paths", &paths), ("methods", &methods)] {
        if let Some(Err(())) = list {
            v.insert(field.into(), "expected a set".into());
        }
    }
    let hosts: Vec<String> = hosts.and_then(Result::ok).unwrap_or_default();
    let paths: Vec<String> = paths.and_then(Result::ok).unwrap_or_default();
    let methods: Vec<String> = methods.and_then(Result::ok).unwrap_or_default();
    for h in &hosts {
        let bare = split_host_port(h).map(|(h, _)| h).unwrap_or_default();
        let wild = bare.matches('*').count();
        let ok = match wild {
            0 => is_hostname(&bare) || is_ip(&bare),
            1 => bare.strip_prefix("*.").or_else(|| bare.strip_suffix(".*")).is_some_and(is_hostname),
            _ => false,
        };
        if !ok {
            v.insert("hosts".into(), format!("invalid wildcard: '{h}'"));
        }
    }
    for p in &paths {
        let p2 = if era.regex_tilde { p.strip_prefix('~').unwrap_or(p) } else { p.as_str() };
        if !p2.starts_with('/') {
            v.insert("paths".into(), "should start with: / (fixed path) or ~/ (regex path)".into());
        } else if p2.contains("//") {
            v.insert("paths".into(), "must not have empty segments".into());
        }
    }
    if hosts.is_empty() && paths.is_empty() && methods.is_empty() && body.get("headers").is_none_or(Value::is_null) {
        v.insert(
            "@entity".into(),
            "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'".into(),
        );
    }
    let tags = check_tags(era, &body, &mut v);
    if !v.is_empty() {
        return Err(Violation(v).render(era));
    }
    let service = match body.get("service") {
        None | Some(Value::Null) => Value::Null,
        Some(s) => {
            let key = s["id"].as_str().or_else(|| s["name"].as_str()).unwrap_or_default();
            match find(&db.services, key) {
                Some(svc) => json!({"id": svc["id"]}),
                None => {
                    return Err(reply(
                        400,
                        json!({"code": 13, "name": "foreign keys unresolved",
                               "message": "foreign key unresolved (service: the foreign key cannot be resolved)",
                               "fields": {"service": "the foreign key cannot be resolved"}}),
                    ));
                }
            }
        }
    };
    let null_if_empty = |l: Vec<String>| if l.is_empty() { Value::Null } else { json!(l) };
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": 1_700_000_000, "updated_at": 1_700_000_000,
        "name": body.get("name").cloned().unwrap_or(Value::Null),
        "protocols": get("protocols", json!(["http", "https"])), "methods": null_if_empty(methods),
        "hosts": null_if_empty(hosts), "paths": null_if_empty(paths), "headers": get("headers", Value::Null),
        "snis": Value::Null, "sources": Value::Null, "destinations": Value::Null,
        "strip_path": get("strip_path", json!(true)), "preserve_host": get("preserve_host", json!(false)),
        "regex_priority": get("regex_priority", json!(0)), "path_handling": get("path_handling", json!("v0")),
        "https_redirect_status_code": 426, "request_buffering": true, "response_buffering": true,
        "service": service,
    });
    if era.tags {
        out["tags"] = tags;
    }
    Ok(out)
}

/// PUT (upsert, replace), PATCH (merge), GET, DELETE on one named entity of a
/// top-level collection. `build` validates and fills defaults.
pub(super) fn entity(
    db: &mut Db,
    era: Gen,
    method: &Method,
    kind: Kind,
    key: &str,
    body: Map<String, Value>,
    forced: Option<(&str, Value)>,
) -> Reply {
    let pos = position(kind.list(db), key);
    match method.as_str() {
        "GET" => pos.map(|p| reply(200, kind.list(db)[p].clone())).unwrap_or_else(not_found),
        "DELETE" => {
            let Some(p) = pos else { return no_content() };
            let id = kind.list(db)[p]["id"].as_str().unwrap_or_default().to_owned();
            match kind {
                Kind::Service if db.routes.iter().any(|r| r["service"]["id"].as_str() == Some(id.as_str())) => {
                    return reply(
                        400,
                        json!({"code": 4, "name": "foreign key violation",
                               "message": "an existing 'routes' entity references this 'services' entity",
                               "fields": {"@referenced_by": "routes"}}),
                    );
                }
                Kind::Upstream => {
                    let gone: Vec<String> =
                        db.targets.iter().filter(|t| t.upstream_id == id).map(|t| t.target.clone()).collect();
                    db.history.extend(gone.into_iter().map(|t| (false, t)));
                    db.targets.retain(|t| t.upstream_id != id);
                }
                _ => {}
            }
            kind.list_mut(db).remove(p);
            no_content()
        }
        "PUT" | "PATCH" => {
            let mut merged = body;
            if method == Method::PATCH {
                let Some(p) = pos else { return not_found() };
                let Value::Object(mut old) = kind.list(db)[p].clone() else {
                    return not_found();
                };
                for (k, v) in merged {
                    old.insert(k, v);
                }
                merged = old;
            }
            if let Some((k, v)) = &forced {
                merged.insert((*k).to_owned(), v.clone());
            }
            let id = match pos {
                Some(p) => kind.list(db)[p]["id"].as_str().unwrap_or_default().to_owned(),
                None => db.next_id(),
            };
            // A PUT addressed by name keeps that name; by id, the body may name it.
            let name_from_url = if key == id { None } else { Some(key) };
            let built = match kind {
                Kind::Upstream => build_upstream(era, merged, name_from_url, id).map_err(|v| v.render(era)),
                Kind::Service => build_service(era, merged, name_from_url, id).map_err(|v| v.render(era)),
                Kind::Route => build_route(db, era, merged, name_from_url, id),
            };
            let built = match built {
                Ok(b) => b,
                Err(r) => return r,
            };
            if let Some(name) = built["name"].as_str() {
                let clash =
                    kind.list(db).iter().enumerate().any(|(i, e)| Some(i) != pos && e["name"].as_str() == Some(name));
                if clash {
                    return unique_violation(era, "name", name);
                }
            }
            match pos {
                Some(p) => kind.list_mut(db)[p] = built.clone(),
                None => kind.list_mut(db).push(built.clone()),
            }
            reply(200, built)
        }
        _ => method_not_allowed(),
    }
}

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Upstream,
    Service,
    Route,
}

impl Kind {
    fn list(self, db: &Db) -> &Vec<Value> {
        match self {
            Kind::Upstream => &db.upstreams,
            Kind::Service => &db.services,
            Kind::Route => &db.routes,
        }
    }
    fn list_mut(self, db: &mut Db) -> &mut Vec<Value> {
        match self {
            Kind::Upstream => &mut db.upstreams,
            Kind::Service => &mut db.services,
            Kind::Route => &mut db.routes,
        }
    }
}

pub(super) fn create(db: &mut Db, era: Gen, kind: Kind, body: Map<String, Value>) -> Reply {
    if let Some(name) = body.get("name").and_then(Value::as_str)
        && position(kind.list(db), name).is_some()
    {
        return unique_violation(era, "name", name);
    }
    let id = db.next_id();
    let built = match kind {
        Kind::Upstream => build_upstream(era, body, None, id).map_err(|v| v.render(era)),
        Kind::Service => build_service(era, body, None, id).map_err(|v| v.render(era)),
        Kind::Route => build_route(db, era, body, None, id),
    };
    match built {
        Ok(b) => {
            kind.list_mut(db).push(b.clone());
            reply(201, b)
        }
        Err(r) => r,
    }
}

pub(super) fn modern(db: &mut Db, ctx: &Ctx, method: &Method, segs: &[&str], body: Map<String, Value>) -> Reply {
    let era = ctx.era;
    let m = method.as_str();
    match segs {
        ["upstreams"] | ["services"] | ["routes"] => {
            let kind = match segs[0] {
                "upstreams" => Kind::Upstream,
                "services" => Kind::Service,
                _ => Kind::Route,
            };
            match m {
                "GET" => list(ctx, kind.list(db)),
                "POST" => create(db, era, kind, body),
                _ => method_not_allowed(),
            }
        }
        ["upstreams", u] => entity(db, era, method, Kind::Upstream, u, body, None),
        ["services", s] => entity(db, era, method, Kind::Service, s, body, None),
        ["routes", r] => entity(db, era, method, Kind::Route, r, body, None),
        ["upstreams", u, "targets", rest @ ..] => targets_endpoint(db, ctx, method, u, rest, body),
        ["services", s, "routes", rest @ ..] => {
            let Some(sid) = find(&db.services, s).map(|x| x["id"].clone()) else {
                return not_found();
            };
            match (m, rest) {
                ("GET", []) => {
                    let items: Vec<Value> = db.routes.iter().filter(|r| r["service"]["id"] == sid).cloned().collect();
                    page(ctx, items, false)
                }
                ("POST", []) => {
                    let mut body = body;
                    body.insert("service".into(), json!({"id": sid}));
                    create(db, era, Kind::Route, body)
                }
                (_, [r]) => {
                    let linked = find(&db.routes, r).map(|x| x["service"]["id"] == sid);
                    match (m, linked) {
                        ("PUT", None) | ("PUT", Some(true)) => {
                            entity(db, era, method, Kind::Route, r, body, Some(("service", json!({"id": sid}))))
                        }
                        (_, Some(true)) => entity(db, era, method, Kind::Route, r, body, None),
                        _ => not_found(),
                    }
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}
