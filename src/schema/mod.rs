//! Schema tools: measure the stored schema, plan a better one, migrate data into it,
//! keep it in shape with retention policies and downsampling, and compare the modes.

pub mod analyze;
pub mod backfill;
pub mod bench;
pub mod influxql;
pub mod migrate;
pub mod plan;
pub mod retention;
