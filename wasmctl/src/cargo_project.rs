//! Building a Cargo project into a component, for `wasmctl run DIR`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::BadInput;

pub const TARGET: &str = "wasm32-wasip2";

/// The manifest of the Cargo project at `path` (a directory holding a
/// `Cargo.toml`, or the `Cargo.toml` itself), if it is one.
pub fn manifest_of(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        let manifest = path.join("Cargo.toml");
        manifest.is_file().then_some(manifest)
    } else {
        (path.file_name()? == "Cargo.toml").then(|| path.to_owned())
    }
}

/// Builds the package of `manifest` for wasm32-wasip2 in release mode and
/// returns the component it produced. Cargo's progress and diagnostics go to
/// stderr as usual.
pub fn build(manifest: &Path) -> Result<PathBuf> {
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve path", manifest.display()))?;
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("{}: cannot read", manifest.display()))?;
    if !text.lines().any(|line| line.trim() == "[package]") {
        return Err(BadInput(format!(
            "{}: is a workspace without a package of its own; point at one of its members",
            manifest.display()
        ))
        .into());
    }
    check_target_installed()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start cargo")?;

    let mut components = Vec::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        if let Some(files) = artifacts_of(&line, &manifest) {
            components = files;
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        return Err(BadInput(format!("{}: cargo build failed", manifest.display())).into());
    }
    match components.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(BadInput(format!(
            "{}: the build produced no .wasm file; is it a package with a `cdylib` or `bin` target?",
            manifest.display()
        ))
        .into()),
        many => Err(BadInput(format!(
            "{}: the build produced several components ({}); run one of them by path",
            manifest.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

/// The `.wasm` files of a `compiler-artifact` message for the package of
/// `manifest`; `None` for any other message.
fn artifacts_of(line: &str, manifest: &Path) -> Option<Vec<PathBuf>> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    if Path::new(message["manifest_path"].as_str()?) != manifest {
        return None;
    }
    let files = message["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .filter(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
        .collect::<Vec<_>>();
    (!files.is_empty()).then_some(files)
}

/// Fails with the command to run when rustup manages the toolchain and the
/// target is missing; cargo's own message for that is a page of noise.
fn check_target_installed() -> Result<()> {
    let Ok(output) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: the toolchain is managed some other way; let cargo say.
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && !installed.lines().any(|t| t.trim() == TARGET) {
        return Err(BadInput(format!(
            "the {TARGET} target is not installed; run `rustup target add {TARGET}`"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_wasm_artifacts_of_the_package_only() {
        let manifest = Path::new("/src/app/Cargo.toml");
        let artifact = |manifest: &str, files: &str| {
            format!(
                r#"{{"reason":"compiler-artifact","manifest_path":"{manifest}","filenames":[{files}]}}"#
            )
        };
        assert_eq!(
            artifacts_of(
                &artifact("/src/app/Cargo.toml", r#""/t/app.wasm","/t/app.d""#),
                manifest
            ),
            Some(vec![PathBuf::from("/t/app.wasm")])
        );
        assert_eq!(
            artifacts_of(
                &artifact("/src/dep/Cargo.toml", r#""/t/dep.wasm""#),
                manifest
            ),
            None
        );
        assert_eq!(
            artifacts_of(
                &artifact("/src/app/Cargo.toml", r#""/t/libapp.rlib""#),
                manifest
            ),
            None
        );
        assert_eq!(
            artifacts_of(r#"{"reason":"build-finished","success":true}"#, manifest),
            None
        );
        assert_eq!(artifacts_of("not json", manifest), None);
    }

    #[test]
    fn manifests_are_found_from_a_dir_or_named_directly() {
        let tmp = std::env::temp_dir().join(format!("wasmctl-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        assert_eq!(manifest_of(&tmp), None);
        std::fs::write(tmp.join("Cargo.toml"), "[package]").unwrap();
        assert_eq!(manifest_of(&tmp), Some(tmp.join("Cargo.toml")));
        assert_eq!(
            manifest_of(&tmp.join("Cargo.toml")),
            Some(tmp.join("Cargo.toml"))
        );
        assert_eq!(manifest_of(Path::new("app.wasm")), None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
