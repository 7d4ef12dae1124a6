//! ha-ingestor: every Home Assistant event, stored in InfluxDB without gaps.
//!
//! The data path, one stage per module: [`source`] → [`pipeline`] → [`sink`]
//! (schema encoder, then a writer), observed by [`monitor`].

pub mod config;
pub mod dead_letter;
pub mod event;
pub mod monitor;
pub mod pipeline;
pub mod sink;
pub mod source;
