//! The on-disk cache of compiled components, so that a component is compiled
//! once per engine configuration and every later start maps the machine code
//! straight from disk.
//!
//! Entries are keyed by the component's sha256 and by a hash of everything in
//! the engine's configuration that affects code generation (fuel metering,
//! epoch interruption, target, Wasmtime version...), so an engine never loads
//! code compiled for another.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The sha256 of a component's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A directory of precompiled components for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

/// How a component came to be ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache; nothing was compiled.
    Hit,
    /// Compiled now and written to the cache.
    Compiled,
    /// Compiled now; there is no cache to write to.
    CompiledUncached,
    /// Already loaded in this process (by another pod of the same image);
    /// shared, nothing was read or compiled.
    Shared,
}

impl ArtifactCache {
    /// Opens (creating if needed) a cache directory for `engine`. The
    /// directory holds native code that will be executed, so it is made
    /// private to the user.
    pub fn open(dir: impl Into<PathBuf>, engine: &Engine) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        restrict_to_owner(&dir)?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the compiled form of the component with `digest` lives.
    pub fn path_for(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.hex(), self.engine_key))
    }

    /// Returns the compiled component, compiling and storing it on a miss.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), CompileError> {
        let path = self.path_for(digest);
        if path.exists() {
            match load(engine, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                // A truncated or stale entry is not an error for the caller:
                // compile again and replace it.
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding unusable cache entry: {e}")
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(CompileError::Invalid)?;
        let cache_error = |e: String| CompileError::Cache(format!("{}: {e}", path.display()));
        write_atomically(&path, &compiled).map_err(|e| cache_error(e.to_string()))?;
        let component = load(engine, &path).map_err(|e| cache_error(e.to_string()))?;
        Ok((component, CacheOutcome::Compiled))
    }
}

/// Why [`ArtifactCache::get_or_compile`] produced no component.
#[derive(Debug)]
pub enum CompileError {
    /// The component does not compile: it is malformed or invalid.
    Invalid(wasmtime::Error),
    /// It compiled, but the cache could not store or map it.
    Cache(String),
}

/// Maps a compiled component from the cache.
#[allow(unsafe_code)]
fn load(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: deserialising runs the machine code in the file, so the file
    // must have been produced by `Engine::precompile_component`. Only this
    // module writes the cache directory (private to the user, written via
    // rename so no reader sees a partial file), and Wasmtime itself checks
    // that the artifact matches this engine's version and configuration.
    unsafe { Component::deserialize_file(engine, path) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Unique per writer: processes sharing the directory, and threads of
    // one process, may write the same entry at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(unix)]
fn restrict_to_owner(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn key_depends_on_engine_configuration() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = Engine::default();
        let mut fuel_config = wasmtime::Config::new();
        fuel_config.consume_fuel(true);
        let fuel = Engine::new(&fuel_config).unwrap();

        let digest = Digest::of(b"component");
        let a = ArtifactCache::open(tmp.path(), &plain).unwrap();
        let b = ArtifactCache::open(tmp.path(), &fuel).unwrap();
        let c = ArtifactCache::open(tmp.path(), &Engine::default()).unwrap();
        assert_ne!(a.path_for(&digest), b.path_for(&digest));
        assert_eq!(a.path_for(&digest), c.path_for(&digest));
    }
}
