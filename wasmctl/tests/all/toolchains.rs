//! Components from toolchains other than cargo run the same way.

use crate::support::{Served, path_str, python_guest};

#[test]
fn a_python_component_built_with_componentize_py_is_served() {
    let server = Served::start(&[path_str(&python_guest())]);
    let response = server.get("/from/python?x=1");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "hello from python at /from/python?x=1\n");
    // Per-request instances: the second request is served just the same.
    assert_eq!(server.get("/again").body, "hello from python at /again\n");
}
