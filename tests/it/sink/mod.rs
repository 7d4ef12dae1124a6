//! The sinks: InfluxDB (writes and its replies) and files.

mod file;
mod influxdb;
mod influxdb_replies;
