//! Shared helpers of the Kong simulator: lookups, validation, tags, pagination.

use super::*;

pub(super) fn find<'a>(list: &'a [Value], key: &str) -> Option<&'a Value> {
    list.iter().find(|v| v["id"].as_str() == Some(key) || v["name"].as_str() == Some(key))
}

pub(super) fn position(list: &[Value], key: &str) -> Option<usize> {
    list.iter().position(|v| v["id"].as_str() == Some(key) || v["name"].as_str() == Some(key))
}

pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

pub(super) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Splits `host[:port]`, IPv6 as `[::1]:80`.
pub(super) fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{h}]"), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_owned(), Some(p.parse().ok()?))),
        _ => Some((s.to_owned(), None)),
    }
}

pub(super) fn check_tags(era: Gen, body: &Map<String, Value>, v: &mut BTreeMap<String, String>) -> Value {
    match body.get("tags") {
        None | Some(Value::Null) => Value::Null,
        Some(_) if !era.tags => {
            v.insert("tags".into(), "unknown field".into());
            Value::Null
        }
        Some(Value::Array(items)) => {
            for t in items {
                let ok = t
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && !s.contains(',') && !s.contains('/') && !s.contains(' '));
                if !ok {
                    v.insert(
                        "tags".into(),
                        format!(
                            "invalid tag '{}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences",
                            t.as_str().unwrap_or("?")
                        ),
                    );
                }
            }
            Value::Array(items.clone())
        }
        Some(_) => {
            v.insert("tags".into(), "expected a set".into());
            Value::Null
        }
    }
}

pub(super) fn str_list(val: Option<&Value>) -> Option<Result<Vec<String>, ()>> {
    match val {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.iter().map(|x| x.as_str().map(str::to_owned).ok_or(())).collect()),
        Some(Value::String(s)) => {
            Some(Ok(s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect()))
        }
        Some(_) => Some(Err(())),
    }
}

pub(super) fn reject_unknown(body: &Map<String, Value>, allowed: &[&str], v: &mut BTreeMap<String, String>) {
    for k in body.keys() {
        if !allowed.contains(&k.as_str()) {
            v.insert(k.clone(), "unknown field".into());
        }
    }
}

pub(super) fn tags_match(entity: &Value, filter: &str) -> bool {
    let has = |t: &str| entity["tags"].as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some(t)));
    if filter.contains('/') { filter.split('/').any(has) } else { filter.split(',').all(has) }
}

/// Paginates `items` per `size`/`offset`; `next` carries `tags`/`size` for
/// top-level collections as Kong does.
pub(super) fn page(ctx: &Ctx, items: Vec<Value>, top_level: bool) -> Reply {
    let era = ctx.era;
    let size = match ctx.query.get("size") {
        None => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return reply(400, json!({"code": 9, "name": "invalid size", "message": "size must be a number"}));
            }
        },
    };
    let start = match ctx.query.get("offset") {
        None => 0,
        Some(o) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(o)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("sim:").and_then(|n| n.parse::<usize>().ok()));
            match decoded {
                Some(n) => n,
                None => {
                    return reply(
                        400,
                        json!({"code": 7, "name": "invalid offset", "message": format!("'{o}' is not a valid offset: bad base64 encoding")}),
                    );
                }
            }
        }
    };
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let mut out = Map::new();
    out.insert("data".into(), Value::Array(data));
    if era.legacy {
        out.insert("total".into(), json!(total));
    }
    if start + size < total {
        let offset = base64::engine::general_purpose::STANDARD.encode(format!("sim:{}", start + size));
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        next.append_pair("offset", &offset);
        if top_level || era.legacy {
            if let Some(t) = ctx.query.get("tags") {
                next.append_pair("tags", t);
            }
            if let Some(s) = ctx.query.get("size") {
                next.append_pair("size", s);
            }
        }
        out.insert("offset".into(), json!(offset));
        out.insert("next".into(), json!(format!("{}?{}", ctx.path, next.finish())));
    } else if !era.legacy {
        out.insert("next".into(), Value::Null);
    }
    reply(200, Value::Object(out))
}

pub(super) fn list(ctx: &Ctx, items: &[Value]) -> Reply {
    let filtered: Vec<Value> = match ctx.query.get("tags") {
        Some(t) if t.is_empty() => {
            return reply(
                400,
                json!({"code": 11, "name": "invalid options", "message": "invalid option (tags: cannot be null)", "fields": {"tags": "cannot be null"}}),
            );
        }
        Some(t) if !ctx.era.legacy => items.iter().filter(|e| tags_match(e, t)).cloned().collect(),
        _ => items.to_vec(),
    };
    page(ctx, filtered, true)
}
