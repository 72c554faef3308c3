//! The HTTP side: REST endpoints and the SSE event bus over the model.

use super::*;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connected event-stream client.
pub(super) struct Subscriber {
    /// `event_type` query values; empty = everything.
    filter: Vec<String>,
    tx: mpsc::UnboundedSender<Bytes>,
    /// Frames queued for this client and not yet written to its socket.
    outstanding: Arc<AtomicUsize>,
}

impl Subscriber {
    fn wants(&self, event_type: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| f == event_type)
    }
}

pub(super) struct Shared {
    model: Mutex<Model>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Connections stay open but nothing is written, not even keepalives.
    silent: AtomicBool,
    failing: Mutex<Option<u16>>,
    app_fetches: Mutex<HashMap<String, usize>>,
    snapshot_fetches: AtomicUsize,
    /// Delay the next `/v2/apps` answer by this much *after* its body was
    /// computed, so changes made meanwhile arrive (as events) before it:
    /// the race of allegro/marathon-consul#88.
    hold_snapshot: Mutex<Option<Duration>>,
    /// Expected `Authorization` header, if auth is required.
    auth: Option<String>,
    keepalive: Duration,
    addr: SocketAddr,
    /// A standby: every request (after auth) is answered 302 to this leader.
    leader: Mutex<Option<String>>,
    /// A leader that is not ready: `/v2/events` answers 200 and closes.
    not_ready: AtomicBool,
    /// `GET /v2/events` requests seen.
    event_requests: AtomicUsize,
    /// Subscribers closed (1.8+) or events dropped (≤ 1.7) for being slow.
    slow_consumer_actions: AtomicUsize,
    max_outstanding: Option<usize>,
    disconnects_slow: bool,
}

/// A running simulated Marathon; stops (and drops its streams) on drop.
pub struct MarathonSim {
    shared: Arc<Shared>,
    url: url::Url,
    stop: CancellationToken,
}

impl MarathonSim {
    /// Binds 127.0.0.1:0 and serves the model. Call inside a tokio runtime.
    pub async fn start(opts: ModelOptions) -> std::io::Result<MarathonSim> {
        MarathonSim::start_on(opts, 0).await
    }

    /// Like `start`, on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on(opts: ModelOptions, port: u16) -> std::io::Result<MarathonSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let auth = opts
            .basic_auth
            .as_ref()
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let shared = Arc::new(Shared {
            keepalive: opts.keepalive,
            leader: Mutex::new(None),
            not_ready: AtomicBool::new(false),
            event_requests: AtomicUsize::new(0),
            slow_consumer_actions: AtomicUsize::new(0),
            max_outstanding: opts.max_outstanding,
            disconnects_slow: opts.generation.disconnects_slow_consumers(),
            model: Mutex::new(Model::new(opts)),
            subscribers: Mutex::new(Vec::new()),
            silent: AtomicBool::new(false),
            failing: Mutex::new(None),
            app_fetches: Mutex::new(HashMap::new()),
            snapshot_fetches: AtomicUsize::new(0),
            hold_snapshot: Mutex::new(None),
            auth,
            addr,
        });
        let router = Router::new()
            .route("/v2/events", get(events))
            .route("/v2/apps", get(apps))
            .route("/v2/apps/{*id}", get(app))
            .route("/v2/pods", get(pods))
            .route("/v2/pods/{*rest}", get(pod))
            .route("/v2/info", get(info))
            .route("/v2/leader", get(leader))
            .route_layer(axum::middleware::from_fn_with_state(shared.clone(), standby))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        serve(listener, router, stop.clone());
        let url = url::Url::parse(&format!("http://{addr}")).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(MarathonSim { shared, url, stop })
    }

    /// A standby of Marathon 1.7+: checks credentials like any node, then
    /// answers every request with 302 to `leader_url` + the same path and
    /// query, until `promote`d.
    pub async fn start_standby(opts: ModelOptions, leader_url: &url::Url) -> std::io::Result<MarathonSim> {
        let sim = MarathonSim::start(opts).await?;
        *lock(&sim.shared.leader) = Some(leader_url.as_str().trim_end_matches('/').to_owned());
        Ok(sim)
    }

    /// Leader election won: serve `model` (the state the old leader left in
    /// ZooKeeper) from now on. Nothing is replayed to anyone.
    pub fn promote(&self, model: Model) {
        *lock(&self.shared.model) = model;
        *lock(&self.shared.leader) = None;
    }

    /// A freshly elected leader that is not ready yet: `/v2/events`
    /// answers 200 and closes at once, before `event_stream_attached`.
    pub fn set_not_ready(&self, not_ready: bool) {
        self.shared.not_ready.store(not_ready, Ordering::SeqCst);
    }

    /// `GET /v2/events` requests seen so far.
    pub fn event_requests(&self) -> usize {
        self.shared.event_requests.load(Ordering::SeqCst)
    }

    /// How often a slow subscriber was disconnected (1.8+) or had an event
    /// dropped (≤ 1.7).
    pub fn slow_consumer_actions(&self) -> usize {
        self.shared.slow_consumer_actions.load(Ordering::SeqCst)
    }

    /// A non-leader without a model: answers every request with 302 to
    /// `leader_url` + the same path and query.
    pub async fn start_redirecting(leader_url: url::Url) -> std::io::Result<RedirectingSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let leader = leader_url.as_str().trim_end_matches('/').to_owned();
        let router = Router::new().fallback(move |uri: Uri| {
            let leader = leader.clone();
            async move {
                let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                (StatusCode::FOUND, [(header::LOCATION, format!("{leader}{pq}"))]).into_response()
            }
        });
        let stop = CancellationToken::new();
        serve(listener, router, stop.clone());
        let url = url::Url::parse(&format!("http://{addr}")).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(RedirectingSim { url, stop })
    }

    pub fn url(&self) -> url::Url {
        self.url.clone()
    }

    /// The model; do not hold the guard across an `.await`.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.shared.model)
    }

    /// Sends events to every subscriber whose filter accepts them (nothing
    /// while silent).
    pub fn emit(&self, events: &[SimEvent]) {
        if self.shared.silent.load(Ordering::SeqCst) {
            return;
        }
        let mut subs = lock(&self.shared.subscribers);
        let shared = &self.shared;
        subs.retain(|s| {
            for e in events.iter().filter(|e| s.wants(&e.event_type)) {
                let behind = shared.max_outstanding.is_some_and(|max| s.outstanding.load(Ordering::SeqCst) >= max);
                if behind {
                    shared.slow_consumer_actions.fetch_add(1, Ordering::SeqCst);
                    if shared.disconnects_slow {
                        // 1.8+: the connection is closed (dropping the sender ends the body).
                        return false;
                    }
                    // ≤ 1.7: this event is silently dropped for this client.
                    continue;
                }
                s.outstanding.fetch_add(1, Ordering::SeqCst);
                let _ = s.tx.send(Bytes::from(e.frame()));
            }
            true
        });
    }

    /// Writes bytes as-is to every subscriber, bypassing filters.
    pub fn emit_raw(&self, raw: &str) {
        let subs = lock(&self.shared.subscribers);
        for s in subs.iter() {
            let _ = s.tx.send(Bytes::from(raw.to_owned()));
        }
    }

    /// Closes every event stream.
    pub fn disconnect_all(&self) {
        lock(&self.shared.subscribers).clear();
    }

    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    /// Connected event-stream clients.
    pub fn subscribers(&self) -> usize {
        let mut subs = lock(&self.shared.subscribers);
        subs.retain(|s| !s.tx.is_closed());
        subs.len()
    }

    /// How many times `GET /v2/apps/{app_id}` was asked.
    pub fn app_fetches(&self, app_id: &str) -> usize {
        let key = AppId::parse(app_id).map(|a| a.to_string()).unwrap_or_default();
        lock(&self.shared.app_fetches).get(&key).copied().unwrap_or(0)
    }

    /// How many times `GET /v2/apps/{id}` was asked, over all apps.
    pub fn all_app_fetches(&self) -> usize {
        lock(&self.shared.app_fetches).values().sum()
    }

    /// How many times `GET /v2/apps` was asked.
    pub fn snapshot_fetches(&self) -> usize {
        self.shared.snapshot_fetches.load(Ordering::SeqCst)
    }

    /// Answer REST calls with this status (None = normal service).
    /// The next `/v2/apps` computes its body at once but answers only
    /// after `delay`: a snapshot taken just before whatever the test does
    /// meanwhile.
    pub fn hold_next_snapshot(&self, delay: Duration) {
        *lock(&self.shared.hold_snapshot) = Some(delay);
    }

    pub fn set_failing(&self, status: Option<u16>) {
        *lock(&self.shared.failing) = status;
    }
}

impl Drop for MarathonSim {
    fn drop(&mut self) {
        self.stop.cancel();
        self.disconnect_all();
    }
}

/// A simulated non-leader Marathon that redirects everything to the leader.
pub struct RedirectingSim {
    url: url::Url,
    stop: CancellationToken,
}

impl RedirectingSim {
    pub fn url(&self) -> url::Url {
        self.url.clone()
    }
}

impl Drop for RedirectingSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) fn serve(listener: tokio::net::TcpListener, router: Router, stop: CancellationToken) {
    tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "marathon simulator stopped");
        }
    });
}

pub(super) fn message(status: StatusCode, msg: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({"message": msg}).to_string()).into_response()
}

pub(super) fn json_ok(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// 401 without the right credentials.
pub(super) fn unauthorized(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let want = s.auth.as_ref()?;
    let got = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if got == Some(want.as_str()) {
        return None;
    }
    let mut r = message(StatusCode::UNAUTHORIZED, "Unauthorized");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"Mesosphere\""));
    Some(r)
}

/// Auth, then the configured failure status.
pub(super) fn gate(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    if let Some(r) = unauthorized(s, headers) {
        return Some(r);
    }
    let status = (*lock(&s.failing))?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(message(status, "simulated failure"))
}

pub(super) async fn apps(State(s): State<Arc<Shared>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    s.snapshot_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let embed_tasks =
        url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()).any(|(k, v)| k == "embed" && v == "apps.tasks");
    let body = lock(&s.model).apps_json_embed(embed_tasks);
    let hold = lock(&s.hold_snapshot).take();
    if let Some(delay) = hold {
        tokio::time::sleep(delay).await;
    }
    json_ok(&body)
}

pub(super) async fn app(State(s): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let key = AppId::parse(&id).map(|a| a.to_string()).unwrap_or_else(|_| format!("/{id}"));
    *lock(&s.app_fetches).entry(key.clone()).or_default() += 1;
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let body = lock(&s.model).app_json(&key);
    match body {
        Some(b) => json_ok(&b),
        None => message(StatusCode::NOT_FOUND, &format!("App '{key}' does not exist")),
    }
}

/// `GET /v2/pods`: every pod definition; 404 on a Marathon without pods.
pub(super) async fn pods(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let body = lock(&s.model).pods_json();
    match body {
        Some(b) => json_ok(&b),
        None => message(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `GET /v2/pods/::status`, `/v2/pods/{id}::status` and `/v2/pods/{id}`.
pub(super) async fn pod(State(s): State<Arc<Shared>>, headers: HeaderMap, Path(rest): Path<String>) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let body = {
        let m = lock(&s.model);
        match rest.strip_suffix("::status") {
            Some("") => m.pods_status_json(),
            Some(id) => m.pod_status_json(id),
            None => m.pod_json(&rest),
        }
    };
    match body {
        Some(b) => json_ok(&b),
        None => message(StatusCode::NOT_FOUND, &format!("Pod '/{rest}' does not exist")),
    }
}

pub(super) async fn info(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    json_ok(&json!({
        "name": "marathon", "version": "1.10.0-sim", "buildref": "sim", "elected": true,
        "leader": s.addr.to_string(), "frameworkId": "96d7da70-b731-4cfb-96a7-0ee877af615d-0000",
        "http_config": {"http_port": s.addr.port()}, "event_subscriber": {"type": "http_callback"},
    }))
}

pub(super) async fn leader(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    json_ok(&json!({"leader": s.addr.to_string()}))
}

/// A standby answers 302 to the leader (after the auth check, as Marathon's
/// filters run in that order); a leader passes the request on.
pub(super) async fn standby(
    State(s): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let leader = lock(&s.leader).clone();
    let Some(leader) = leader else {
        return next.run(request).await;
    };
    if request.uri().path() == "/v2/events" {
        s.event_requests.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(r) = unauthorized(&s, request.headers()) {
        return r;
    }
    let pq = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    (StatusCode::FOUND, [(header::LOCATION, format!("{leader}{pq}"))]).into_response()
}

pub(super) async fn events(State(s): State<Arc<Shared>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    s.event_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    // Jetty's EventSourceServlet wants exactly one Accept value equal to
    // text/event-stream; anything else falls through to a plain GET: 405.
    let accepts: Vec<_> = headers.get_all(header::ACCEPT).iter().collect();
    if accepts.len() != 1 || accepts[0] != "text/event-stream" {
        return message(StatusCode::METHOD_NOT_ALLOWED, "HTTP method GET is not supported by this URL");
    }
    let filter: Vec<String> = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v.into_owned())
        .collect();
    if s.not_ready.load(Ordering::SeqCst) {
        // A new leader rejecting connections: 200, then EOF, nothing else.
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream;charset=UTF-8")
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let sub = Subscriber { filter, tx, outstanding: outstanding.clone() };
    let attached = lock(&s.model).ev("event_stream_attached", json!({"remoteAddress": "127.0.0.1"}));
    // Marathon writes the subscriber's own attach first on every new
    // connection; `silent` stalls what comes after it.
    if sub.wants(&attached.event_type) {
        let _ = sub.tx.send(Bytes::from(attached.frame()));
    }
    lock(&s.subscribers).push(sub);

    let start = tokio::time::Instant::now() + s.keepalive;
    let tick = tokio::time::interval_at(start, s.keepalive);
    let body = futures::stream::unfold((rx, tick, s, None::<Bytes>), move |(mut rx, mut tick, s, pending)| {
        let outstanding = outstanding.clone();
        async move {
            if let Some(b) = pending {
                return Some((Ok::<_, Infallible>(b), (rx, tick, s, None)));
            }
            loop {
                tokio::select! {
                    m = rx.recv() => {
                        // Written to the socket: no longer outstanding.
                        let _ = outstanding.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                        return m.map(|b| (Ok(b), (rx, tick, s, None)));
                    }
                    _ = tick.tick() => {
                        if !s.silent.load(Ordering::SeqCst) {
                            // Jetty flushes `\r` and `\n` separately.
                            let next = Some(Bytes::from_static(b"\n"));
                            return Some((Ok(Bytes::from_static(b"\r")), (rx, tick, s, next)));
                        }
                    }
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream;charset=UTF-8")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
