//! Targets in both generations: the append-only history (0.10–2.1) and plain entities (2.2+).

use super::*;

pub(super) fn render_target(t: &TargetRow, era: Gen) -> Value {
    if era.legacy {
        json!({"id": t.id, "created_at": t.created_at, "upstream_id": t.upstream_id, "target": t.target, "weight": t.weight})
    } else {
        json!({"id": t.id, "created_at": t.created_at as f64 / 1000.0, "upstream": {"id": t.upstream_id},
               "target": t.target, "weight": t.weight, "tags": t.tags})
    }
}

/// Newest row per target string, weight > 0 (append-only); all rows from 2.2.
pub(super) fn active_targets(db: &Db, upstream_id: &str, era: Gen) -> Vec<TargetRow> {
    let rows = db.targets.iter().filter(|t| t.upstream_id == upstream_id);
    if !era.append_only {
        return rows.cloned().collect();
    }
    let mut newest: BTreeMap<&str, &TargetRow> = BTreeMap::new();
    for r in rows {
        newest.insert(&r.target, r);
    }
    let mut out: Vec<TargetRow> = newest.into_values().filter(|r| r.weight > 0).cloned().collect();
    out.sort_by_key(|r| r.created_at);
    out
}

pub(super) fn parse_target(
    era: Gen,
    body: &Map<String, Value>,
    require_target: bool,
) -> Result<(Option<String>, Option<u64>, Value), Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(body, &["target", "weight", "tags", "upstream", "id", "created_at", "updated_at"], &mut v);
    let target = match body.get("target").and_then(Value::as_str) {
        Some(t) => match split_host_port(t) {
            Some((h, p)) if is_ip(h.trim_matches(['[', ']'])) || is_hostname(&h) => {
                Some(format!("{h}:{}", p.unwrap_or(8000)))
            }
            _ => {
                v.insert("target".into(), "Invalid target; not a valid hostname or ip address".into());
                None
            }
        },
        None => {
            if require_target {
                v.insert("target".into(), "required field missing".into());
            }
            None
        }
    };
    let weight = match body.get("weight") {
        None | Some(Value::Null) => None,
        Some(w) => match w.as_u64() {
            Some(n) if n <= era.max_weight => Some(n),
            _ => {
                let msg = if era.legacy {
                    "weight must be from 0 to 1000".to_owned()
                } else {
                    format!("value should be between 0 and {}", era.max_weight)
                };
                v.insert("weight".into(), msg);
                None
            }
        },
    };
    let tags = check_tags(era, body, &mut v);
    if v.is_empty() {
        Ok((target, weight, tags))
    } else if era.legacy && v.len() == 1 && !v.contains_key("tags") {
        Err(Violation::one("message", v.into_values().next().unwrap_or_default()))
    } else {
        Err(Violation(v))
    }
}

pub(super) fn targets_endpoint(
    db: &mut Db,
    ctx: &Ctx,
    method: &Method,
    upstream: &str,
    rest: &[&str],
    body: Map<String, Value>,
) -> Reply {
    let era = ctx.era;
    let Some(uid) = find(&db.upstreams, upstream).and_then(|u| u["id"].as_str()).map(str::to_owned) else {
        return not_found();
    };
    match (method.as_str(), rest) {
        ("GET", []) => {
            let rows: Vec<TargetRow> = if era.history_in_targets {
                db.targets.iter().filter(|t| t.upstream_id == uid).cloned().collect()
            } else {
                active_targets(db, &uid, era)
            };
            page(ctx, rows.iter().rev().map(|t| render_target(t, era)).collect(), false)
        }
        ("GET", ["active"]) if era.history_in_targets => {
            let rows = active_targets(db, &uid, era);
            reply(
                200,
                json!({"total": rows.len(), "data": rows.iter().map(|t| render_target(t, era)).collect::<Vec<_>>()}),
            )
        }
        ("GET", ["all"]) if !era.history_in_targets => {
            let rows: Vec<Value> =
                db.targets.iter().filter(|t| t.upstream_id == uid).rev().map(|t| render_target(t, era)).collect();
            page(ctx, rows, false)
        }
        ("POST", []) => {
            let (target, weight, tags) = match parse_target(era, &body, true) {
                Ok(x) => x,
                Err(v) => return v.render(era),
            };
            let target = target.unwrap_or_default();
            let weight = weight.unwrap_or(100);
            let created_at = db.tick();
            if !era.append_only
                && let Some(existing) = db.targets.iter_mut().find(|t| t.upstream_id == uid && t.target == target)
            {
                if era.dup_target_409 {
                    return unique_violation(era, "target", &target);
                }
                existing.weight = weight;
                existing.tags = tags;
                let entry = (weight > 0, existing.target.clone());
                if weight > 0 {
                    ctx.tap.arrived(&existing.target);
                }
                let rendered = render_target(existing, era);
                db.history.push(entry);
                return reply(200, rendered);
            }
            let row = TargetRow { id: db.next_id(), upstream_id: uid, target, weight, tags, created_at };
            db.targets.push(row.clone());
            db.history.push((row.weight > 0, row.target.clone()));
            if row.weight > 0 {
                ctx.tap.arrived(&row.target);
            }
            reply(201, render_target(&row, era))
        }
        (m, [t]) => {
            let t = if t.contains(':') || db.targets.iter().any(|r| r.id == *t) {
                (*t).to_owned()
            } else {
                format!("{t}:8000")
            };
            let matches = |r: &TargetRow| r.upstream_id == uid && (r.target == t || r.id == t);
            if era.append_only {
                if m != "DELETE" {
                    return method_not_allowed();
                }
                let Some(last) = db.targets.iter().rev().find(|r| matches(r)).cloned() else {
                    return not_found();
                };
                let created_at = db.tick();
                let row = TargetRow { id: db.next_id(), weight: 0, created_at, ..last };
                db.history.push((false, row.target.clone()));
                db.targets.push(row);
                return no_content();
            }
            let Some(pos) = db.targets.iter().position(matches) else {
                return not_found();
            };
            match m {
                "GET" => reply(200, render_target(&db.targets[pos], era)),
                "DELETE" => {
                    let gone = db.targets.remove(pos);
                    db.history.push((false, gone.target));
                    no_content()
                }
                "PUT" | "PATCH" => {
                    let (_, weight, tags) = match parse_target(era, &body, false) {
                        Ok(x) => x,
                        Err(v) => return v.render(era),
                    };
                    let row = &mut db.targets[pos];
                    let was_active = row.weight > 0;
                    if m == "PUT" {
                        row.weight = weight.unwrap_or(100);
                        row.tags = tags;
                    } else {
                        if let Some(w) = weight {
                            row.weight = w;
                        }
                        if body.contains_key("tags") {
                            row.tags = tags;
                        }
                    }
                    if row.weight > 0 && !was_active {
                        ctx.tap.arrived(&row.target);
                    }
                    let entry = ((row.weight > 0) != was_active).then(|| (row.weight > 0, row.target.clone()));
                    let rendered = render_target(row, era);
                    db.history.extend(entry);
                    reply(200, rendered)
                }
                _ => method_not_allowed(),
            }
        }
        _ => not_found(),
    }
}
