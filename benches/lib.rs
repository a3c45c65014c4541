//! Shared code for the cpc-rules benchmarks lives in `common/`; this library is empty so the
//! bench crate has a target `cargo check` can build.
