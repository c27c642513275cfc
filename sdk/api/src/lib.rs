//! The Skiff API's types and rules, shared by the control plane, the CLI and
//! the node agent: objects and kinds, admission (validation and defaults
//! with field paths), label and field selectors, quantities and outbound
//! rules. No I/O here.

pub mod addresses;
pub mod apply;
pub mod columns;
pub mod kinds;
pub mod kube;
pub mod meta;
pub mod outbound;
pub mod policy;
pub mod quantity;
pub mod selector;
pub mod tokens;
pub mod validate;

pub use kinds::{AdmitError, Kind, Object, admit, admit_status};
pub use meta::{API_VERSION, EventType, List, ListMeta, ObjectMeta, Status, WatchEvent};
