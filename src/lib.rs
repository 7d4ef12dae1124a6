//! ha-ingestor: every Home Assistant event, stored in InfluxDB without gaps.
//!
//! The data path, one stage per module: [`source`] → [`pipeline`] → [`encode`] →
//! [`sink`] (durable buffer, then a writer), observed by [`monitor`]; the only
//! channels that run backwards live in [`feedback`]. `docs/architecture.md` is the map.

pub mod addon;
pub mod alloc_counter;
pub mod app;
pub mod audit;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod encode;
pub mod event;
pub mod feedback;
pub mod fleet;
pub mod monitor;
pub mod pipeline;
pub mod private_fs;
pub mod runtime;
pub mod schema_tools;
pub mod signals;
pub mod simulator;
pub mod sink;
pub mod source;
pub mod tls;

/// Makes `ring` the process-wide rustls provider, so every TLS client agrees; later calls are no-ops.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
