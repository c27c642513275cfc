//! Errors of the runtime: why a component could not be loaded, and how a
//! guest instance failed. Both are one line, name what went wrong, and keep
//! the distinctions callers branch on (exit codes, HTTP statuses).

use std::time::Duration;

use wasmtime::Trap;

use super::limits::{Limits, MemoryLimitExceeded};
use skiff_api::quantity::format_duration;

/// Why a component cannot run here. Every message starts with the
/// component's name (usually its file path).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{name}: cannot read: {reason}")]
    Read { name: String, reason: String },
    #[error("{name}: not a WebAssembly file (it does not start with the `\\0asm` header)")]
    NotWasm { name: String },
    #[error("{name}: is compiled native code, not a component; pass the .wasm file instead")]
    Precompiled { name: String },
    #[error(
        "{name}: is a core WebAssembly module, not a component; build it for wasm32-wasip2 \
         or wrap it with `wasm-tools component new`"
    )]
    CoreModule { name: String },
    #[error("{name}: unsupported WebAssembly binary version {version:#010x}")]
    UnknownVersion { name: String, version: u32 },
    #[error("{name}: invalid component: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "{name}: exports neither wasi:http/incoming-handler (to serve) nor wasi:cli/run (to run)"
    )]
    NoEntryPoint { name: String },
    #[error("{name}: cannot be linked: {reason}")]
    Unlinkable { name: String, reason: String },
    #[error("{name}: cannot be instantiated: {reason}")]
    Instantiate { name: String, reason: String },
    #[error("{name}: compilation cache: {reason}")]
    Cache { name: String, reason: String },
}

/// How one guest instance (a request or a command run) failed. The guest
/// fails alone: the runtime and other instances are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFailure {
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest ran out of fuel (limit {0})")]
    OutOfFuel(u64),
    #[error("{0}")]
    MemoryLimit(MemoryLimitExceeded),
    #[error("guest exceeded its timeout of {}", format_duration(*.0))]
    Timeout(Duration),
    #[error("all {0} instances are busy")]
    Busy(u32),
    #[error("all {0} instance slots of this namespace on the node are busy")]
    NamespaceBusy(u32),
    #[error("guest did not send a response")]
    NoResponse,
    #[error("the pod stopped before its guest finished")]
    Stopped,
    #[error("guest failed: {0}")]
    Other(String),
}

impl GuestFailure {
    /// Sorts a Wasmtime error from running a guest into what users act on,
    /// quoting the `limits` the instance ran under.
    pub(crate) fn classify(error: &wasmtime::Error, limits: &Limits) -> Self {
        if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
            return Self::MemoryLimit(limit.clone());
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Self::OutOfFuel(limits.fuel.unwrap_or_default()),
            Some(Trap::Interrupt) => Self::Timeout(limits.timeout),
            Some(trap) => {
                let text = trap.to_string();
                Self::Trap(text.trim_start_matches("wasm trap: ").to_owned())
            }
            None => Self::Other(one_line(error)),
        }
    }

    /// The HTTP status a failed request is answered with: 503 when retrying
    /// later can help (overload, timeout), 500 when the guest itself failed.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            // A stopped pod's replacement may answer a retry.
            Self::Timeout(_) | Self::Busy(_) | Self::NamespaceBusy(_) | Self::Stopped => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error chain on one line: `outer: inner: root`.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        // Wasmtime attaches the guest backtrace as a multi-line context;
        // that belongs in the log, not in a one-line reason.
        if text.contains('\n') {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// An error chain for the log: every cause on its own line, including the
/// guest's wasm backtrace, but not the host's native backtrace, which says
/// nothing about the guest.
pub(crate) fn log_detail(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join("\ncaused by: ")
}
