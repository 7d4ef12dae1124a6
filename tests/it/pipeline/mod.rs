//! The pipeline between sources and sinks: rules, transforms, rate counting.

mod rate;
mod rules;
mod transforms;
