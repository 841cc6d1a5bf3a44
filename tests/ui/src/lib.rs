//! No library: this crate holds the trybuild cases of webmesh-rs (`tests/ui.rs`).
