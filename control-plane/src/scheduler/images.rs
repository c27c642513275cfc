//! Which runtime an image needs, for pods that do not say (`spec.runtime`
//! unset): read from the image's manifest in its registry (its media
//! types), so the scheduler never binds a Linux image to a node without
//! containerd. One lookup per image (and pull secret), shared by every pod
//! of it; a digest's answer is kept for good, a tag's checked again after
//! [`TAG_TTL`] while the old answer keeps serving.
//!
//! When the registry cannot be read from here (unreachable, unknown image,
//! refused credentials) the pod is placed without the constraint: the node
//! that pulls it reports the precise error, as it would for any pull.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use skiff_api::Kind;
use skiff_api::kinds::pod::{PodRuntime, PodSpec};
use skiff_oci::{Credentials, Registry};
use tokio::task::JoinSet;

use crate::store::{ObjectKey, Store};

/// How long a tag's answer is trusted before it is checked again.
pub const TAG_TTL: Duration = Duration::from_secs(300);
/// How long a failed lookup stands before it is tried again.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// The longest a lookup may take; pods of the image wait for it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// An image as looked up: the reference and the pull secret used
/// (`namespace/name`, or empty), since access may depend on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageKey {
    pub image: String,
    pub secret: String,
}

impl ImageKey {
    pub fn of(namespace: &str, spec: &PodSpec) -> Self {
        Self {
            image: spec.image.clone(),
            secret: spec
                .image_pull_secret
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!("{namespace}/{s}"))
                .unwrap_or_default(),
        }
    }
}

/// What the scheduler may go on with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The runtime the image needs, or `None` when it could not be told.
    Known(Option<PodRuntime>),
    /// Being looked up: the pod waits.
    Pending,
}

struct Answer {
    runtime: Option<PodRuntime>,
    expires: Option<Instant>,
}

/// The runtimes the scheduler has learnt images need, shared with the
/// rest of its process: an activation binds a first pod itself only when
/// it knows the runtime the pod needs. Filled only by the scheduler's
/// lookups (so only in the process that leads it), and trusted no longer
/// than the scheduler trusts them: a tag's answer for [`TAG_TTL`]. The
/// scheduler asks again only for pods it places, and an activation that
/// binds a function's pods itself keeps them from it.
#[derive(Debug, Clone, Default)]
pub struct KnownRuntimes(Arc<RwLock<HashMap<ImageKey, Known>>>);

/// A runtime learnt, and until when it holds (`None`: for good).
type Known = (PodRuntime, Option<Instant>);

impl KnownRuntimes {
    pub fn get(&self, key: &ImageKey) -> Option<PodRuntime> {
        let known = self.0.read().expect("known runtimes lock");
        let (runtime, expires) = known.get(key)?;
        expires
            .is_none_or(|e| Instant::now() < e)
            .then_some(*runtime)
    }

    fn set(&self, key: &ImageKey, answer: &Answer) {
        let mut known = self.0.write().expect("known runtimes lock");
        match answer.runtime {
            Some(runtime) => known.insert(key.clone(), (runtime, answer.expires)),
            None => known.remove(key),
        };
    }
}

pub struct ImageRuntimes {
    known: KnownRuntimes,
    registry: Registry,
    store: Store,
    answers: HashMap<ImageKey, Answer>,
    running: HashSet<ImageKey>,
    lookups: JoinSet<(ImageKey, Result<PodRuntime, String>)>,
}

impl ImageRuntimes {
    pub fn new(store: Store, insecure_registries: &[String], known: KnownRuntimes) -> Self {
        Self {
            known,
            registry: Registry::new(insecure_registries),
            store,
            answers: HashMap::new(),
            running: HashSet::new(),
            lookups: JoinSet::new(),
        }
    }

    /// The runtime a pod's image needs, as far as known now; starts a
    /// lookup when the answer is missing or stale.
    pub fn runtime_of(&mut self, key: &ImageKey) -> Lookup {
        let now = Instant::now();
        let answer = self.answers.get(key).map(|a| (a.runtime, a.expires));
        let stale = answer.is_none_or(|(_, expires)| expires.is_some_and(|e| e <= now));
        if stale && !self.running.contains(key) {
            self.start(key.clone());
        }
        match answer {
            Some((runtime, _)) => Lookup::Known(runtime),
            None => Lookup::Pending,
        }
    }

    fn start(&mut self, key: ImageKey) {
        self.running.insert(key.clone());
        let (registry, store) = (self.registry.clone(), self.store.clone());
        self.lookups.spawn(async move {
            let found = tokio::time::timeout(LOOKUP_TIMEOUT, look_up(&registry, &store, &key))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {LOOKUP_TIMEOUT:?}")));
            (key, found)
        });
    }

    /// Waits for the next lookup to finish and records it; returns the
    /// image, whose pods can now be placed. Pending forever without
    /// lookups.
    pub async fn next_done(&mut self) -> ImageKey {
        loop {
            let Some(done) = self.lookups.join_next().await else {
                return std::future::pending().await;
            };
            let Ok((key, found)) = done else { continue };
            self.running.remove(&key);
            let now = Instant::now();
            let pinned = key.image.contains('@');
            let answer = match found {
                Ok(runtime) => Answer {
                    runtime: Some(runtime),
                    expires: (!pinned).then(|| now + TAG_TTL),
                },
                Err(why) => {
                    tracing::info!(
                        "scheduler: cannot tell which runtime {} needs ({why}); placing its pods anywhere",
                        key.image
                    );
                    Answer {
                        runtime: None,
                        expires: Some(now + FAILURE_TTL),
                    }
                }
            };
            self.known.set(&key, &answer);
            self.answers.insert(key.clone(), answer);
            return key;
        }
    }
}

/// Reads the image's manifest and tells its runtime by its media types,
/// by the rules the node applies too (`skiff_oci`): a multi-platform index
/// stands for its Wasm entry, else this machine's Linux one.
async fn look_up(registry: &Registry, store: &Store, key: &ImageKey) -> Result<PodRuntime, String> {
    let reference = skiff_oci::parse_reference(&key.image).map_err(|e| e.to_string())?;
    let credentials = match key.secret.split_once('/') {
        Some((namespace, name)) => {
            secret_credentials(store, namespace, name, reference.registry()).await?
        }
        None => Credentials::Anonymous,
    };
    registry
        .kind_of(&reference, &credentials)
        .await
        .map_err(|e| e.to_string())
}

/// Registry credentials from a pull secret (base64 values, as in every
/// Secret).
async fn secret_credentials(
    store: &Store,
    namespace: &str,
    name: &str,
    registry: &str,
) -> Result<Credentials, String> {
    use base64::Engine as _;
    let secret = store
        .get(&ObjectKey::new(Kind::Secret, namespace, name))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("secret {namespace}/{name} not found"))?;
    let data = secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str()?)
                .ok()?;
            Some((key.clone(), bytes))
        })
        .collect();
    Credentials::from_secret(&format!("{namespace}/{name}"), &data, registry)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learnt_runtime_is_known_until_its_answer_expires() {
        let known = KnownRuntimes::default();
        let key = |image: &str| ImageKey {
            image: image.into(),
            secret: String::new(),
        };
        let answer = |runtime, expires| Answer { runtime, expires };
        let now = Instant::now();
        known.set(
            &key("r/a:v1"),
            &answer(Some(PodRuntime::Wasm), Some(now + TAG_TTL)),
        );
        known.set(&key("r/b:v1"), &answer(Some(PodRuntime::Linux), Some(now)));
        known.set(&key("r/c@sha256:00"), &answer(Some(PodRuntime::Wasm), None));
        assert_eq!(known.get(&key("r/a:v1")), Some(PodRuntime::Wasm));
        assert_eq!(known.get(&key("r/b:v1")), None, "expired");
        assert_eq!(known.get(&key("r/c@sha256:00")), Some(PodRuntime::Wasm));
        // A lookup that failed forgets what was known.
        known.set(&key("r/a:v1"), &answer(None, Some(now + TAG_TTL)));
        assert_eq!(known.get(&key("r/a:v1")), None);
    }
}
