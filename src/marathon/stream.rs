//! (placeholder until the marathon module lands)
use super::event::Event;
use crate::secret::Secret;
use std::time::Duration;
pub struct StreamConfig {
    pub urls: Vec<url::Url>,
    pub auth: Option<Secret>,
    pub idle_timeout: Duration,
    pub max_line: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub event_types: Vec<String>,
}
pub enum StreamItem {
    Connected { endpoint: String },
    Events { event_type: String, events: Vec<Event> },
    Malformed { event_type: String, error: String },
    Disconnected { reason: String },
}
pub async fn run(
    _cfg: StreamConfig,
    _tx: tokio::sync::mpsc::UnboundedSender<StreamItem>,
    _shutdown: tokio_util::sync::CancellationToken,
) {
}
