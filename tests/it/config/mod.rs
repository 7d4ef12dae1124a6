//! The configuration as users write it: the shipped examples.

mod examples;
mod transport;
