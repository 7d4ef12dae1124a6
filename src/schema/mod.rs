//! Schema tools: measuring, planning and comparing the ways events become points.

pub mod bench;
