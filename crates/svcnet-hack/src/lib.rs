//! Intentionally empty: see Cargo.toml. Every crate depends on this one so that `cargo test -p X`
//! resolves the same dependency features as a whole-workspace build and reuses its artifacts.
