//! The fuzz targets' bodies (see `targets.rs`); `fuzz_targets/*.rs` are one-line wrappers.

pub mod targets;
