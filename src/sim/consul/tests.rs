//! Wire-level tests of the Consul simulator against Consul's documented agent API (`docs/backends.md`).
use super::*;

async fn sim(opts: ConsulSimOptions) -> (ConsulSim, reqwest::Client) {
    let sim = ConsulSim::start(opts).await.unwrap();
    (sim, reqwest::Client::builder().no_proxy().build().unwrap())
}

async fn put(c: &reqwest::Client, sim: &ConsulSim, path: &str, body: Value) -> (u16, String) {
    let r = c.put(format!("{}{path}", sim.url())).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get(c: &reqwest::Client, sim: &ConsulSim, path: &str) -> (u16, String) {
    let r = c.get(format!("{}{path}", sim.url())).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

const REG: &str = "/v1/agent/service/register";

#[tokio::test]
async fn register_and_list_like_an_agent() {
    let (sim, c) = sim(ConsulSimOptions::default()).await;
    let (st, body) = put(&c, &sim, REG, json!({"Name": "web", "Address": "10.0.0.1", "Port": 80})).await;
    assert_eq!((st, body.as_str()), (200, ""));
    let (st, body) = get(&c, &sim, "/v1/agent/services").await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    // ID defaults to Name, `Service` carries the name, Tags is [] not null.
    assert_eq!(v["web"]["ID"], "web");
    assert_eq!(v["web"]["Service"], "web");
    assert_eq!(v["web"]["Tags"], json!([]));
    assert_eq!(v["web"]["Meta"], json!({}));
    assert_eq!(v["consul"]["Service"], "consul");
    assert_eq!(sim.services().keys().collect::<Vec<_>>(), ["web"]);

    // Same ID replaces.
    put(&c, &sim, REG, json!({"Name": "web", "Address": "10.0.0.2", "Port": 81, "Tags": ["a"]})).await;
    let s = sim.services();
    assert_eq!(s.len(), 1);
    assert_eq!(s["web"]["Port"], 81);
    assert_eq!(s["web"]["Tags"], json!(["a"]));
    assert_eq!(sim.writes(), 2);

    let (st, body) = get(&c, &sim, "/v1/agent/service/web").await;
    assert_eq!(st, 200);
    assert!(body.contains("ContentHash"), "{body}");
    let (st, body) = get(&c, &sim, "/v1/agent/service/nope").await;
    assert_eq!(st, 404);
    assert!(body.starts_with("Unknown service ID \"nope\""), "{body}");
}

#[tokio::test]
async fn writes_are_put_only() {
    let (sim, c) = sim(ConsulSimOptions::default()).await;
    let r = c.get(format!("{}/v1/agent/service/deregister/x", sim.url())).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "OPTIONS,PUT");
    assert_eq!(r.text().await.unwrap(), "method GET not allowed");
    let r = c.post(format!("{}{REG}", sim.url())).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(sim.writes(), 0);
    assert_eq!(sim.requests()[0], ("GET".to_owned(), "/v1/agent/service/deregister/x".to_owned()));
}

#[tokio::test]
async fn register_validation_texts() {
    let (sim, c) = sim(ConsulSimOptions::default()).await;
    let long = "x".repeat(513);
    let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, String)> = vec![
        (json!({"Service": "web"}), r#"Request decode failed: json: unknown field "Service""#.into()),
        (json!({"Port": "80", "Name": "w"}), "Request decode failed: json: cannot unmarshal string into Go struct field Port of type int".into()),
        (json!({"Tags": ["a"]}), "Missing service name".into()),
        (json!({"Name": "w", "Address": "0.0.0.0"}), "Invalid service address".into()),
        (json!({"Name": "w", "Address": "::"}), "Invalid service address".into()),
        (json!({"Name": "w", "Meta": {"a.b": "v"}}), "Invalid Service Meta: Couldn't load metadata pair ('a.b', 'v'): Key contains invalid characters".into()),
        (json!({"Name": "w", "Meta": {"consul-x": "v"}}), "Invalid Service Meta: Couldn't load metadata pair ('consul-x', 'v'): Key prefix 'consul-' is reserved for internal use".into()),
        (json!({"Name": "w", "Meta": {"k": long}}), format!("Invalid Service Meta: Couldn't load metadata pair ('k', '{long}'): Value is too long (limit: 512 characters)")),
        (json!({"Name": "w", "Meta": many}), "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs".into()),
        (json!({"Name": "w", "Checks": [{"HTTP": "http://x/"}]}), "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks".into()),
        (json!({"Name": "w", "Check": {"TCP": "x:1", "Interval": "1s", "TTL": "5s"}}), "Invalid check: Interval and TTL cannot both be specified".into()),
        (json!({"Name": "w", "Checks": [{"Notes": "n"}]}), "Invalid check: TTL must be > 0 for TTL checks".into()),
        (json!({"Name": "w", "Checks": [{"TCP": "x:1", "Interval": "soon"}]}), r#"Request decode failed: time: invalid duration "soon""#.into()),
        (json!({"Name": "w", "Checks": [{"TCP": "x:1", "Intervall": "1s"}]}), r#"Request decode failed: json: unknown field "Intervall""#.into()),
    ];
    for (body, want) in cases {
        let (st, got) = put(&c, &sim, REG, body.clone()).await;
        assert_eq!((st, got.as_str()), (400, want.as_str()), "{body}");
    }
    assert!(sim.services().is_empty());
    assert_eq!(sim.writes(), 0);
    // Field names are case-insensitive; ports are not range-checked.
    let (st, _) =
        put(&c, &sim, REG, json!({"name": "w", "port": 0, "checks": [{"tcp": "x:1", "interval": "1m30s"}]})).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn checks_are_replaced_only_when_asked() {
    let (sim, c) = sim(ConsulSimOptions::default()).await;
    let one = json!({"Name": "w", "Checks": [{"CheckID": "a", "TTL": "10s"}]});
    let two = json!({"Name": "w", "Checks": [{"CheckID": "b", "TTL": "10s"}]});
    put(&c, &sim, REG, one).await;
    put(&c, &sim, REG, two.clone()).await;
    let (_, body) = get(&c, &sim, "/v1/health/service/w").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["Checks"].as_array().unwrap().len(), 3, "serfHealth + a + b: {body}");
    put(&c, &sim, &format!("{REG}?replace-existing-checks"), two).await;
    let (_, body) = get(&c, &sim, "/v1/health/service/w").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["Checks"][1]["CheckID"], "b");
    assert_eq!(v[0]["Checks"].as_array().unwrap().len(), 2);
    // Initial status is critical, so ?passing hides it.
    assert_eq!(get(&c, &sim, "/v1/health/service/w?passing").await.1, "[]");
    assert_eq!(get(&c, &sim, "/v1/health/service/nope").await, (200, "[]".to_owned()));
    assert_eq!(get(&c, &sim, "/v1/catalog/service/nope").await, (200, "[]".to_owned()));
    let (_, body) = get(&c, &sim, "/v1/catalog/service/w").await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()[0]["ServiceID"], "w");
}

#[tokio::test]
async fn deregister_unknown_per_mode() {
    for (mode, status, text_start) in [
        (UnknownDeregister::Modern404, 404, "Unknown service ID \"a/b\". Ensure"),
        (UnknownDeregister::Legacy200, 200, ""),
        (UnknownDeregister::Acl500, 500, "Unknown service \"a/b\""),
    ] {
        let (sim, c) = sim(ConsulSimOptions { acl_token: None, deregister_unknown: mode, ..Default::default() }).await;
        put(&c, &sim, REG, json!({"ID": "a/b", "Name": "w"})).await;
        assert_eq!(put(&c, &sim, "/v1/agent/service/deregister/a%2Fb", json!(null)).await, (200, String::new()));
        let (st, body) = put(&c, &sim, "/v1/agent/service/deregister/a%2Fb", json!(null)).await;
        assert_eq!(st, status, "{mode:?}");
        assert!(body.starts_with(text_start), "{mode:?}: {body}");
        assert!(sim.services().is_empty());
    }
}

#[tokio::test]
async fn acl_tokens() {
    let opts = ConsulSimOptions { acl_token: Some("s3cret".into()), ..Default::default() };
    let (sim, c) = sim(opts).await;
    let url = format!("{}{REG}", sim.url());
    let r = c.put(&url).json(&json!({"Name": "w"})).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (403, "Permission denied".to_owned()));
    let r = c.put(&url).header("X-Consul-Token", "nope").json(&json!({"Name": "w"})).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (403, "ACL not found".to_owned()));
    let r = c.put(&url).header("X-Consul-Token", "s3cret").json(&json!({"Name": "w"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.put(&url).bearer_auth("s3cret").json(&json!({"Name": "v"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Anonymous reads are filtered, not refused.
    assert_eq!(get(&c, &sim, "/v1/agent/services").await, (200, "{}".to_owned()));
    let (_, body) = get(&c, &sim, "/v1/agent/services?token=s3cret").await;
    assert!(body.contains("\"w\""), "{body}");
}

#[tokio::test]
async fn failing_stop_and_restart() {
    let (sim, c) = sim(ConsulSimOptions::default()).await;
    sim.insert_raw(json!({"Name": "foreign", "Port": 1}));
    sim.set_failing(Some(503));
    assert_eq!(get(&c, &sim, "/v1/agent/services").await.0, 503);
    sim.set_failing(None);
    let url = sim.url();
    sim.stop().await;
    let err = c.get(format!("{url}/v1/agent/services")).send().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    sim.restart().await.unwrap();
    assert_eq!(sim.url(), url);
    let (st, body) = get(&c, &sim, "/v1/agent/services").await;
    assert_eq!(st, 200);
    assert!(body.contains("foreign"));
}

#[test]
fn go_durations() {
    assert_eq!(decode::parse_go_duration("10s"), Some(10_000_000_000));
    assert_eq!(decode::parse_go_duration("1m30s"), Some(90_000_000_000));
    assert_eq!(decode::parse_go_duration("250ms"), Some(250_000_000));
    assert_eq!(decode::parse_go_duration("1.5h"), Some(5_400_000_000_000));
    assert_eq!(decode::parse_go_duration("0"), Some(0));
    assert_eq!(decode::parse_go_duration("10"), None);
    assert_eq!(decode::parse_go_duration(""), None);
    assert_eq!(percent_decode("a%2Fb%3A1%zz"), "a/b:1%zz");
}

#[tokio::test]
async fn agents_sharing_a_catalog_list_every_node() {
    let catalog = SimCatalog::new();
    let opts = |node: &str, ip: [u8; 4]| ConsulSimOptions {
        bind: Some(IpAddr::from(ip)),
        node: Some(node.into()),
        catalog: Some(catalog.clone()),
        ..Default::default()
    };
    let (a, c) = sim(opts("node-a", [127, 0, 0, 1])).await;
    let (b, _) = sim(opts("node-b", [127, 0, 0, 6])).await;
    assert!(b.url().starts_with("http://127.0.0.6:"), "{}", b.url());
    put(&c, &a, REG, json!({"ID": "w1", "Name": "web", "Tags": ["x"], "Address": "10.0.0.1", "Port": 80})).await;
    put(&c, &b, REG, json!({"ID": "w2", "Name": "web", "Tags": ["y"], "Address": "10.0.0.2", "Port": 80})).await;
    // Each agent lists only its own services; the catalog of either lists both.
    assert_eq!(a.services().keys().collect::<Vec<_>>(), ["w1"]);
    let (_, body) = get(&c, &b, "/v1/catalog/services").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["web"], json!(["x", "y"]));
    let (_, body) = get(&c, &a, "/v1/catalog/service/web").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let nodes: Vec<(&str, &str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["Node"].as_str().unwrap(), e["Address"].as_str().unwrap(), e["ServiceID"].as_str().unwrap()))
        .collect();
    assert_eq!(nodes, [("node-a", "127.0.0.1", "w1"), ("node-b", "127.0.0.6", "w2")]);
    let (_, body) = get(&c, &a, "/v1/catalog/service/web?tag=y").await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().len(), 1);
    // A stopped agent's services stay in the catalog.
    b.stop().await;
    let (_, body) = get(&c, &a, "/v1/catalog/service/web").await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().len(), 2);
}
