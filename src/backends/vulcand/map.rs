//! Pure translation between Switchboard's registrations and Vulcand's ids and
//! request bodies.
//!
//! Invariants:
//! - Every id ends with `~` and `~` appears nowhere else in it (see
//!   [`escape`]), so no id is a prefix of another: etcd v3 prefix deletes
//!   touch exactly one object.
//! - Ids are injective: two different (cluster, service) or (task, port)
//!   pairs never give the same id.
//! - No I/O.

use serde_json::{Value, json};

use crate::model::Registration;

/// Terminator of every id. Never produced by [`escape`].
pub const TERMINATOR: char = '~';

/// Percent-encodes (UTF-8 bytes as `%XX`) every character outside
/// `[A-Za-z0-9_-]`, and also `.` unless `keep_dot`. `%` and `~` are always
/// encoded, so the result is injective and never contains the terminator.
pub fn escape(s: &str, keep_dot: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || (keep_dot && c == '.') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Backend id of a service in a cluster: `sb.<cluster>.<service>~`. The
/// cluster part has its dots escaped, so the first dot after `sb.` ends it.
pub fn backend_id(cluster: &str, service: &str) -> String {
    format!("sb.{}.{}{TERMINATOR}", escape(cluster, false), escape(service, true))
}

/// Frontend id of a service: the same as its backend id (frontends and
/// backends are separate collections in Vulcand).
pub fn frontend_id(cluster: &str, service: &str) -> String {
    backend_id(cluster, service)
}

/// Server id of one instance port: `<task id>:<port>~`. Servers live inside
/// their service's backend, which already carries the cluster. The port has
/// no `:`, and `:` in a task id is escaped, so the last `:` splits it.
pub fn server_id(task_id: &str, port: u16) -> String {
    format!("{}:{port}{TERMINATOR}", escape(task_id, true))
}

/// The inverse of [`escape`]: `None` for a string `escape` never makes
/// (a bad `%XX`, bytes that are not UTF-8, or a character left unescaped
/// that `escape` would have escaped).
pub fn unescape(s: &str, keep_dot: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let plain = String::from_utf8(out).ok()?;
    (escape(&plain, keep_dot) == s).then_some(plain)
}

/// The service whose backend (and frontend) id in `cluster` is `id`, if
/// `id` is one of this cluster's ([`backend_id`]).
pub fn service_of_backend_id(cluster: &str, id: &str) -> Option<String> {
    let rest = id.strip_prefix(&format!("sb.{}.", escape(cluster, false)))?.strip_suffix(TERMINATOR)?;
    unescape(rest, true).filter(|service| !service.is_empty())
}

/// The task id and port a server id names, if it is one of
/// Switchboard's ([`server_id`]).
pub fn parse_server_id(id: &str) -> Option<(String, u16)> {
    let (task, port) = id.strip_suffix(TERMINATOR)?.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let task = unescape(task, true).filter(|t| !t.is_empty())?;
    (server_id(&task, port) == id).then_some((task, port))
}

/// `http://host:port`, IPv6 addresses in brackets.
pub fn server_url(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("http://[{address}]:{port}")
    } else {
        format!("http://{address}:{port}")
    }
}

/// The inverse of [`server_url`]: address (without brackets) and port.
pub fn parse_server_url(s: &str) -> Option<(String, u16)> {
    let u = url::Url::parse(s).ok()?;
    let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = u.port_or_known_default()?;
    Some((host, port))
}

/// The label a route most likely came from, for naming it in a rejection:
/// `vulcand.host` arrives as `Host("<value>")`, so a route of exactly that
/// shape is attributed to it. (`Routes` does not record which label was
/// used; an explicit `vulcand.route` of that shape is reported as
/// `vulcand.host`, and the reason quotes the expression either way.)
pub fn route_label(route: &str) -> &'static str {
    match route.strip_prefix("Host(\"").and_then(|r| r.strip_suffix("\")")) {
        Some(inner) if !inner.contains('"') => "vulcand.host",
        _ => "vulcand.route",
    }
}

pub fn backend_pack(id: &str) -> Value {
    json!({"Backend": {"Id": id, "Type": "http"}})
}

/// The server pack; `ttl_secs` as a Go duration (`"15s"`), omitted when the
/// server is permanent.
pub fn server_pack(id: &str, r: &Registration, ttl_secs: Option<u64>) -> Value {
    let mut pack = json!({"Server": {"Id": id, "URL": server_url(&r.address, r.port)}});
    if let Some(secs) = ttl_secs {
        pack["TTL"] = Value::String(format!("{secs}s"));
    }
    pack
}

pub fn frontend_pack(id: &str, backend_id: &str, route: &str) -> Value {
    json!({"Frontend": {"Id": id, "Type": "http", "BackendId": backend_id, "Route": route}})
}

// ------------------------------------------------- ownership at delete time

/// Whether the server Vulcand holds under our id is still the one the ledger
/// recorded (its URL); if not, what it is now.
pub fn server_is_ours(url: &str, r: &Registration) -> Result<(), String> {
    let want = server_url(&r.address, r.port);
    if url == want { Ok(()) } else { Err(format!("its URL is {url:?}, Switchboard wrote {want:?}")) }
}

/// Whether the frontend Vulcand holds under our id is still the one we
/// wrote: it routes to our backend id, with the route the ledger recorded
/// (when it recorded one).
pub fn frontend_is_ours(backend: &str, route: &str, bid: &str, r: &Registration) -> Result<(), String> {
    if backend != bid {
        return Err(format!("it routes to backend {backend:?}, Switchboard's is {bid:?}"));
    }
    match r.routes.vulcand_route.as_deref() {
        Some(want) if want != route => Err(format!("its route is {route:?}, Switchboard wrote {want:?}")),
        _ => Ok(()),
    }
}

/// Whether a backend Vulcand holds under our id is still the one we wrote:
/// type `http` and no settings (Vulcand shows the settings of a backend
/// created without any as zero values), and only servers of Switchboard's id
/// scheme (every id ending in the terminator).
pub fn backend_is_ours(backend: &Value, server_ids: &[String]) -> Result<(), String> {
    let ty = backend.get("Type").and_then(Value::as_str).unwrap_or("http");
    if ty != "http" {
        return Err(format!("its type is {ty:?}"));
    }
    if let Some(settings) = backend.get("Settings").filter(|s| !zero(s)) {
        return Err(format!("it has settings Switchboard never writes: {settings}"));
    }
    let theirs: Vec<&String> = server_ids.iter().filter(|id| !id.ends_with(TERMINATOR)).collect();
    if !theirs.is_empty() {
        return Err(format!("it holds servers of another naming scheme: {theirs:?}"));
    }
    Ok(())
}

/// A JSON value holding only zero values (as Go fills unset settings).
fn zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(zero),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_prefixes_of_each_other() {
        let backends = [
            backend_id("default", "web"),
            backend_id("default", "web-api"),
            backend_id("default", "web2"),
            backend_id("default", "web.api"),
            backend_id("def", "ault.web"),
            backend_id("default.x", "web"),
            backend_id("other", "web"),
        ];
        let servers = [
            server_id("web.1", 3100),
            server_id("web.1", 31000),
            server_id("web.1:3", 100),
            server_id("web.1~", 3100),
            server_id("web", 1),
        ];
        for set in [&backends[..], &servers[..]] {
            for (i, a) in set.iter().enumerate() {
                for (j, b) in set.iter().enumerate() {
                    if i != j {
                        assert!(!b.starts_with(a.as_str()), "{a} is a prefix of {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn ids_read_well_and_carry_the_cluster() {
        assert_eq!(backend_id("default", "shop-web"), "sb.default.shop-web~");
        assert_eq!(backend_id("eu.west", "a.b"), "sb.eu%2Ewest.a.b~");
        assert_eq!(server_id("shop_web.instance-8c._app.1", 31045), "shop_web.instance-8c._app.1:31045~");
        assert_eq!(server_id("static:ui:10.0.0.1", 80), "static%3Aui%3A10.0.0.1:80~");
        assert_eq!(escape("a~b%c/d", true), "a%7Eb%25c%2Fd");
    }

    #[test]
    fn ids_parse_back_only_when_they_are_ours() {
        for (cluster, service) in [("default", "shop-web"), ("eu.west", "a.b"), ("default", "x~%y")] {
            assert_eq!(service_of_backend_id(cluster, &backend_id(cluster, service)).as_deref(), Some(service));
        }
        assert_eq!(service_of_backend_id("other", &backend_id("default", "web")), None);
        assert_eq!(service_of_backend_id("default", "sb.default.web"), None, "no terminator");
        assert_eq!(service_of_backend_id("default", "web"), None);
        assert_eq!(service_of_backend_id("default", "sb.default.w%2Deb~"), None, "not canonical");
        for (task, port) in [("shop_web.instance-8c._app.1", 31045), ("static:ui:10.0.0.1", 80)] {
            assert_eq!(parse_server_id(&server_id(task, port)), Some((task.to_owned(), port)));
        }
        for id in ["hand-1", "t.1:80", "t.1:x~", ":80~", "t.1:080~"] {
            assert_eq!(parse_server_id(id), None, "{id}");
        }
    }

    #[test]
    fn urls_round_trip() {
        for (addr, port) in [("10.0.3.17", 31045), ("::1", 8080), ("node-1.example", 80)] {
            let u = server_url(addr, port);
            assert_eq!(parse_server_url(&u), Some((addr.to_owned(), port)), "{u}");
        }
        assert_eq!(server_url("::1", 1), "http://[::1]:1");
    }

    #[test]
    fn what_we_wrote_is_ours_and_what_differs_is_not() {
        let r = crate::backends::vulcand::tests::reg("/web", "t.1", "10.0.3.17", 31000, Some(r#"Host("a")"#));
        assert_eq!(server_is_ours(&server_url(&r.address, r.port), &r), Ok(()));
        assert!(server_is_ours("http://10.9.9.9:8080", &r).unwrap_err().contains("10.9.9.9"));
        let bid = backend_id("default", "web");
        assert_eq!(frontend_is_ours(&bid, r#"Host("a")"#, &bid, &r), Ok(()));
        assert!(frontend_is_ours("theirs", r#"Host("a")"#, &bid, &r).is_err());
        assert!(frontend_is_ours(&bid, r#"Host("b")"#, &bid, &r).is_err());
        let zeroed = json!({"Id": bid, "Type": "http", "Settings": {"Timeouts": {"Read": "", "Dial": ""}, "KeepAlive": {"Period": "", "MaxIdleConnsPerHost": 0}}});
        assert_eq!(backend_is_ours(&zeroed, &[server_id("t.1", 1)]), Ok(()));
        assert_eq!(backend_is_ours(&json!({"Id": bid, "Type": "http"}), &[]), Ok(()));
        let tuned = json!({"Id": bid, "Type": "http", "Settings": {"Timeouts": {"Read": "30s"}}});
        assert!(backend_is_ours(&tuned, &[]).unwrap_err().contains("30s"));
        assert!(backend_is_ours(&zeroed, &["hand-1".to_owned()]).unwrap_err().contains("hand-1"));
    }

    #[test]
    fn route_labels() {
        assert_eq!(route_label(r#"Host("web")"#), "vulcand.host");
        assert_eq!(route_label(r#"Host("web") && Path("/")"#), "vulcand.route");
        assert_eq!(route_label(r#"PathRegexp("/.*")"#), "vulcand.route");
    }

    proptest::proptest! {
        #[test]
        fn no_backend_id_is_a_prefix_of_another(
            a in ("[a-z.~%-]{0,6}", "[a-z0-9.~%-]{1,8}"),
            b in ("[a-z.~%-]{0,6}", "[a-z0-9.~%-]{1,8}"),
        ) {
            let (ia, ib) = (backend_id(&a.0, &a.1), backend_id(&b.0, &b.1));
            proptest::prop_assert_eq!(ia == ib, a == b, "ids must be injective");
            if a != b {
                proptest::prop_assert!(!ib.starts_with(&ia), "{} is a prefix of {}", ia, ib);
            }
        }

        #[test]
        fn no_server_id_is_a_prefix_of_another(
            a in ("[a-z0-9._:~%-]{1,10}", proptest::prelude::any::<u16>()),
            b in ("[a-z0-9._:~%-]{1,10}", proptest::prelude::any::<u16>()),
        ) {
            let (ia, ib) = (server_id(&a.0, a.1), server_id(&b.0, b.1));
            proptest::prop_assert_eq!(ia == ib, a == b, "ids must be injective");
            if a != b {
                proptest::prop_assert!(!ib.starts_with(&ia), "{} is a prefix of {}", ia, ib);
            }
        }
    }
}
