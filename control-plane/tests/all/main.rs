//! Integration tests of the control plane: real `control-plane` processes
//! on a real Postgres (started by the harness unless `DATABASE_URL` is set),
//! driven over HTTP by the real client.

mod activation;
mod auth;
mod bad_input;
mod concurrency;
mod controllers;
mod crud;
mod db_faults;
mod embedded;
mod events;
mod fuzz_api;
mod gc;
mod hardening;
mod kube_api;
mod logs;
mod manifests;
mod metrics;
mod proxy_key;
mod quota;
mod restart;
mod scheduling;
mod secrets;
mod service_accounts;
mod support;
mod tenancy;
mod tls;
mod watch;
mod watcher;
