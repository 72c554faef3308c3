//! The HTTP transport under `eventsource-client` for Marathon's event bus:
//! what the crate leaves to its transport, done on the daemon's reqwest.
//!
//! - Redirects: Marathon 1.7+ standbys answer `/v2/events` with 302, which
//!   the crate does not follow (it follows 301 and 307 only). The transport
//!   follows every redirect itself, with the request's headers (the
//!   `Authorization` header included) and never from https to http
//!   (`client::send_following`); the crate never sees a 3xx.
//! - A cap on the bytes of one line: a longer line is held back, dropped, and
//!   replaced in the byte stream by one comment line that carries
//!   [`OVERSIZED_MARKER`] and the limit, so the connection stays up, the
//!   event it belonged to is not dispatched (its data is empty), and the
//!   stream adapter reports it as skipped in order with the other events.
//! - A raw-byte idle watchdog: Marathon's keepalive is a bare CRLF that no
//!   SSE parser reports, so silence is measured on the bytes here; after
//!   `idle_timeout` without a byte the body ends with a timed-out error.
//! - Connect timeout on the client, and the same idle bound on the response
//!   head.
//!
//! Invariant: what passes through is byte for byte what Marathon sent, except
//! that an over-long line becomes the marker comment; line ends (CRLF, LF,
//! lone CR, split across reads) are left to the crate's parser.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use launchdarkly_sdk_transport::{ByteStream, HttpTransport, Request, ResponseFuture, TransportError};

use super::client::{Error, send_following};

/// Starts the comment line that stands for a dropped over-long line.
pub const OVERSIZED_MARKER: &str = "switchboard: line over the limit of ";

/// Response header the transport adds: `host:port` of the node that finally
/// answered (the leader, after a standby's redirect), for logs and `state`.
pub const ANSWERED_BY: &str = "x-switchboard-answered-by";

/// reqwest under `eventsource_client`, with Marathon's needs (module doc).
#[derive(Clone)]
pub struct MarathonTransport {
    /// Built by `tls`: follows the TLS files of `--marathon-*-file`.
    http: crate::tls::HttpClient,
    max_line: usize,
    idle_timeout: Duration,
}

impl MarathonTransport {
    /// `max_line`: longest line passed on, in bytes; `idle_timeout`: longest
    /// silence (no byte at all) before the connection counts as dead.
    pub fn new(max_line: usize, idle_timeout: Duration) -> Result<MarathonTransport, Error> {
        MarathonTransport::with_tls(max_line, idle_timeout, crate::tls::EndpointTls::default())
    }

    /// Like `new`, with the TLS files of `--marathon-*-file` / `--tls-*-file`.
    pub fn with_tls(
        max_line: usize,
        idle_timeout: Duration,
        tls: crate::tls::EndpointTls,
    ) -> Result<MarathonTransport, Error> {
        // No whole-request timeout: the body never ends. The idle watchdog
        // bounds silence instead.
        let http = crate::tls::HttpClient::build(tls, move || {
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).connect_timeout(idle_timeout)
        })
        .map_err(|e| Error::Config(e.to_string()))?;
        Ok(MarathonTransport { http, max_line, idle_timeout })
    }
}

/// A transport error with a plain message (names the limit or the cause).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

fn io_timeout(what: &str) -> TransportError {
    TransportError::new(std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned()))
}

impl HttpTransport for MarathonTransport {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let this = self.clone();
        Box::pin(async move {
            let (parts, _body) = request.into_parts();
            let url = url::Url::parse(&parts.uri.to_string())
                .map_err(|e| TransportError::new(Failure(format!("invalid URL: {e}"))))?;
            let path = url.path().to_owned();
            let resp =
                tokio::time::timeout(this.idle_timeout, send_following(&this.http.get(), url, &parts.headers, &path))
                    .await
                    .map_err(|_| io_timeout("no response head within the idle timeout"))?
                    .map_err(|e| TransportError::new(Failure(e.to_string())))?;
            let mut builder = http::Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                builder = builder.header(name, value);
            }
            builder = builder.header(ANSWERED_BY, super::client::endpoint(resp.url()));
            let body = resp.bytes_stream().map(|r| r.map_err(|e| TransportError::new(Failure(describe_body(&e)))));
            let body: ByteStream = Box::pin(Guarded::new(body, this.max_line, this.idle_timeout));
            builder.body(body).map_err(|e| TransportError::new(Failure(e.to_string())))
        })
    }
}

fn describe_body(e: &reqwest::Error) -> String {
    super::client::describe(e)
}

/// The body with the line cap and the idle watchdog applied.
struct Guarded<S> {
    inner: S,
    lines: LineCap,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl<S> Guarded<S> {
    fn new(inner: S, max_line: usize, idle: Duration) -> Guarded<S> {
        Guarded {
            inner,
            lines: LineCap::new(max_line),
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            done: false,
        }
    }
}

impl<S> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, TransportError>> + Unpin,
{
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    // Any byte at all (a keepalive's lone CR included) is life.
                    let idle = self.idle;
                    self.deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                    let out = self.lines.feed(&bytes);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if self.deadline.as_mut().poll(cx).is_ready() {
                        self.done = true;
                        return Poll::Ready(Some(Err(io_timeout("idle: no byte within the idle timeout"))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Passes complete lines on, holds back an incomplete one, and turns a line
/// longer than `max` into the marker comment. Pure: bytes in, bytes out.
#[derive(Debug)]
pub struct LineCap {
    max: usize,
    /// The incomplete line so far (at most `max` bytes).
    held: BytesMut,
    /// Dropping the rest of an over-long line until its end.
    discarding: bool,
}

impl LineCap {
    pub fn new(max: usize) -> LineCap {
        LineCap { max, held: BytesMut::new(), discarding: false }
    }

    /// The bytes that may go on now.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n' || b == b'\r');
            let (body, eol) = match end {
                Some(i) => (&bytes[..i], Some(bytes[i])),
                None => (bytes, None),
            };
            bytes = &bytes[body.len() + usize::from(eol.is_some())..];
            if !self.discarding && self.held.len() + body.len() > self.max {
                self.discarding = true;
                self.held.clear();
            }
            if !self.discarding {
                self.held.extend_from_slice(body);
            }
            if let Some(eol) = eol {
                if std::mem::take(&mut self.discarding) {
                    out.extend_from_slice(format!(":{OVERSIZED_MARKER}{} bytes", self.max).as_bytes());
                } else {
                    out.extend_from_slice(&self.held);
                    self.held.clear();
                }
                out.extend_from_slice(&[eol]);
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(max: usize, chunks: &[&str]) -> String {
        let mut cap = LineCap::new(max);
        let out: Vec<u8> = chunks.iter().flat_map(|c| cap.feed(c.as_bytes()).to_vec()).collect();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_pass_whole_and_in_order() {
        assert_eq!(run(100, &["event: a\r\nda", "ta: {}\r", "\n\r\n"]), "event: a\r\ndata: {}\r\n\r\n");
        // A held partial line goes on only with its end.
        let mut cap = LineCap::new(100);
        assert_eq!(&cap.feed(b"data: {\"x\"")[..], b"");
        assert_eq!(&cap.feed(b":1}\n")[..], b"data: {\"x\":1}\n");
    }

    #[test]
    fn an_over_long_line_becomes_one_marker_line() {
        let long = format!("event: big\r\ndata: {}\r\n\r\nevent: ok\r\ndata: 1\r\n\r\n", "x".repeat(50));
        let want = format!("event: big\r\n:{OVERSIZED_MARKER}20 bytes\r\n\r\nevent: ok\r\ndata: 1\r\n\r\n");
        for split in 0..long.len() {
            assert_eq!(run(20, &[&long[..split], &long[split..]]), want, "split at {split}");
        }
    }
}
