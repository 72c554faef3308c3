//! Marathon's SSE event bus (`GET /v2/events`): connect, frame, parse, and
//! reconnect with backoff, forever, until shut down.
//!
//! SSE framing is the `eventsource-client` crate's, over our transport
//! (`transport.rs`: Marathon's 302, the line cap, the raw-byte idle
//! watchdog). What stays here is ours: one connection at a time with the
//! crate's own reconnect turned off, so there is exactly one backoff (ours:
//! capped exponential with jitter, rotating over `--marathon` URLs, reset by
//! a connection Marathon attached, and a DC/OS token re-read on a 401);
//! and the translation of SSE events into typed `StreamItem`s.
//!
//! What Marathon sends (its `HttpEventStreamServlet` on Jetty's
//! `EventSourceServlet`, 1.1 – 1.10; see `docs/marathon.md`): one event per
//! locked write as `event:`, one compact `data:` line and an empty line, CRLF
//! line ends; a keepalive that is a bare CRLF every 10 s written as two
//! flushes; no `id:`, no `retry:`, no resume; the subscriber's own
//! `event_stream_attached` first.
//!
//! Invariants:
//! - This task only reads, frames and parses; it waits on nothing but the
//!   socket and, when the consumer is [`MAX_WAITING`] events behind, the
//!   channel to it (bounded: a storm waits in the socket, not in memory; the
//!   consumer resyncs afterwards, since Marathon may have dropped events of
//!   a client that fell behind).
//!
//! [`MAX_WAITING`]: crate::reconcile::consumer::MAX_WAITING
//! - Every byte (keepalive empty lines and `:` comments included) resets the
//!   idle watchdog; `idle_timeout` without bytes ends the connection. On a
//!   quiet cluster only keepalives arrive, and an SSE parser reports none of
//!   them, so the watchdog counts raw bytes, never events.
//! - A malformed event is reported as `Malformed` and skipped; a line over
//!   the cap as `Oversized` (skipped, then a resync: the event is lost); the
//!   connection stays up either way.
//! - `Connected` is sent only after HTTP 200 *and* the first event (the
//!   subscriber's own `event_stream_attached`): a fresh leader that is not
//!   ready answers 200 and closes at once, which is a failed connect and
//!   backs off. The consumer resyncs on `Connected`: nothing sent while we
//!   were away can be replayed.
//! - Logs name the endpoint as `host:port`, never a URL with userinfo.

use std::time::Duration;

use bytes::Bytes;
use eventsource_client::{self as es, Client as _, ClientBuilder, ReconnectOptions, SSE};
use futures::StreamExt;
use launchdarkly_sdk_transport::{ByteStream, HttpTransport, Request, ResponseFuture};
use reqwest::header::{ACCEPT, HeaderValue};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use super::client::{Auth, endpoint, join};
use super::event::parse;
use super::transport::{ANSWERED_BY, MarathonTransport, OVERSIZED_MARKER};
use crate::secret::Secret;

/// Longest line accepted by default: heavy deployment events carry the whole
/// root group twice, and one line can be megabytes on a large cluster.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub urls: Vec<url::Url>,
    pub auth: Option<Secret>,
    /// No bytes at all for this long means the connection is dead.
    pub idle_timeout: Duration,
    /// Longest accepted line; a longer one is dropped and reported `Oversized`.
    pub max_line: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Server-side `event_type` filter; empty = all events.
    pub event_types: Vec<String>,
    /// TLS files for Marathon (`--marathon-*-file` / `--tls-*-file`).
    pub tls: crate::tls::EndpointTls,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            urls: Vec::new(),
            auth: None,
            idle_timeout: Duration::from_secs(30),
            max_line: DEFAULT_MAX_LINE,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            event_types: Vec::new(),
            tls: crate::tls::EndpointTls::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// Marathon attached us at `endpoint` (`host:port`); resync now.
    Connected {
        endpoint: String,
    },
    Events {
        event_type: String,
        events: Vec<crate::marathon::event::Event>,
    },
    /// Undecodable JSON: counted, skipped.
    Malformed {
        event_type: String,
        error: String,
    },
    /// A line longer than the cap was dropped (and its event with it):
    /// counted, skipped, and repaired by a resync.
    Oversized {
        limit: usize,
    },
    /// The connection ended; `reason` is `idle` after `idle_timeout` of silence.
    Disconnected {
        reason: String,
    },
}

/// Turns one SSE event into the item the consumer gets.
pub fn event_item(event_type: &str, data: &str) -> StreamItem {
    match parse(event_type, data) {
        Ok(events) => StreamItem::Events { event_type: event_type.to_owned(), events },
        Err(e) => StreamItem::Malformed { event_type: event_type.to_owned(), error: e.to_string() },
    }
}

/// What one SSE item from the crate means for us.
fn framed(sse: SSE) -> Option<Framed> {
    match sse {
        SSE::Connected(_) => None,
        SSE::Event(ev) => Some(Framed::Event { event_type: ev.event_type, data: ev.data }),
        SSE::Comment(c) => {
            let limit = c.strip_prefix(OVERSIZED_MARKER)?.split(' ').next()?.parse().ok()?;
            Some(Framed::Oversized { limit })
        }
    }
}

impl Framed {
    fn into_item(self) -> StreamItem {
        match self {
            Framed::Event { event_type, data } => event_item(&event_type, &data),
            Framed::Oversized { limit } => StreamItem::Oversized { limit },
        }
    }
}

/// One connection's SSE client: our transport under the crate, the crate's
/// reconnect off (ours runs in `run`).
fn sse_client<T: HttpTransport>(
    url: &url::Url,
    headers: &reqwest::header::HeaderMap,
    transport: T,
) -> Result<impl es::Client + use<T>, String> {
    let mut b = ClientBuilder::for_url(url.as_str()).map_err(|e| e.to_string())?;
    for (name, value) in headers {
        let value = value.to_str().map_err(|_| format!("header {name} is not text"))?;
        b = b.header(name.as_str(), value).map_err(|e| e.to_string())?;
    }
    Ok(b.reconnect(ReconnectOptions::reconnect(false).retry_initial(false).build())
        .redirect_limit(0)
        .build_with_transport(transport))
}

/// An SSE item before our parsing: what the framing alone produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    Event { event_type: String, data: String },
    Oversized { limit: usize },
}

/// Decodes a recorded stream, delivered in `chunks` exactly as a socket
/// would deliver them, through the same path as a live connection (the
/// crate's SSE parser over our transport's line cap), up to the framing: for
/// tests and for replaying captures. `replay` parses the events too.
pub async fn replay_framed(chunks: Vec<Bytes>, max_line: usize) -> Vec<Framed> {
    #[derive(Clone)]
    struct Recorded(Vec<Bytes>, usize);
    impl HttpTransport for Recorded {
        fn request(&self, _request: Request<Option<Bytes>>) -> ResponseFuture {
            let mut cap = super::transport::LineCap::new(self.1);
            let chunks: Vec<Result<Bytes, _>> = self.0.iter().map(|c| Ok(cap.feed(c))).collect();
            Box::pin(async move {
                let body: ByteStream = Box::pin(futures::stream::iter(chunks));
                http::Response::builder()
                    .status(200)
                    .body(body)
                    .map_err(launchdarkly_sdk_transport::TransportError::new)
            })
        }
    }
    let Ok(url) = url::Url::parse("http://replay.invalid/v2/events") else { return Vec::new() };
    let headers = reqwest::header::HeaderMap::new();
    let Ok(client) = sse_client(&url, &headers, Recorded(chunks, max_line)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stream = client.stream();
    while let Some(Ok(sse)) = stream.next().await {
        out.extend(framed(sse));
    }
    out
}

/// `replay_framed`, with each event parsed as the daemon parses it.
pub async fn replay(chunks: Vec<Bytes>, max_line: usize) -> Vec<StreamItem> {
    replay_framed(chunks, max_line).await.into_iter().map(Framed::into_item).collect()
}

/// Follows the event stream until `shutdown` is cancelled (or `tx` closes).
pub async fn run(cfg: StreamConfig, tx: Sender<StreamItem>, shutdown: CancellationToken) {
    let auth = match Auth::new(cfg.auth.clone()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "event stream not started");
            return;
        }
    };
    let transport = match MarathonTransport::with_tls(cfg.max_line, cfg.idle_timeout, cfg.tls.clone()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "event stream not started");
            return;
        }
    };
    if cfg.urls.is_empty() {
        tracing::error!("event stream not started: no Marathon URL");
        return;
    }
    let path = events_path(&cfg.event_types);

    let mut attempt: u32 = 0;
    let mut next_url = 0usize;
    loop {
        let base = &cfg.urls[next_url % cfg.urls.len()];
        next_url = next_url.wrapping_add(1);
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connection(&transport, base, &path, &auth, &tx) => r,
        };
        match outcome {
            Outcome::Closed => return,
            Outcome::Attached => {
                attempt = 0;
                // Same endpoint first after a healthy connection.
                next_url = next_url.wrapping_sub(1);
            }
            Outcome::Unauthorized if auth.refresh() => {
                // A rotated token: try it at once, on the same endpoint.
                next_url = next_url.wrapping_sub(1);
                continue;
            }
            Outcome::Unauthorized | Outcome::Failed => {}
        }
        let delay = backoff(attempt, cfg.backoff_min, cfg.backoff_max);
        attempt = attempt.saturating_add(1);
        tracing::debug!(delay_ms = delay.as_millis() as u64, "event stream reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// `/v2/events` with the server-side `event_type` filter (Marathon 1.3.7+;
/// older versions ignore it, and the parser skips what it does not use).
pub fn events_path(event_types: &[String]) -> String {
    let mut path = String::from("/v2/events");
    for (i, t) in event_types.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str("event_type=");
        path.extend(url::form_urlencoded::byte_serialize(t.as_bytes()));
    }
    path
}

enum Outcome {
    /// The consumer is gone.
    Closed,
    /// Marathon attached us (first event seen), and the connection later ended.
    Attached,
    /// HTTP 401: the credentials were refused.
    Unauthorized,
    /// Refused, unreachable, or ended before the first event.
    Failed,
}

async fn connection(
    transport: &MarathonTransport,
    base: &url::Url,
    path: &str,
    auth: &Auth,
    tx: &Sender<StreamItem>,
) -> Outcome {
    let ep = endpoint(base);
    let url = match join(base, path) {
        Ok(u) => u,
        Err(cause) => {
            tracing::warn!(endpoint = %ep, %cause, "event stream url invalid");
            return Outcome::Failed;
        }
    };
    let mut headers = auth.headers();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    let client = match sse_client(&url, &headers, transport.clone()) {
        Ok(c) => c,
        Err(cause) => {
            tracing::warn!(endpoint = %ep, %cause, "event stream not started");
            return Outcome::Failed;
        }
    };
    let mut stream = client.stream();
    let mut attached = false;
    let mut ep = ep;
    let reason = loop {
        let sse = match stream.next().await {
            None => break "closed by server".to_owned(),
            Some(Ok(SSE::Connected(details))) => {
                // The node that answered: the leader, after a standby's 302.
                if let Ok(Some(by)) = details.response().get_header_value(ANSWERED_BY) {
                    ep = by.to_owned();
                }
                continue;
            }
            Some(Ok(sse)) => sse,
            Some(Err(es::Error::UnexpectedResponse(resp, _))) => {
                let status = resp.status();
                if status == 401 {
                    tracing::warn!(endpoint = %ep, status, "event stream refused the credentials");
                    return Outcome::Unauthorized;
                }
                // 502 "Could not determine the current leader" during an
                // election is transient like any other refusal.
                tracing::warn!(endpoint = %ep, status, "event stream refused");
                return Outcome::Failed;
            }
            Some(Err(es::Error::Eof | es::Error::UnexpectedEof)) => break "closed by server".to_owned(),
            Some(Err(es::Error::TimedOut)) => break "idle".to_owned(),
            Some(Err(e)) if !attached => {
                tracing::warn!(endpoint = %ep, error = %e, "event stream connect failed");
                return Outcome::Failed;
            }
            Some(Err(e)) => break e.to_string(),
        };
        let Some(item) = framed(sse).map(Framed::into_item) else { continue };
        if !attached {
            // The first event is Marathon's `event_stream_attached` for us.
            attached = true;
            tracing::info!(endpoint = %ep, "event stream connected");
            if tx.send(StreamItem::Connected { endpoint: ep.clone() }).await.is_err() {
                return Outcome::Closed;
            }
        }
        match &item {
            StreamItem::Malformed { event_type, error } => {
                tracing::warn!(endpoint = %ep, %event_type, %error, "malformed event skipped");
            }
            StreamItem::Oversized { limit } => {
                tracing::warn!(endpoint = %ep, limit, "line over the limit skipped; resyncing");
            }
            _ => {}
        }
        if tx.send(item).await.is_err() {
            return Outcome::Closed;
        }
    };
    if !attached {
        // A leader that is not ready yet accepts and closes at once.
        tracing::warn!(endpoint = %ep, %reason, "event stream ended before event_stream_attached");
        return Outcome::Failed;
    }
    tracing::warn!(endpoint = %ep, %reason, "event stream disconnected");
    if tx.send(StreamItem::Disconnected { reason }).await.is_err() {
        return Outcome::Closed;
    }
    Outcome::Attached
}

/// Capped exponential backoff with jitter: a random delay in [d/2, d] where
/// d = min(max, min * 2^attempt).
fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let d = min.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(max);
    let half = d / 2;
    let jitter = rand::random_range(0.0..=1.0);
    half + half.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(chunks: &[&str], max: usize) -> Vec<StreamItem> {
        let chunks = chunks.iter().map(|c| Bytes::copy_from_slice(c.as_bytes())).collect();
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(replay(chunks, max))
    }

    fn status(state: &str) -> String {
        format!(
            r#"{{"taskId":"a.b","taskStatus":"{state}","appId":"/a","host":"h","ports":[1],"timestamp":"2018-06-14T09:12:05.390Z"}}"#
        )
    }

    fn states(items: &[StreamItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                StreamItem::Events { events, .. } => match &events[0] {
                    crate::marathon::event::Event::Status(f) => f.state.to_string(),
                    e => format!("{e:?}"),
                },
                StreamItem::Oversized { limit } => format!("oversized {limit}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn crlf_lf_lone_cr_keepalives_and_comments() {
        let a = format!("event: status_update_event\r\ndata: {}\r\n\r\n", status("TASK_RUNNING"));
        let b = format!("event: status_update_event\rdata:{}\r\r", status("TASK_KILLING"));
        let c = format!("event: status_update_event\ndata: {}\n\n", status("TASK_KILLED"));
        let got = items(&["\r", "\n", ": hi\r\n", &a, "\r", "\n", &b, &c], 1 << 20);
        assert_eq!(states(&got), ["TASK_RUNNING", "TASK_KILLING", "TASK_KILLED"]);
    }

    #[test]
    fn an_oversized_line_skips_only_its_event() {
        let big = format!("event: api_post_event\r\ndata: {{\"pad\":\"{}\"}}\r\n\r\n", "x".repeat(500));
        let ok = format!("event: status_update_event\r\ndata: {}\r\n\r\n", status("TASK_RUNNING"));
        let whole = format!("{big}{ok}");
        for split in [0, 5, 40, 300, big.len() - 1, big.len() + 3] {
            let got = items(&[&whole[..split], &whole[split..]], 400);
            assert_eq!(states(&got), ["oversized 400", "TASK_RUNNING"], "split at {split}");
        }
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for a in 0..40 {
            let d = backoff(a, min, max);
            assert!(d >= Duration::from_millis(50) && d <= max, "{a}: {d:?}");
        }
        assert!(backoff(0, min, max) <= min);
    }
}
