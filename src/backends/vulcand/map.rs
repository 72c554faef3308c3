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
    fn urls_round_trip() {
        for (addr, port) in [("10.0.3.17", 31045), ("::1", 8080), ("node-1.example", 80)] {
            let u = server_url(addr, port);
            assert_eq!(parse_server_url(&u), Some((addr.to_owned(), port)), "{u}");
        }
        assert_eq!(server_url("::1", 1), "http://[::1]:1");
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
