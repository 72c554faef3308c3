//! Marathon's SSE event bus (`GET /v2/events`): connect, frame, parse, and
//! reconnect with backoff, forever, until shut down.
//!
//! What Marathon sends (its `HttpEventStreamServlet` on Jetty's
//! `EventSourceServlet`, 1.1 – 1.10; see `docs/marathon.md`): one event per
//! locked write as `event:`, one compact `data:` line and an empty line, CRLF
//! line ends; a keepalive that is a bare CRLF every 10 s written as two
//! flushes; no `id:`, no `retry:`, no resume; the subscriber's own
//! `event_stream_attached` first.
//!
//! Invariants:
//! - This task only reads, frames and parses; it never waits on anything but
//!   the socket, so Marathon's 1,024-event buffer never overflows on our side
//!   (the channel to the consumer is unbounded).
//! - Every byte (keepalive empty lines and `:` comments included) resets the
//!   idle watchdog; `idle_timeout` without bytes ends the connection. On a
//!   quiet cluster only keepalives arrive, and an SSE parser reports none of
//!   them, so the watchdog counts raw bytes, never events.
//! - A malformed or oversized frame is reported as `Malformed` and skipped;
//!   the stream goes on.
//! - `Connected` is sent only after HTTP 200 *and* the first event (the
//!   subscriber's own `event_stream_attached`): a fresh leader that is not
//!   ready answers 200 and closes at once, which is a failed connect and
//!   backs off. The consumer resyncs on `Connected`: nothing sent while we
//!   were away can be replayed.
//! - Logs name the endpoint as `host:port`, never a URL with userinfo.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, HeaderValue};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::client::{Auth, describe, endpoint, join, send_following};
use super::event::{Event, parse};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub urls: Vec<url::Url>,
    pub auth: Option<Secret>,
    /// No bytes at all for this long means the connection is dead.
    pub idle_timeout: Duration,
    /// Longest accepted line; a longer one makes its frame `Malformed`.
    pub max_line: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Server-side `event_type` filter; empty = all events.
    pub event_types: Vec<String>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            urls: Vec::new(),
            auth: None,
            idle_timeout: Duration::from_secs(30),
            max_line: 16 * 1024 * 1024,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            event_types: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// HTTP 200 received from `endpoint` (`host:port`); resync now.
    Connected {
        endpoint: String,
    },
    Events {
        event_type: String,
        events: Vec<Event>,
    },
    /// Undecodable JSON or an oversized line: counted, skipped.
    Malformed {
        event_type: String,
        error: String,
    },
    /// The connection ended; `reason` is `idle` after `idle_timeout` of silence.
    Disconnected {
        reason: String,
    },
}

/// One SSE frame as the decoder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Event {
        event_type: String,
        data: String,
    },
    /// A line of this frame was longer than `max_line` and was discarded.
    Oversized {
        event_type: String,
    },
}

/// Incremental SSE decoder: bytes in, frames out.
///
/// Lines end in CRLF, LF or a lone CR, as the SSE spec allows. Jetty writes
/// CRLF and writes its keepalive `\r` `\n` as two flushes, so a CR may end
/// one read and its LF start the next: that is still one line end.
#[derive(Debug)]
pub struct SseDecoder {
    max_line: usize,
    line: Vec<u8>,
    /// Dropping the rest of an oversized line.
    discarding: bool,
    /// The last line ended in CR: an LF right after it belongs to that end.
    after_cr: bool,
    event_type: Option<String>,
    data: Option<String>,
    oversized: bool,
}

impl SseDecoder {
    pub fn new(max_line: usize) -> SseDecoder {
        SseDecoder {
            max_line,
            line: Vec::new(),
            discarding: false,
            after_cr: false,
            event_type: None,
            data: None,
            oversized: false,
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            if std::mem::take(&mut self.after_cr) && bytes[0] == b'\n' {
                bytes = &bytes[1..];
                continue;
            }
            let (chunk, rest, eol) = match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.after_cr = bytes[i] == b'\r';
                    (&bytes[..i], &bytes[i + 1..], true)
                }
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if !self.discarding {
                if self.line.len() + chunk.len() > self.max_line {
                    self.discarding = true;
                    self.oversized = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            if eol {
                if self.discarding {
                    self.discarding = false;
                } else {
                    let line = std::mem::take(&mut self.line);
                    if let Some(f) = self.line_done(&line) {
                        frames.push(f);
                    }
                }
            }
        }
        frames
    }

    fn line_done(&mut self, line: &[u8]) -> Option<Frame> {
        if line.is_empty() {
            return self.dispatch();
        }
        let text = String::from_utf8_lossy(line);
        if text.starts_with(':') {
            return None;
        }
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event_type = Some(value.to_owned()),
            "data" => self.push_data(value),
            _ => {} // id, retry and unknown fields: Marathon sends none.
        }
        None
    }

    fn push_data(&mut self, value: &str) {
        match &mut self.data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => self.data = Some(value.to_owned()),
        }
    }

    fn dispatch(&mut self) -> Option<Frame> {
        let event_type = self.event_type.take();
        let data = self.data.take();
        let oversized = std::mem::take(&mut self.oversized);
        if oversized {
            return Some(Frame::Oversized { event_type: event_type.unwrap_or_default() });
        }
        // A bare empty line outside a frame is Jetty's keepalive.
        let data = data?;
        Some(Frame::Event { event_type: event_type.unwrap_or_else(|| "message".into()), data })
    }
}

/// Turns one frame into the item the consumer gets.
pub fn frame_item(frame: Frame) -> StreamItem {
    match frame {
        Frame::Oversized { event_type } => {
            StreamItem::Malformed { event_type, error: "line longer than max_line".into() }
        }
        Frame::Event { event_type, data } => match parse(&event_type, &data) {
            Ok(events) => StreamItem::Events { event_type, events },
            Err(e) => StreamItem::Malformed { event_type, error: e.to_string() },
        },
    }
}

/// Follows the event stream until `shutdown` is cancelled (or `tx` closes).
pub async fn run(cfg: StreamConfig, tx: UnboundedSender<StreamItem>, shutdown: CancellationToken) {
    let auth = match Auth::new(cfg.auth.clone()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "event stream not started");
            return;
        }
    };
    // No whole-request timeout: the body never ends. The idle watchdog
    // below bounds silence instead.
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.idle_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %describe(&e), "event stream not started");
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
            r = connection(&http, base, &path, &auth, &cfg, &tx) => r,
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
    http: &reqwest::Client,
    base: &url::Url,
    path: &str,
    auth: &Auth,
    cfg: &StreamConfig,
    tx: &UnboundedSender<StreamItem>,
) -> Outcome {
    let url = match join(base, path) {
        Ok(u) => u,
        Err(cause) => {
            tracing::warn!(endpoint = %endpoint(base), %cause, "event stream url invalid");
            return Outcome::Failed;
        }
    };
    let mut headers = auth.headers();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    let resp = match tokio::time::timeout(cfg.idle_timeout, send_following(http, url, &headers, "/v2/events")).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "event stream connect failed");
            return Outcome::Failed;
        }
        Err(_) => {
            tracing::warn!(endpoint = %endpoint(base), "event stream connect timed out");
            return Outcome::Failed;
        }
    };
    let ep = endpoint(resp.url());
    match resp.status() {
        reqwest::StatusCode::OK => {}
        reqwest::StatusCode::UNAUTHORIZED => {
            tracing::warn!(endpoint = %ep, status = 401, "event stream refused the credentials");
            return Outcome::Unauthorized;
        }
        status => {
            // 502 "Could not determine the current leader" during an election
            // is transient like any other refusal: back off and retry.
            tracing::warn!(endpoint = %ep, status = status.as_u16(), "event stream refused");
            return Outcome::Failed;
        }
    }
    tracing::debug!(endpoint = %ep, "event stream open; waiting for event_stream_attached");
    let mut decoder = SseDecoder::new(cfg.max_line);
    let mut body = resp.bytes_stream();
    let mut attached = false;
    let reason = loop {
        match tokio::time::timeout(cfg.idle_timeout, body.next()).await {
            Err(_) => break "idle".to_owned(),
            Ok(None) => break "closed by server".to_owned(),
            Ok(Some(Err(e))) => break describe(&e),
            Ok(Some(Ok(bytes))) => {
                for frame in decoder.feed(&bytes) {
                    if !attached {
                        attached = true;
                        if !matches!(&frame, Frame::Event { event_type, .. } if event_type == "event_stream_attached") {
                            tracing::debug!(endpoint = %ep, "first event is not event_stream_attached");
                        }
                        tracing::info!(endpoint = %ep, "event stream connected");
                        if tx.send(StreamItem::Connected { endpoint: ep.clone() }).is_err() {
                            return Outcome::Closed;
                        }
                    }
                    let item = frame_item(frame);
                    if let StreamItem::Malformed { event_type, error } = &item {
                        tracing::warn!(endpoint = %ep, %event_type, %error, "malformed event skipped");
                    }
                    if tx.send(item).is_err() {
                        return Outcome::Closed;
                    }
                }
            }
        }
    };
    if !attached {
        // A leader that is not ready yet accepts and closes at once.
        tracing::warn!(endpoint = %ep, %reason, "event stream ended before event_stream_attached");
        return Outcome::Failed;
    }
    tracing::warn!(endpoint = %ep, %reason, "event stream disconnected");
    if tx.send(StreamItem::Disconnected { reason }).is_err() {
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

    fn frames(chunks: &[&str], max: usize) -> Vec<Frame> {
        let mut d = SseDecoder::new(max);
        chunks.iter().flat_map(|c| d.feed(c.as_bytes())).collect()
    }

    fn ev(t: &str, d: &str) -> Frame {
        Frame::Event { event_type: t.into(), data: d.into() }
    }

    #[test]
    fn crlf_lf_keepalives_and_comments() {
        let got =
            frames(&["\r\n", ": hi\r\n", "event: a\r\ndata: {}\r\n\r\n", "\r", "\n", "event: b\ndata: 1\n\n"], 100);
        assert_eq!(got, [ev("a", "{}"), ev("b", "1")]);
    }

    #[test]
    fn split_anywhere() {
        let whole = "event: a\r\ndata: {\"x\":1}\r\n\r\n";
        for i in 0..whole.len() {
            let got = frames(&[&whole[..i], &whole[i..]], 100);
            assert_eq!(got, [ev("a", "{\"x\":1}")], "split at {i}");
        }
    }

    #[test]
    fn lone_cr_ends_a_line_and_a_split_crlf_is_one_end() {
        let got = frames(&["event: a\rdata:{}\r", "\n\r", "\n", "event: b\r\ndata: 1\r", "\r"], 100);
        assert_eq!(got, [ev("a", "{}"), ev("b", "1")]);
    }

    #[test]
    fn oversized_line_skips_only_its_frame() {
        let long = format!("event: big\r\ndata: {}\r\n\r\nevent: ok\r\ndata: 1\r\n\r\n", "x".repeat(50));
        let got = frames(&[&long[..20], &long[20..]], 20);
        assert_eq!(got, [Frame::Oversized { event_type: "big".into() }, ev("ok", "1")]);
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
