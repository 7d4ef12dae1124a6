//! ha-ingestor: every Home Assistant event, stored in InfluxDB without gaps.
//!
//! The data path, one stage per module: [`source`] → [`pipeline`] → [`sink`]
//! (schema encoder, then a writer), observed by [`monitor`].

pub mod alloc_counter;
pub mod app;
pub mod bench;
pub mod check;
pub mod config;
pub mod dead_letter;
pub mod demo;
pub mod event;
pub mod handoff;
pub mod monitor;
pub mod pipeline;
pub mod schema;
pub mod simulator;
pub mod sink;
pub mod source;
pub mod tls;

/// Makes `ring` the process-wide rustls provider, so every TLS client agrees; later calls are no-ops.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
