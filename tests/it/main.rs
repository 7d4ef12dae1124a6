//! Integration tests, one module per stage of the service: `config`, `source`
//! (Home Assistant), `mqtt`, `simulator`, `pipeline`, `schema`, `sink`, `monitor`.
//!
//! One binary for all of them (each test binary links the whole library: ~150 MB and
//! a link step apiece), so a test's full name says its stage, e.g.
//! `sink::influxdb_replies::…`; run one stage with `cargo test --test it sink::`.
//! Whole-path tests (the service from its sources to InfluxDB, the CLI, faults) are
//! in `tests/e2e`. Servers are started per test by `tests/support`; tests in this
//! binary share one process, so a test that needs process-wide state of its own
//! (the global `tracing` subscriber, the metrics registry) runs in a child process
//! through `support::alone`.

#[path = "../support/mod.rs"]
mod support;

mod addon;
mod config;
mod monitor;
mod mqtt;
mod pipeline;
mod schema;
mod simulator;
mod sink;
mod source;
