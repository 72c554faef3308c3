//! (placeholder until the marathon module lands)
use crate::model::{AppId, AppSpec, TaskFacts, Timestamp};
use crate::secret::Secret;
use std::time::Duration;
#[derive(Debug, thiserror::Error)]
#[error("placeholder")]
pub struct Error;
pub struct ClientConfig {
    pub urls: Vec<url::Url>,
    pub auth: Option<Secret>,
    pub timeout: Duration,
}
#[derive(Clone)]
pub struct MarathonClient;
impl MarathonClient {
    pub fn new(_cfg: ClientConfig) -> Result<MarathonClient, Error> {
        Err(Error)
    }
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        Err(Error)
    }
    pub async fn app(&self, _id: &AppId) -> Result<Option<AppSnapshot>, Error> {
        Err(Error)
    }
}
pub struct Snapshot {
    pub as_of: Timestamp,
    pub apps: Vec<AppSnapshot>,
    pub broken: Vec<(String, super::event::ParseError)>,
}
pub struct AppSnapshot {
    pub spec: AppSpec,
    pub tasks: Vec<TaskSnapshot>,
}
pub struct TaskSnapshot {
    pub facts: TaskFacts,
    pub healthy: Option<bool>,
}
