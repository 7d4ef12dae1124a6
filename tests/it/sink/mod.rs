//! The sinks: InfluxDB (writes and its replies), VictoriaMetrics, and files.

mod file;
mod influxdb;
mod influxdb_replies;
mod victoria;
