//! The benchmark harness behind `switchboard-bench`: measures a real
//! `switchboard run` process against `switchboard sim` (or real servers) and
//! reports floor, cold resync, event storm, churn, idle resync and what the
//! daemon costs.
//!
//! - [`run`]: processes and phases (the only part with I/O besides `floor::run`);
//! - [`floor`]: the same registrations sent straight to each backend;
//! - [`stats`], [`procfs`], [`report`]: pure percentiles, `/proc` parsing, the
//!   result and its markdown table;
//! - [`plot`]: the PNG of BENCHMARKS.md from several reports.
//!
//! Invariant: timings are measured and reported, never asserted; the only
//! pass/fail is whether every phase converged before its deadline.

pub mod floor;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod run;
pub mod stats;
