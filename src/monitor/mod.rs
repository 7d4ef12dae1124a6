//! Observes every stage and never sits on the data path: metrics, health, readiness.

pub mod access;
pub mod alerts;
pub mod http;
pub mod latency;
pub mod metrics;
pub mod page;
pub mod process;
pub mod rates;
pub mod stats;

pub use stats::{FleetView, GapReport, Readiness, Stats, Totals};
