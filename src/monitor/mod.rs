//! Observes every stage and never sits on the data path: metrics, health, readiness.

pub mod alerts;
pub mod http;
pub mod latency;
pub mod metrics;
pub mod process;
pub mod stats;

pub use stats::{Readiness, Stats, Totals};
