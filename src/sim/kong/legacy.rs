//! Kong 0.10–0.14: `/apis` and upstreams without tags.

use super::*;

pub(super) fn build_api(body: &Map<String, Value>, id: String, created_at: u64) -> Result<Value, Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(
        body,
        &[
            "id",
            "created_at",
            "name",
            "hosts",
            "uris",
            "methods",
            "strip_uri",
            "preserve_host",
            "upstream_url",
            "retries",
            "upstream_connect_timeout",
            "upstream_send_timeout",
            "upstream_read_timeout",
            "https_only",
            "http_if_terminated",
        ],
        &mut v,
    );
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        v.insert("name".into(), "name is required".into());
    }
    let upstream_url = body.get("upstream_url").and_then(Value::as_str).unwrap_or_default().to_owned();
    if upstream_url.is_empty() {
        v.insert("upstream_url".into(), "upstream_url is required".into());
    } else if url::Url::parse(&upstream_url).ok().and_then(|u| u.host_str().map(str::to_owned)).is_none() {
        v.insert("upstream_url".into(), "upstream_url is not a url".into());
    }
    let hosts = str_list(body.get("hosts")).and_then(Result::ok).unwrap_or_default();
    let uris = str_list(body.get("uris")).and_then(Result::ok).unwrap_or_default();
    let methods = str_list(body.get("methods")).and_then(Result::ok).unwrap_or_default();
    for h in &hosts {
        let bare = h.trim_start_matches("*.").trim_end_matches(".*");
        if !is_hostname(bare) && !is_ip(bare) {
            v.insert("hosts".into(), format!("host with value '{h}' is invalid"));
        }
    }
    for u in &uris {
        if !u.starts_with('/') {
            v.insert("uris".into(), format!("uri with value '{u}' is invalid: must be prefixed with slash"));
        }
    }
    if !v.is_empty() {
        return Err(Violation(v));
    }
    if hosts.is_empty() && uris.is_empty() && methods.is_empty() {
        return Err(Violation::one("message", "at least one of 'hosts', 'uris' or 'methods' must be specified"));
    }
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": created_at, "name": name, "strip_uri": get("strip_uri", json!(true)),
        "preserve_host": get("preserve_host", json!(false)), "upstream_url": upstream_url, "retries": get("retries", json!(5)),
        "upstream_connect_timeout": 60000, "upstream_send_timeout": 60000, "upstream_read_timeout": 60000,
        "https_only": get("https_only", json!(false)), "http_if_terminated": get("http_if_terminated", json!(true)),
    });
    // 0.x omits empty arrays from responses.
    for (k, l) in [("hosts", hosts), ("uris", uris), ("methods", methods)] {
        if !l.is_empty() {
            out[k] = json!(l);
        }
    }
    Ok(out)
}

pub(super) fn legacy_upstream(
    era: Gen,
    body: &Map<String, Value>,
    id: String,
    created_at: u64,
) -> Result<Value, Violation> {
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        return Err(Violation::one("name", "name is required"));
    }
    if is_ip(&name) || name.contains(':') || !is_hostname(&name) {
        return Err(Violation::one("message", format!("Invalid name; must be a valid hostname: {name}")));
    }
    if body.contains_key("tags") {
        return Err(Violation::one("tags", "unknown field"));
    }
    let slots = body.get("slots").and_then(Value::as_u64).unwrap_or(1000);
    let _ = era;
    Ok(
        json!({"id": id, "created_at": created_at, "name": name, "slots": slots, "orderlist": (1..=slots.min(16)).collect::<Vec<_>>()}),
    )
}

pub(super) fn legacy(db: &mut Db, ctx: &Ctx, method: &Method, segs: &[&str], body: Map<String, Value>) -> Reply {
    let era = ctx.era;
    let m = method.as_str();
    match segs {
        ["apis"] => match m {
            "GET" => list(ctx, &db.apis),
            "POST" | "PUT" => {
                let existing = body.get("id").and_then(Value::as_str).and_then(|id| position(&db.apis, id));
                if m == "PUT" && body.contains_key("id") && existing.is_none() {
                    return not_found();
                }
                let (id, created_at) = match existing {
                    Some(p) => (
                        db.apis[p]["id"].as_str().unwrap_or_default().to_owned(),
                        db.apis[p]["created_at"].as_u64().unwrap_or(0),
                    ),
                    None => (db.next_id(), db.tick()),
                };
                let built = match build_api(&body, id, created_at) {
                    Ok(b) => b,
                    Err(v) => return v.render(era),
                };
                let name = built["name"].as_str().unwrap_or_default().to_owned();
                if db
                    .apis
                    .iter()
                    .enumerate()
                    .any(|(i, a)| Some(i) != existing && a["name"].as_str() == Some(name.as_str()))
                {
                    return unique_violation(era, "name", &name);
                }
                match existing {
                    Some(p) => {
                        db.apis[p] = built.clone();
                        reply(200, built)
                    }
                    None => {
                        db.apis.push(built.clone());
                        reply(201, built)
                    }
                }
            }
            _ => method_not_allowed(),
        },
        ["apis", a] => {
            let Some(p) = position(&db.apis, a) else {
                return not_found();
            };
            match m {
                "GET" => reply(200, db.apis[p].clone()),
                "DELETE" => {
                    db.apis.remove(p);
                    no_content()
                }
                "PATCH" => {
                    if body.is_empty() {
                        return reply(400, json!({"message": "empty body"}));
                    }
                    let Value::Object(mut merged) = db.apis[p].clone() else {
                        return not_found();
                    };
                    for (k, v) in body {
                        merged.insert(k, v);
                    }
                    let id = db.apis[p]["id"].as_str().unwrap_or_default().to_owned();
                    let created_at = db.apis[p]["created_at"].as_u64().unwrap_or(0);
                    match build_api(&merged, id, created_at) {
                        Ok(b) => {
                            db.apis[p] = b.clone();
                            reply(200, b)
                        }
                        Err(v) => v.render(era),
                    }
                }
                _ => method_not_allowed(),
            }
        }
        ["upstreams"] => match m {
            "GET" => list(ctx, &db.upstreams),
            "POST" => {
                let (id, at) = (db.next_id(), db.tick());
                let built = match legacy_upstream(era, &body, id, at) {
                    Ok(b) => b,
                    Err(v) => return v.render(era),
                };
                let name = built["name"].as_str().unwrap_or_default().to_owned();
                if position(&db.upstreams, &name).is_some() {
                    return unique_violation(era, "name", &name);
                }
                db.upstreams.push(built.clone());
                reply(201, built)
            }
            _ => method_not_allowed(),
        },
        ["upstreams", u] => {
            let Some(p) = position(&db.upstreams, u) else {
                return not_found();
            };
            match m {
                "GET" => reply(200, db.upstreams[p].clone()),
                "DELETE" => {
                    let id = db.upstreams[p]["id"].as_str().unwrap_or_default().to_owned();
                    db.targets.retain(|t| t.upstream_id != id);
                    db.upstreams.remove(p);
                    no_content()
                }
                _ => method_not_allowed(),
            }
        }
        ["upstreams", u, "targets", rest @ ..] => targets_endpoint(db, ctx, method, u, rest, body),
        _ => not_found(),
    }
}
