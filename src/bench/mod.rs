//! Benchmarks and load tools, kept out of the data-path stages they measure.
//!
//! Each module is one `ha-ingestor bench …` subcommand (or the library half of
//! one); none of them is on the service's path, and the stages do not know
//! about them. They reach into the stages only through the stages' public API.
//!
//! - [`pipeline`]: `bench pipeline` and `bench rules`, the WebSocket hot path
//!   (decode → filter → encode) and the filter chain alone, on one core.
//! - [`buffer`]: `bench buffer`, the durable buffer's append and read+acknowledge throughput.
//! - [`mqtt_decode`]: `bench mqtt`, topic matching + decoding per MQTT decoder.
//! - [`ha_floor`]: `bench ha-consume`, the HA connection read and decoded alone (the floor of that path).
//! - [`mqtt_floor`]: `bench mqtt-consume`, the MQTT connection alone (the floor of that path).
//! - [`mqtt_loadgen`]: `bench mqtt-publish`, the load generator of the end-to-end MQTT benchmark.
//! - [`schema`]: `schema bench`, the two schema modes loaded into a real `influxd` and queried.
//! - [`influxd`]: the throw-away `influxd` the schema bench and the integration tests start.
//! - [`victoria`]: the throw-away VictoriaMetrics the integration tests start.
//!
//! The counting allocator stays at [`crate::alloc_counter`]: it is the
//! service's own allocator too, not only the benchmarks'.

pub mod buffer;
pub mod ha_floor;
pub mod influxd;
mod launch;
pub mod mqtt_decode;
pub mod mqtt_floor;
pub mod mqtt_loadgen;
pub mod pipeline;
pub mod schema;
pub mod victoria;

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`, first field).
fn thread_cpu_nanos() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
