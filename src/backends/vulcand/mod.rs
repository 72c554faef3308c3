//! (placeholder until the vulcand backend lands)
use crate::backends::{Backend, BackendError, Op, Selection};
use crate::model::Registration;
pub struct VulcandConfig {
    pub url: url::Url,
    pub cluster: String,
    pub server_ttl: Option<std::time::Duration>,
    pub timeout: std::time::Duration,
}
#[derive(Debug, thiserror::Error)]
#[error("placeholder")]
pub struct VulcandConfigError;
pub struct VulcandBackend;
impl VulcandBackend {
    pub fn new(_c: VulcandConfig) -> Result<Self, VulcandConfigError> {
        Err(VulcandConfigError)
    }
}
#[async_trait::async_trait]
impl Backend for VulcandBackend {
    fn name(&self) -> &'static str {
        "vulcand"
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
