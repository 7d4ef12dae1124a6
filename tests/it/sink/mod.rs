//! The sinks: InfluxDB (writes, its replies and their size limits), VictoriaMetrics, and files.

mod file;
mod influxdb;
mod influxdb_limits;
mod influxdb_replies;
mod victoria;
