//! The InfluxDB schemas (Home Assistant's and the optimized one) and the `schema`
//! tools (analyze, migrate, retention, bench).

mod homeassistant_golden;
mod optimized_bench;
mod optimized_golden;
mod tools_analyze;
mod tools_migrate;
mod tools_retention;
