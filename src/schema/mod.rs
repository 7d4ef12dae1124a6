//! Schema tools: measure the stored schema, plan a better one, migrate data into it,
//! and keep it in shape with retention policies and downsampling.

pub mod analyze;
pub mod influxql;
pub mod migrate;
pub mod plan;
pub mod retention;
