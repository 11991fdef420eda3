//! Shared data generation for the criterion benches.
