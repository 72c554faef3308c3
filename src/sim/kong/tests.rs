use super::*;

async fn call(sim: &KongSim, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = sim.url().join(path.trim_start_matches('/')).expect("url");
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("call");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn modern_codes_and_bodies() {
    use reqwest::Method as M;
    let sim = KongSim::start(KongSimOptions::default()).await.expect("sim");
    assert_eq!(call(&sim, M::GET, "/", None).await.1["version"], "3.4.2");
    let (s, b) = call(&sim, M::PUT, "/upstreams/1.2.3.4", Some(json!({}))).await;
    assert_eq!(
        (s, b["code"].clone(), b["fields"]["name"].clone()),
        (400, json!(2), json!("Invalid name ('1.2.3.4'); no ip addresses allowed"))
    );
    assert_eq!(call(&sim, M::PUT, "/upstreams/web", Some(json!({"tags": ["switchboard"]}))).await.0, 200);
    assert_eq!(call(&sim, M::POST, "/upstreams", Some(json!({"name": "web"}))).await.0, 409);
    let t = json!({"target": "10.0.0.1"});
    let (s, b) = call(&sim, M::POST, "/upstreams/web/targets", Some(t.clone())).await;
    assert_eq!((s, b["target"].clone(), b["weight"].clone()), (201, json!("10.0.0.1:8000"), json!(100)));
    let (s, b) = call(&sim, M::POST, "/upstreams/web/targets", Some(t)).await;
    assert_eq!((s, b["name"].clone()), (409, json!("unique constraint violation")));
    assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.9:1", None).await.0, 404);
    assert_eq!(call(&sim, M::PUT, "/services/web", Some(json!({"host": "web"}))).await.0, 200);
    let (s, b) = call(&sim, M::PUT, "/routes/web", Some(json!({"service": {"name": "web"}}))).await;
    assert_eq!((s, b["fields"]["@entity"].is_string()), (400, true));
    assert_eq!(
        call(&sim, M::PUT, "/routes/web", Some(json!({"paths": ["/"], "service": {"name": "web"}}))).await.0,
        200
    );
    let (s, b) = call(&sim, M::DELETE, "/services/web", None).await;
    assert_eq!((s, b["code"].clone()), (400, json!(4)));
    assert_eq!(call(&sim, M::DELETE, "/routes/nothing", None).await.0, 204);
    for n in 0..3 {
        call(&sim, M::PUT, &format!("/upstreams/u{n}"), Some(json!({"tags": ["switchboard"]}))).await;
    }
    let (_, p1) = call(&sim, M::GET, "/upstreams?size=2&tags=switchboard", None).await;
    assert_eq!(p1["data"].as_array().map(Vec::len), Some(2));
    let next = p1["next"].as_str().expect("next page");
    assert!(next.starts_with("/upstreams?offset=") && next.contains("tags=switchboard"), "{next}");
    let (_, p2) = call(&sim, M::GET, next, None).await;
    assert_eq!(
        (p2["data"].as_array().map(Vec::len), p2["next"].clone(), p2.get("offset")),
        (Some(2), Value::Null, None)
    );
    assert_eq!(call(&sim, M::GET, "/upstreams?offset=zzz", None).await.1["code"], 7);
    assert_eq!(sim.writes(), 14);
}

#[tokio::test]
async fn legacy_targets_are_append_only() {
    use reqwest::Method as M;
    let sim = KongSim::start(KongSimOptions { version: "0.10.4".into(), admin_token: None }).await.expect("sim");
    assert_eq!(call(&sim, M::POST, "/upstreams", Some(json!({"name": "web"}))).await.0, 201);
    let (s, b) = call(&sim, M::POST, "/upstreams", Some(json!({"name": "web"}))).await;
    assert_eq!((s, b), (409, json!({"name": "already exists with value 'web'"})));
    for _ in 0..2 {
        assert_eq!(call(&sim, M::POST, "/upstreams/web/targets", Some(json!({"target": "10.0.0.1:80"}))).await.0, 201);
    }
    assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.1:80", None).await.0, 204);
    assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.1:80", None).await.0, 204);
    assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.2:80", None).await.0, 404);
    let (_, history) = call(&sim, M::GET, "/upstreams/web/targets", None).await;
    assert_eq!(history["data"].as_array().map(Vec::len), Some(4));
    let (_, active) = call(&sim, M::GET, "/upstreams/web/targets/active", None).await;
    assert_eq!(active["data"], json!([]));
    let (s, b) = call(&sim, M::POST, "/apis", Some(json!({"name": "web", "upstream_url": "http://web"}))).await;
    assert_eq!(
        (s, b["message"].clone()),
        (400, json!("at least one of 'hosts', 'uris' or 'methods' must be specified"))
    );
    assert_eq!(call(&sim, M::DELETE, "/apis/none", None).await.0, 404);
    let resp = reqwest::Client::new().post(sim.url().join("apis").expect("url")).body("{}").send().await.expect("call");
    assert_eq!(resp.status().as_u16(), 415);
}
