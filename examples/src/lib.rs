//! The examples are the programs in `src/bin/`. This library has no code: it carries
//! `docs/LIBRARY.md`, so that every Rust block of that guide is compiled and run by
//! `cargo test --doc -p examples`.
#![doc = include_str!("../../docs/LIBRARY.md")]
