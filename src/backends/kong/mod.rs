//! (placeholder until the kong backend lands)
use crate::backends::{Backend, BackendError, Op, Selection};
use crate::model::Registration;
pub struct KongConfig {
    pub url: url::Url,
    pub token: Option<crate::secret::Secret>,
    pub token_header: String,
    pub cluster: String,
    pub forward_to: Option<url::Url>,
    pub timeout: std::time::Duration,
}
#[derive(Debug, thiserror::Error)]
#[error("placeholder")]
pub struct KongConfigError;
pub struct KongBackend;
impl KongBackend {
    pub fn new(_c: KongConfig) -> Result<Self, KongConfigError> {
        Err(KongConfigError)
    }
}
#[async_trait::async_trait]
impl Backend for KongBackend {
    fn name(&self) -> &'static str {
        "kong"
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
