//! Transitional home of the schema benchmark until it moves to `bench/`.

pub mod bench;
