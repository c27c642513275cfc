//! The Skiff node agent. Its parts, each a module with one job, depend only
//! on the ones below them:
//!
//! - [`agent`]: registers the Node, renews its lease, follows the pods
//!   bound to it and runs a worker per pod, reporting their status;
//! - [`ingress`]: the node's listener, routing pods, Services and Routes,
//!   balancing and proxying;
//! - [`metrics`]: the pods' and the node's metrics, which the ingress
//!   counts and the engine's apps report;
//! - [`stats`]: the node's usage samples (`wasmctl top`), which also
//!   feed the metrics;
//! - [`runtimes`]: what runs pods, behind one trait: components in wasmtime
//!   (through the `skiff-wasm` crate), Linux images through containerd;
//! - OCI registries (resolve, pull, push, cache) are the `skiff-oci`
//!   crate, shared with the scheduler and `wasmctl`.

pub mod agent;
pub mod ingress;
pub mod logs;
pub mod metrics;
pub mod runtimes;
pub mod stats;
