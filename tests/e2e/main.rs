//! Whole-path tests: the service from its sources (the simulator, a real Mosquitto)
//! through the buffer to a real `influxd`, the `ha-ingestor` binary as a user runs it,
//! and faults on that path (InfluxDB outages, Home Assistant gaps, `kill -9`), and the
//! same stream into VictoriaMetrics (`victoria`).
//!
//! One binary for all of them (each test binary links the whole library); stage tests
//! are in `tests/it`. Tests here share one process, so a test that needs process-wide
//! state of its own (the metrics registry the alert rules read) runs in a child
//! process through `support::alone`.

#[path = "../support/mod.rs"]
mod support;

mod alerts_test;
mod audit;
mod buffer_influxdb;
mod cli;
mod cli_buffer;
mod cli_run;
mod deploy;
mod exact_backfill;
mod file_modes;
mod fleet;
mod gaps;
mod homes;
mod influxdb;
mod install;
mod monitor_alerts;
mod startup_signals;
mod transport;
mod victoria;
