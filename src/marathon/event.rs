//! (placeholder until the marathon module lands) typed events.
use crate::model::{AppId, AppSpec, InstanceId, TaskFacts, TaskState, Timestamp};

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Status(TaskFacts),
    InstanceChanged {
        instance: InstanceId,
        app_id: AppId,
        state: Option<TaskState>,
        host: Option<String>,
        version: String,
        at: Timestamp,
    },
    Health {
        instance: InstanceId,
        app_id: AppId,
        healthy: Option<bool>,
        at: Timestamp,
    },
    Spec {
        spec: AppSpec,
        at: Timestamp,
    },
    AppStopped {
        app_id: AppId,
        at: Timestamp,
    },
    AppTouched {
        app_id: AppId,
        at: Timestamp,
    },
    Ignored {
        event_type: String,
    },
    Unknown {
        event_type: String,
    },
}
#[derive(Debug, thiserror::Error)]
#[error("placeholder")]
pub struct ParseError;
