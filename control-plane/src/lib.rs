//! The Skiff control plane: API server, Postgres store, scheduler and
//! controllers. Deliberately empty until the control-plane issue lands; see
//! ARCHITECTURE.md for what will live here.
