//! (placeholder until the consul backend lands)
use crate::backends::{Backend, BackendError, Op, Selection};
use crate::model::Registration;
pub struct ConsulConfig {
    pub url: url::Url,
    pub token: Option<crate::secret::Secret>,
    pub cluster: String,
    pub timeout: std::time::Duration,
}
#[derive(Debug, thiserror::Error)]
#[error("placeholder")]
pub struct ConsulConfigError;
pub struct ConsulBackend;
impl ConsulBackend {
    pub fn new(_c: ConsulConfig) -> Result<Self, ConsulConfigError> {
        Err(ConsulConfigError)
    }
}
#[async_trait::async_trait]
impl Backend for ConsulBackend {
    fn name(&self) -> &'static str {
        "consul"
    }
    fn select(&self, _d: &[Registration]) -> Selection {
        Selection::default()
    }
    async fn list_owned(&self, _l: &[Registration]) -> Result<Vec<Registration>, BackendError> {
        Ok(vec![])
    }
    async fn apply(&self, _op: &Op) -> Result<(), BackendError> {
        Ok(())
    }
}
