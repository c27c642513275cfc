//! The Skiff node agent ([`agent`]): joins a cluster, runs the pods bound
//! to it with the Wasm runtime ([`runtime`], which `wasmctl run` uses too),
//! pulling their components from OCI registries ([`oci`]); ordinary Linux
//! images run through containerd ([`containerd`]).

pub mod agent;
pub mod containerd;
pub mod oci;
pub mod runtime;
