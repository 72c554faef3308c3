//! Marathon's SSE event bus (`GET /v2/events`): connect, frame, parse, and
//! reconnect with backoff, forever, until shut down.
//!
//! Hand-written over a reqwest byte stream rather than eventsource-client
//! 0.18.0, because that crate: follows only 301/307 (Marathon's non-leaders
//! answer 302), implements the spec's field rule so it drops Marathon's
//! occasional second JSON line inside one `data:` field
//! (samples/stream-multi-json.txt), and has no cap on line length.
//!
//! Invariants:
//! - This task only reads, frames and parses; it never waits on anything but
//!   the socket, so Marathon's 1,024-event buffer never overflows on our side
//!   (the channel to the consumer is unbounded).
//! - Every byte (keepalive empty lines and `:` comments included) resets the
//!   idle watchdog; `idle_timeout` without bytes ends the connection.
//! - A malformed or oversized frame is reported as `Malformed` and skipped;
//!   the stream goes on.
//! - `Connected` is sent only after HTTP 200; the consumer resyncs on it.
//! - Logs name the endpoint as `host:port`, never a URL with userinfo.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, HeaderValue};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::client::{auth_headers, describe, endpoint, join, send_following};
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
/// Lines end in LF, optionally preceded by CR (Jetty writes CRLF, and writes
/// its keepalive `\r` `\n` as two flushes, which this handles). Inside a
/// frame, a line that is no SSE field but starts with `{` is taken as one
/// more data line: Marathon sometimes puts two JSON objects in one field.
#[derive(Debug)]
pub struct SseDecoder {
    max_line: usize,
    line: Vec<u8>,
    /// Dropping the rest of an oversized line.
    discarding: bool,
    event_type: Option<String>,
    data: Option<String>,
    oversized: bool,
}

impl SseDecoder {
    pub fn new(max_line: usize) -> SseDecoder {
        SseDecoder { max_line, line: Vec::new(), discarding: false, event_type: None, data: None, oversized: false }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let (chunk, rest, eol) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if !self.discarding {
                if self.line.len() + chunk.len() > self.max_line + 1 {
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
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.len() > self.max_line {
                        self.oversized = true;
                    } else if let Some(f) = self.line_done(&line) {
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
            _ if text.starts_with('{') && (self.data.is_some() || self.event_type.is_some()) => {
                let whole = text.into_owned();
                self.push_data(&whole);
            }
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
    let mut headers = match auth_headers(cfg.auth.as_ref()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "event stream not started");
            return;
        }
    };
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
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
    let mut path = String::from("/v2/events");
    for (i, t) in cfg.event_types.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str("event_type=");
        path.extend(url::form_urlencoded::byte_serialize(t.as_bytes()));
    }

    let mut attempt: u32 = 0;
    let mut next_url = 0usize;
    loop {
        let base = &cfg.urls[next_url % cfg.urls.len()];
        next_url = next_url.wrapping_add(1);
        let delivered = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connection(&http, base, &path, &headers, &cfg, &tx) => r,
        };
        match delivered {
            Outcome::Closed => return,
            Outcome::Done { delivered_data } => {
                if delivered_data {
                    attempt = 0;
                    // Same endpoint first after a healthy connection.
                    next_url = next_url.wrapping_sub(1);
                }
            }
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

enum Outcome {
    /// The consumer is gone.
    Closed,
    Done {
        delivered_data: bool,
    },
}

async fn connection(
    http: &reqwest::Client,
    base: &url::Url,
    path: &str,
    headers: &reqwest::header::HeaderMap,
    cfg: &StreamConfig,
    tx: &UnboundedSender<StreamItem>,
) -> Outcome {
    let failed = Outcome::Done { delivered_data: false };
    let url = match join(base, path) {
        Ok(u) => u,
        Err(cause) => {
            tracing::warn!(endpoint = %endpoint(base), %cause, "event stream url invalid");
            return failed;
        }
    };
    let resp = match tokio::time::timeout(cfg.idle_timeout, send_following(http, url, headers, "/v2/events")).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "event stream connect failed");
            return failed;
        }
        Err(_) => {
            tracing::warn!(endpoint = %endpoint(base), "event stream connect timed out");
            return failed;
        }
    };
    let ep = endpoint(resp.url());
    if resp.status() != reqwest::StatusCode::OK {
        tracing::warn!(endpoint = %ep, status = resp.status().as_u16(), "event stream refused");
        return failed;
    }
    tracing::info!(endpoint = %ep, "event stream connected");
    if tx.send(StreamItem::Connected { endpoint: ep.clone() }).is_err() {
        return Outcome::Closed;
    }
    let mut decoder = SseDecoder::new(cfg.max_line);
    let mut body = resp.bytes_stream();
    let mut delivered_data = false;
    let reason = loop {
        match tokio::time::timeout(cfg.idle_timeout, body.next()).await {
            Err(_) => break "idle".to_owned(),
            Ok(None) => break "closed by server".to_owned(),
            Ok(Some(Err(e))) => break describe(&e),
            Ok(Some(Ok(bytes))) => {
                for frame in decoder.feed(&bytes) {
                    delivered_data = true;
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
    tracing::warn!(endpoint = %ep, %reason, "event stream disconnected");
    if tx.send(StreamItem::Disconnected { reason }).is_err() {
        return Outcome::Closed;
    }
    Outcome::Done { delivered_data }
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
    fn multi_json_continuation() {
        let got = frames(&["event: s\ndata: {\"a\":1}\r\n{\"b\":2}\r\n\r\n"], 100);
        assert_eq!(got, [ev("s", "{\"a\":1}\n{\"b\":2}")]);
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
