//! The Skiff control plane: the API server (axum) over the cluster state in
//! Postgres (sqlx), with watches, tokens and roles. Any number of
//! control-plane processes may serve one database: they share no state but
//! the database, and revisions, watches and tokens work across them.

pub mod api;
pub mod auth;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;
