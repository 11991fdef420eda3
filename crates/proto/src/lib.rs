//! The `livetally.v1` wire messages: `ViewerEvent` (input) and `Rollup` (output).
//!
//! Generated at build time from `proto/livetally/v1/livetally.proto`.

/// Version 1 of the livetally wire format.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/livetally.v1.rs"));
}
