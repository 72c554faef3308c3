//! The status page: the status model rendered as one self-contained HTML
//! document (inline CSS, no script, no external asset: it works on an
//! air-gapped host). It refreshes itself every few seconds, keeping its
//! search and page.
//!
//! Invariant: everything shown comes from the `StatusModel` it is given (the
//! JSON of `/api/status` with the same query); every value is escaped.
//! Elements carry `data-*` attributes (app, task, backend, state) so tests and
//! scripts can read the page without parsing its text.

use std::fmt::Write;

use crate::status::model::{BackendState, StatusModel};

/// Seconds between automatic refreshes.
pub const REFRESH_SECONDS: u32 = 5;

/// Instances shown per app on one page; `/api/status?app=` has them all.
pub const INSTANCES_PER_APP: usize = 200;

/// Escapes text for HTML content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn query_href(app: Option<&str>, page: usize, per_page: Option<usize>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(a) = app.filter(|a| !a.is_empty()) {
        q.append_pair("app", a);
    }
    q.append_pair("page", &page.to_string());
    if let Some(n) = per_page {
        q.append_pair("per_page", &n.to_string());
    }
    format!("?{}", q.finish())
}

fn duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min", ms / 60_000)
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}\
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .3em}\
table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}\
th{background:#f2f2f2}.ok{color:#176b2c}.bad{color:#a31515}.warn{color:#8a5a00}.muted{color:#777}\
.badge{display:inline-block;padding:1px 8px;border-radius:8px;color:#fff}.badge.ok{background:#2e7d32}.badge.bad{background:#c62828}\
td[data-state=registered]{background:#e8f5e9}td[data-state=queued]{background:#fff8e1}td[data-state=refused]{background:#ffebee}\
tr[data-status=dead]{color:#999}.app{border-top:2px solid #ddd;margin-top:1em}code{font-size:.95em}\
form{margin:.8em 0}input[name=app]{width:20em}";

/// The whole page.
pub fn render(m: &StatusModel) -> String {
    let mut o = String::with_capacity(16 * 1024 + m.instances.len() * 400);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Switchboard status</title><style>{STYLE}</style></head><body>\n"
    );
    header(&mut o, m);
    overview(&mut o, m);
    search(&mut o, m);
    pending(&mut o, m);
    refusals(&mut o, m);
    rejections(&mut o, m);
    apps(&mut o, m);
    pager(&mut o, m);
    o.push_str(
        "<p class=\"muted\">JSON of this page: <a href=\"/api/status\">/api/status</a> (<code>?app=</code> filters) · \
                <a href=\"/metrics\">/metrics</a> · <a href=\"/ready\">/ready</a></p>\n</body></html>\n",
    );
    o
}

fn header(o: &mut String, m: &StatusModel) {
    let (class, word) = if m.ready.ready { ("ok", "ready") } else { ("bad", "not ready") };
    let _ = write!(
        o,
        "<header><h1>Switchboard <span id=\"ready\" class=\"badge {class}\" data-ready=\"{}\">{word}</span></h1>\
         <div class=\"muted\">version {} · as of {} · refreshes every {REFRESH_SECONDS} s</div>",
        m.ready.ready,
        esc(&m.version),
        esc(&m.generated_at)
    );
    if !m.ready.reasons.is_empty() {
        o.push_str("<ul id=\"not-ready\">");
        for r in &m.ready.reasons {
            let _ = write!(o, "<li class=\"bad\">{}</li>", esc(r));
        }
        o.push_str("</ul>");
    }
    // The HA role, once an HA mode sets it.
    if let Some(role) = &m.role {
        let _ = write!(
            o,
            "<div id=\"role\" data-role=\"{}\">role: <b>{}</b> since {}</div>",
            esc(&role.role),
            esc(&role.role),
            esc(&role.since)
        );
    }
    o.push_str("</header>\n");
}

fn overview(o: &mut String, m: &StatusModel) {
    let s = &m.stream;
    let _ = write!(o, "<section id=\"stream\" data-connected=\"{}\"><h2>Event stream</h2><p>", s.connected);
    if s.connected {
        let _ = write!(
            o,
            "<span class=\"ok\">connected</span> to <code>{}</code> since {}",
            esc(s.endpoint.as_deref().unwrap_or("?")),
            esc(s.since.as_deref().unwrap_or("?"))
        );
    } else {
        let _ = write!(o, "<span class=\"bad\">not connected</span>");
        if let Some(since) = &s.since {
            let _ = write!(o, " since {}", esc(since));
        }
        if let Some(e) = &s.last_error {
            let _ = write!(o, " ({})", esc(e));
        }
    }
    let _ = writeln!(
        o,
        " · last event {} · reconnects {}</p></section>",
        esc(s.last_event.as_deref().unwrap_or("none yet")),
        s.reconnects
    );

    let r = &m.resync;
    o.push_str("<section id=\"resync\"><h2>Last resync</h2><p>");
    match (&r.last_at, r.last_duration_ms) {
        (Some(at), Some(ms)) => {
            let changes: Vec<String> = r.last_changes.iter().map(|(b, n)| format!("{} {n}", esc(b))).collect();
            let _ = write!(
                o,
                "{} · took {} · changed: {}",
                esc(at),
                duration_ms(ms),
                if changes.is_empty() { "nothing".to_owned() } else { changes.join(", ") }
            );
            for (what, e) in &r.last_failures {
                let _ = write!(o, "<br><span class=\"bad\">{} failed: {}</span>", esc(what), esc(e));
            }
        }
        _ => {
            let _ = write!(
                o,
                "none since this daemon started (store: {})",
                esc(m.last_resync.as_deref().unwrap_or("never"))
            );
        }
    }
    o.push_str("</p></section>\n");

    let t = &m.totals;
    let _ = write!(
        o,
        "<section id=\"totals\"><h2>Totals</h2><p>{} apps · {} instances · {} pending</p>\
         <table><tr><th>backend</th><th>registered</th><th>queued</th><th>refused</th></tr>",
        t.apps, t.instances, t.pending
    );
    for b in &m.backends {
        let n = |map: &std::collections::BTreeMap<String, usize>| map.get(b).copied().unwrap_or(0);
        let _ = write!(
            o,
            "<tr data-backend=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(b),
            esc(b),
            n(&t.registered),
            n(&t.queued),
            n(&t.refused)
        );
    }
    o.push_str("</table></section>\n");
}

fn search(o: &mut String, m: &StatusModel) {
    let _ = write!(
        o,
        "<form id=\"search\" method=\"get\" action=\"/\"><label>App <input name=\"app\" value=\"{}\" \
         placeholder=\"/group/app (part of an id)\"></label> <button type=\"submit\">Search</button>",
        esc(m.page.app.as_deref().unwrap_or(""))
    );
    if let Some(n) = m.page.per_page {
        let _ = write!(o, "<input type=\"hidden\" name=\"per_page\" value=\"{n}\">");
    }
    let _ = writeln!(o, " <span class=\"muted\">{} matching apps</span></form>", m.page.matched_apps);
    pager(o, m);
}

fn pager(o: &mut String, m: &StatusModel) {
    let p = &m.page;
    if p.pages <= 1 {
        return;
    }
    let app = p.app.as_deref();
    o.push_str("<nav class=\"pager\">");
    if p.page > 1 {
        let _ = write!(o, "<a rel=\"prev\" href=\"{}\">← previous</a> ", esc(&query_href(app, p.page - 1, p.per_page)));
    }
    let _ = write!(o, "page {} of {}", p.page, p.pages);
    if p.page < p.pages {
        let _ = write!(o, " <a rel=\"next\" href=\"{}\">next →</a>", esc(&query_href(app, p.page + 1, p.per_page)));
    }
    o.push_str("</nav>\n");
}

fn pending(o: &mut String, m: &StatusModel) {
    let _ = write!(o, "<section id=\"pending\"><h2>Pending instances ({})</h2>", m.pending.len());
    if m.pending.is_empty() {
        o.push_str("<p class=\"muted\">none</p></section>\n");
        return;
    }
    o.push_str("<table><tr><th>instance</th><th>app</th><th>lacks</th><th>waiting for</th></tr>");
    for p in &m.pending {
        let _ = write!(
            o,
            "<tr class=\"pending\" data-app=\"{}\" data-instance=\"{}\"><td><code>{}</code></td><td>{}</td>\
             <td class=\"lacks warn\">{}</td><td>{}</td></tr>",
            esc(&p.app_id),
            esc(&p.instance),
            esc(&p.instance),
            esc(&p.app_id),
            esc(&p.lacks),
            duration_ms(p.waiting_ms)
        );
    }
    o.push_str("</table></section>\n");
}

fn refusals(o: &mut String, m: &StatusModel) {
    let _ = write!(o, "<section id=\"refusals\"><h2>Refused registrations ({})</h2>", m.refusals.len());
    if m.refusals.is_empty() {
        o.push_str("<p class=\"muted\">none</p></section>\n");
        return;
    }
    o.push_str(
        "<p class=\"muted\">Not retried until their input changes, or <code>switchboard reconcile --once --retry-refused</code>.</p>\
         <table><tr><th>backend</th><th>app</th><th>op</th><th>registration</th><th>reason</th><th>since</th></tr>",
    );
    for r in &m.refusals {
        let _ = write!(
            o,
            "<tr class=\"refusal\" data-backend=\"{}\" data-app=\"{}\" data-entity=\"{}\"><td>{}</td><td>{}</td><td>{}</td>\
             <td><code>{}</code></td><td class=\"reason bad\">{}</td><td>{}</td></tr>",
            esc(&r.backend),
            esc(&r.app_id),
            esc(&r.entity),
            esc(&r.backend),
            esc(&r.app_id),
            esc(&r.op),
            esc(&r.entity),
            esc(&r.reason),
            esc(&r.since)
        );
    }
    o.push_str("</table></section>\n");
}

fn rejections(o: &mut String, m: &StatusModel) {
    if m.rejections.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<section id=\"rejections\"><h2>Label errors ({})</h2><table><tr><th>backend</th><th>app</th><th>label</th><th>reason</th></tr>",
        m.rejections.len()
    );
    for r in &m.rejections {
        let _ = write!(
            o,
            "<tr class=\"rejection\" data-app=\"{}\"><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"reason bad\">{}</td></tr>",
            esc(&r.app_id),
            esc(&r.backend),
            esc(&r.app_id),
            esc(&r.label),
            esc(&r.reason)
        );
    }
    o.push_str("</table></section>\n");
}

fn backend_cell(o: &mut String, backend: &str, s: &BackendState) {
    let text = match s.state.as_str() {
        "registered" => "registered".to_owned(),
        "queued" => {
            let mut t = format!("queued {}", s.op.as_deref().unwrap_or(""));
            if let Some(a) = s.attempts {
                let _ = write!(t, " · {a} attempts");
            }
            if let Some(n) = &s.next_try {
                let _ = write!(t, " · next try {n}");
            }
            if let Some(e) = &s.reason {
                let _ = write!(t, " · last error: {e}");
            }
            t
        }
        "refused" => format!("refused: {}", s.reason.as_deref().unwrap_or("?")),
        _ => "—".to_owned(),
    };
    let _ = write!(
        o,
        "<td class=\"backend\" data-backend=\"{}\" data-state=\"{}\">{}</td>",
        esc(backend),
        esc(&s.state),
        esc(&text)
    );
}

fn apps(o: &mut String, m: &StatusModel) {
    let _ = writeln!(o, "<section id=\"apps\"><h2>Apps ({} of {})</h2>", m.apps.len(), m.page.matched_apps);
    // Instances arrive grouped by app in store order; index them once.
    let mut by_app: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (i, inst) in m.instances.iter().enumerate() {
        by_app.entry(inst.app_id.as_str()).or_default().push(i);
    }
    for app in &m.apps {
        let _ = write!(o, "<article class=\"app\" data-app=\"{}\"><h2>{}</h2><p>", esc(&app.app_id), esc(&app.app_id));
        let services = if app.services.is_empty() { "none yet".to_owned() } else { app.services.join(", ") };
        let _ = write!(
            o,
            "services: <b class=\"services\">{}</b> · version {} · {} live instances",
            esc(&services),
            esc(app.version.as_deref().unwrap_or("unknown")),
            app.instances
        );
        if let Some(s) = &app.stopped_at {
            let _ = write!(o, " · <span class=\"muted\">stopped {}</span>", esc(s));
        }
        if !app.labels.is_empty() {
            o.push_str("<br>labels: ");
            let labels: Vec<String> =
                app.labels.iter().map(|(k, v)| format!("<code>{}={}</code>", esc(k), esc(v))).collect();
            o.push_str(&labels.join(" "));
        }
        o.push_str("</p>");
        let rows = by_app.get(app.app_id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if !rows.is_empty() {
            o.push_str("<table class=\"instances\"><tr><th>instance</th><th>host:port</th><th>task state</th><th>status</th><th>health</th>");
            for b in &m.backends {
                let _ = write!(o, "<th>{}</th>", esc(b));
            }
            o.push_str("</tr>");
            for &i in rows.iter().take(INSTANCES_PER_APP) {
                let inst = &m.instances[i];
                let status_word = inst.status.split(':').next().unwrap_or("");
                let _ = write!(
                    o,
                    "<tr class=\"instance\" data-app=\"{}\" data-task=\"{}\" data-status=\"{}\"><td><code>{}</code></td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    esc(&inst.app_id),
                    esc(inst.task_id.as_deref().unwrap_or("")),
                    esc(status_word),
                    esc(inst.task_id.as_deref().unwrap_or(&inst.instance)),
                    esc(inst.endpoint.as_deref().unwrap_or("—")),
                    esc(inst.state.as_deref().unwrap_or("—")),
                    esc(&inst.status),
                    match inst.healthy {
                        Some(true) => "<span class=\"ok\">healthy</span>",
                        Some(false) => "<span class=\"bad\">unhealthy</span>",
                        None => "<span class=\"muted\">—</span>",
                    }
                );
                for b in &m.backends {
                    match inst.backends.get(b) {
                        Some(s) => backend_cell(o, b, s),
                        None => o.push_str("<td></td>"),
                    }
                }
                o.push_str("</tr>");
            }
            o.push_str("</table>");
            if rows.len() > INSTANCES_PER_APP {
                let _ = write!(
                    o,
                    "<p class=\"muted\">{} more instances: <a href=\"/api/status?app={}\">/api/status?app={}</a></p>",
                    rows.len() - INSTANCES_PER_APP,
                    esc(&url::form_urlencoded::byte_serialize(app.app_id.as_bytes()).collect::<String>()),
                    esc(&app.app_id)
                );
            }
        }
        o.push_str("</article>\n");
    }
    o.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn page_links_keep_the_search() {
        assert_eq!(query_href(Some("/shop web"), 2, Some(10)), "?app=%2Fshop+web&page=2&per_page=10");
        assert_eq!(query_href(None, 1, None), "?page=1");
    }
}
