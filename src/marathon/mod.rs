//! Everything that speaks Marathon: typed events, the REST client and the SSE
//! stream. Only this module (and `sim::marathon`) knows Marathon's JSON.

pub mod client;
pub mod event;
pub mod pod;
pub mod stream;
pub mod transport;
mod wire;
