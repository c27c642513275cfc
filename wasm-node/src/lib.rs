//! The Skiff node agent. Today it holds the Wasm runtime ([`runtime`]) that
//! `wasmctl run` uses and that the node agent will serve pods with.

pub mod runtime;
