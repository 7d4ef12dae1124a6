//! Observes every stage and never sits on the data path: metrics, health, readiness.

pub mod http;
pub mod metrics;
pub mod page;
pub mod rates;
pub mod stats;

pub use stats::{Readiness, Stats, Totals};
