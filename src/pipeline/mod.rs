//! Filters and (later) transforms between sources and the encoder.
