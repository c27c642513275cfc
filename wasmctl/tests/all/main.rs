//! Integration tests of `wasmctl`, run as a real process against real
//! components built from `examples/`, `tests/guests/` and Python.
//! One test binary of many modules, so everything is linked once.

mod agent;
mod bad_input;
mod cache;
mod cluster;
mod controllers;
mod dashboard;
mod dev;
mod egress;
mod events;
mod fair_share;
mod ingress_trust;
mod kubectl;
mod linux;
mod logs;
mod metrics;
mod node_stats;
mod nodes;
mod oci_limits;
mod partition;
mod pod_logs;
mod registry;
mod run_command;
mod serve_http;
mod serverless;
mod service_accounts;
mod slow_clients;
mod support;
mod toolchains;
mod top;
mod trace;
