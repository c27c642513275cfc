//! Who is calling and what they may do. Tokens are random 256-bit secrets,
//! stored only as their SHA-256 (they are not passwords, so a slow hash
//! buys nothing). Authorization is a pure decision over the principal and
//! the request, made before anything is read, so a refusal never depends
//! on whether the object exists.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hashlink::{LinkedHashMap, LruCache};
use sha2::{Digest, Sha256};
use skiff_api::Kind;

use crate::store::{AccountTokenRecord, Store, StoreError, TokenRecord};

/// Prefix of every token, so they are recognisable (and greppable by
/// secret scanners).
const TOKEN_PREFIX: &str = "skf_";
/// Prefix of a ServiceAccount's token (itself under [`TOKEN_PREFIX`]): they
/// live in a table of their own, and the prefix says which.
const ACCOUNT_TOKEN_PREFIX: &str = "skf_sa.";

/// How long a looked-up token is trusted before it is looked up again by
/// default; the longest a deleted token keeps working.
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// A role within one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read everything but Secrets.
    View,
    /// Read and write everything, Secrets included.
    Edit,
    /// Edit, plus the namespace's tokens.
    Admin,
}

impl Role {
    pub fn parse(role: &str) -> Option<Role> {
        match role {
            "view" => Some(Role::View),
            "edit" => Some(Role::Edit),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Edit => "edit",
            Role::Admin => "admin",
        }
    }
}

/// The caller, as established by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    ClusterAdmin,
    /// Roles per namespace.
    Namespaced(BTreeMap<String, Role>),
    /// A ServiceAccount's token: its account's role, for objects only. It
    /// makes no tokens, so nothing it mints outlives its pod or account.
    Account(BTreeMap<String, Role>),
    /// A node agent: its own Node, and the pods bound to it.
    Node(String),
    /// Reads the metrics (`GET /metrics`), nothing else.
    MetricsReader,
}

impl Principal {
    /// A ServiceAccount's token: the account's role in its namespace now,
    /// or nothing at all.
    fn of_account(record: &AccountTokenRecord) -> Principal {
        Principal::Account(
            record
                .role
                .as_deref()
                .and_then(Role::parse)
                .map(|role| (record.namespace.clone(), role))
                .into_iter()
                .collect(),
        )
    }

    /// This principal's role in `namespace`: cluster admins hold every
    /// role, nodes none.
    pub fn role_in(&self, namespace: &str) -> Option<Role> {
        match self {
            Principal::ClusterAdmin => Some(Role::Admin),
            Principal::Namespaced(roles) | Principal::Account(roles) => {
                roles.get(namespace).copied()
            }
            Principal::Node(_) | Principal::MetricsReader => None,
        }
    }

    fn from_record(record: &TokenRecord) -> Principal {
        if record.cluster_admin {
            Principal::ClusterAdmin
        } else if record.metrics {
            Principal::MetricsReader
        } else if let Some(node) = &record.node_name {
            Principal::Node(node.clone())
        } else {
            Principal::Namespaced(
                record
                    .roles
                    .iter()
                    .filter_map(|(ns, role)| Some((ns.clone(), Role::parse(role)?)))
                    .collect(),
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// What a request touches.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub verb: Verb,
    pub kind: Kind,
    /// `None` for cluster-scoped kinds and for lists across namespaces.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    /// Writes to `/status` only.
    pub status: bool,
    /// A `spec.nodeName=X` field selector on a list or watch, if any.
    pub node_selector: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Allowed only if the object turns out to be a pod bound to this
    /// node; otherwise answered as not found, whether it exists or not.
    AllowIfBoundTo(String),
    /// Allowed only if a pod bound to this node references the object (a
    /// Secret or ConfigMap it needs to start); otherwise denied.
    AllowIfUsedOn(String),
    /// Allowed only if the Event (as sent, and as stored for a read or an
    /// update) is one this node may tell: about a pod bound to it, or
    /// about itself, with itself as the source's host.
    AllowIfEventOn(String),
}

/// Decides whether `principal` may make the `access`.
pub fn authorize(principal: &Principal, access: &Access<'_>) -> Decision {
    match principal {
        Principal::ClusterAdmin => Decision::Allow,
        Principal::Namespaced(roles) | Principal::Account(roles) => namespaced(roles, access),
        Principal::Node(node) => node_agent(node, access),
        Principal::MetricsReader => Decision::Deny,
    }
}

/// Whether `principal` may read the metrics: cluster admins and metrics
/// readers. A namespace's admin may not: the metrics name every
/// namespace's pods and the whole cluster's traffic.
pub fn may_read_metrics(principal: &Principal) -> bool {
    matches!(
        principal,
        Principal::ClusterAdmin | Principal::MetricsReader
    )
}

fn allow_if(condition: bool) -> Decision {
    if condition {
        Decision::Allow
    } else {
        Decision::Deny
    }
}

fn namespaced(roles: &BTreeMap<String, Role>, access: &Access<'_>) -> Decision {
    if access.kind == Kind::Namespace {
        // A namespace's members may read the namespace itself.
        let own = access.name.is_some_and(|name| roles.contains_key(name));
        return allow_if(access.verb == Verb::Get && own);
    }
    let Some(role) = access
        .kind
        .namespaced()
        .then_some(access.namespace)
        .flatten()
        .and_then(|ns| roles.get(ns))
    else {
        return Decision::Deny;
    };
    // Status is what the system observed: a pod's by the node it is bound
    // to, the rest by the controllers. A tenant writing it could publish an
    // endpoint or a readiness of its choosing.
    if access.status && !access.verb.reads() {
        return Decision::Deny;
    }
    // A namespace's quota is the cluster admin's to set: its members see
    // what they may use, and change none of it. Events are what the system
    // saw: a tenant writing them could fake a history (or fill the
    // database, as Events are not under quota).
    if matches!(access.kind, Kind::ResourceQuota | Kind::Event) {
        return allow_if(access.verb.reads());
    }
    match role {
        Role::View => allow_if(access.verb.reads() && access.kind != Kind::Secret),
        Role::Edit | Role::Admin => Decision::Allow,
    }
}

fn node_agent(node: &str, access: &Access<'_>) -> Decision {
    match access.kind {
        // A node registers itself once and then reports its status; its
        // labels, taints and `unschedulable` are the cluster admin's, or a
        // node could relabel itself to attract pods (and their Secrets).
        Kind::Node => match access.verb {
            Verb::Get | Verb::List | Verb::Watch => Decision::Allow,
            Verb::Create => allow_if(access.name == Some(node)),
            Verb::Update | Verb::Patch => allow_if(access.status && access.name == Some(node)),
            Verb::Delete => Decision::Deny,
        },
        Kind::Pod => match access.verb {
            Verb::List | Verb::Watch => allow_if(access.node_selector == Some(node)),
            Verb::Get => Decision::AllowIfBoundTo(node.to_owned()),
            Verb::Update | Verb::Patch if access.status => {
                Decision::AllowIfBoundTo(node.to_owned())
            }
            _ => Decision::Deny,
        },
        // A node tells what happened to its pods and to itself, and reads
        // back only those Events (to add to their counts).
        Kind::Event => match access.verb {
            Verb::Create | Verb::Get | Verb::Update if !access.status => {
                Decision::AllowIfEventOn(node.to_owned())
            }
            _ => Decision::Deny,
        },
        // Every node's ingress routes to every Service: it reads them all
        // (selectors and Ready endpoints), and never writes them.
        Kind::Service | Kind::Route => allow_if(access.verb.reads()),
        // What a pod needs to start (pull credentials, env, volumes), one
        // object at a time: never a list of every secret.
        Kind::Secret | Kind::ConfigMap if access.verb == Verb::Get && access.name.is_some() => {
            Decision::AllowIfUsedOn(node.to_owned())
        }
        _ => Decision::Deny,
    }
}

/// May `principal` manage the tokens of `namespace`, granting `role`?
pub fn may_manage_tokens(principal: &Principal, namespace: &str) -> bool {
    match principal {
        Principal::ClusterAdmin => true,
        Principal::Namespaced(roles) => roles.get(namespace) == Some(&Role::Admin),
        // A token it made would outlive the pod and the account it came from.
        Principal::Account(_) => false,
        Principal::Node(_) | Principal::MetricsReader => false,
    }
}

/// May `principal` read the cluster's proxy key as node `node`? Only that
/// node's own token and cluster admins: with the key, one can have any
/// node's ingress serve any pod.
pub fn may_read_proxy_key(principal: &Principal, node: &str) -> bool {
    match principal {
        Principal::ClusterAdmin => true,
        Principal::Node(own) => own == node,
        Principal::Namespaced(_) | Principal::Account(_) | Principal::MetricsReader => false,
    }
}

/// A new token: the secret to hand out once, and the hash to store.
pub fn new_token() -> (String, [u8; 32]) {
    prefixed_token(TOKEN_PREFIX)
}

/// A new ServiceAccount token, as [`new_token`].
pub fn new_account_token() -> (String, [u8; 32]) {
    prefixed_token(ACCOUNT_TOKEN_PREFIX)
}

fn prefixed_token(prefix: &str) -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system's random source works");
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Most token lookups remembered at once (known and unknown tokens): a
/// flood of made-up tokens cannot grow the cache without bound; beyond it
/// the least recently used lookup is forgotten, never the lot.
pub const MAX_CACHED_LOOKUPS: usize = 10_000;
/// Failed lookups a client address may make in a burst...
pub const FAILED_AUTH_BURST: f64 = 20.0;
/// ...and the rate at which it regains them, per second. Beyond it, its
/// tokens are not looked up (429), so made-up tokens cannot load the
/// database; tokens already cached, or valid lately, still work.
pub const FAILED_AUTH_PER_SECOND: f64 = 1.0;
/// Most client addresses whose failures are tracked at once.
const MAX_TRACKED_CLIENTS: usize = 10_000;
/// How many of the least recently charged addresses are looked through
/// for one to forget when [`MAX_TRACKED_CLIENTS`] are tracked: a bound on
/// the work a new address costs under the lock.
const EVICTION_SCAN: usize = 64;
/// How long a token that was found valid is exempt from the failure limit
/// (a node's token, behind an address its pods share with an attacker,
/// must keep renewing its lease). It is still looked up once the cache
/// forgets it, so a deleted token stops working within the cache's TTL.
pub const KNOWN_GOOD_TTL: Duration = Duration::from_secs(10 * 60);
/// Most tokens remembered as valid at once (least recently used go first).
const MAX_KNOWN_GOOD: usize = 10_000;
/// Lookups of tokens not known to be valid that may run at once, all
/// addresses together: well under the pool's connections, so that made-up
/// tokens from many addresses never starve other queries.
pub const UNKNOWN_LOOKUP_PERMITS: usize = 4;
/// How long a lookup of a not-yet-known token waits for a permit before
/// it is answered 503: the server is busy, through no fault of this caller.
const UNKNOWN_LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// Why a bearer token does not establish a caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Too many lookups of unknown tokens from this client lately.
    #[error(
        "too many requests with unknown tokens from this address; retry in {} s",
        retry_after.as_secs()
    )]
    Throttled { retry_after: Duration },
    /// Too many lookups of not-yet-known tokens in progress, from every
    /// address together.
    #[error("too many token lookups in progress; retry shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves bearer tokens to principals, with a short cache so that the
/// database is not asked on every request, and a limit per client address
/// on lookups of tokens that turn out unknown.
pub struct Authenticator {
    store: Store,
    ttl: Duration,
    cache: Mutex<LruCache<[u8; 32], CachedLookup>>,
    failures: Mutex<FailureLimiter>,
    /// Tokens found valid, and when last: exempt from the failure limit.
    known_good: Mutex<LruCache<[u8; 32], Instant>>,
    unknown_lookups: tokio::sync::Semaphore,
    database_lookups: AtomicU64,
}

/// A token lookup (unknown tokens too), when it was made, and when the
/// token expires (a cached principal never outlives its token).
type CachedLookup = (
    Option<Principal>,
    Instant,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// Whom failures are counted against: an IPv4 address, or an IPv6 /64
/// (one host usually holds a whole /64, so single addresses would let it
/// rotate out of the limit).
type ClientKey = IpAddr;

fn client_key(address: IpAddr) -> ClientKey {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// A token bucket of failed lookups.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Self {
            tokens: FAILED_AUTH_BURST,
            updated: now,
        }
    }

    /// The tokens it holds at `now`.
    fn level(&self, now: Instant) -> f64 {
        let gained = now.duration_since(self.updated).as_secs_f64() * FAILED_AUTH_PER_SECOND;
        (self.tokens + gained).min(FAILED_AUTH_BURST)
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.level(now);
        self.updated = now;
    }

    /// Takes one lookup, or says how long until one is allowed.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / FAILED_AUTH_PER_SECOND,
            ))
        }
    }
}

/// The buckets of the client addresses tracked, least recently charged
/// first. Bounded: when full, a bucket that has refilled (as good as none)
/// or the fullest of the oldest few goes; an address being throttled is
/// never forgotten, since it would come back with a full burst.
struct FailureLimiter {
    buckets: LinkedHashMap<ClientKey, Bucket>,
    capacity: usize,
}

impl FailureLimiter {
    fn new(capacity: usize) -> Self {
        Self {
            buckets: LinkedHashMap::new(),
            capacity,
        }
    }

    /// Takes one lookup from `client`'s allowance before it is made, or
    /// says how long until one is allowed.
    fn take(&mut self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        if let Some(bucket) = self.buckets.to_back(&client) {
            return bucket.take(now);
        }
        if self.buckets.len() >= self.capacity && !self.make_room(now) {
            // Every address tracked is being throttled (a flood from many
            // addresses): a new one is judged as empty too, rather than
            // have one of them forgotten and handed a fresh burst.
            return Err(Duration::from_secs_f64(1.0 / FAILED_AUTH_PER_SECOND));
        }
        let mut bucket = Bucket::full(now);
        let taken = bucket.take(now);
        self.buckets.insert(client, bucket);
        taken
    }

    /// Gives back a lookup taken for a token that turned out valid (or
    /// was never looked up).
    fn refund(&mut self, client: ClientKey, now: Instant) {
        if let Some(bucket) = self.buckets.get_mut(&client) {
            bucket.refill(now);
            bucket.tokens = (bucket.tokens + 1.0).min(FAILED_AUTH_BURST);
        }
    }

    /// Forgets one bucket if one can go without loosening the limit;
    /// says whether there is room now.
    fn make_room(&mut self, now: Instant) -> bool {
        while let Some((_, bucket)) = self.buckets.front()
            && bucket.level(now) >= FAILED_AUTH_BURST
        {
            self.buckets.pop_front();
        }
        if self.buckets.len() < self.capacity {
            return true;
        }
        let fullest = self
            .buckets
            .iter()
            .take(EVICTION_SCAN)
            .map(|(client, bucket)| (*client, bucket.level(now)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match fullest {
            // It may come back with a full burst: at most a burst early.
            Some((client, level)) if level >= 1.0 => {
                self.buckets.remove(&client);
                true
            }
            _ => false,
        }
    }
}

impl Authenticator {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(LruCache::new(MAX_CACHED_LOOKUPS)),
            failures: Mutex::new(FailureLimiter::new(MAX_TRACKED_CLIENTS)),
            known_good: Mutex::new(LruCache::new(MAX_KNOWN_GOOD)),
            unknown_lookups: tokio::sync::Semaphore::new(UNKNOWN_LOOKUP_PERMITS),
            database_lookups: AtomicU64::new(0),
        }
    }

    /// How many tokens were looked up in the database so far (what the
    /// cache and the failure limit save is observable through it).
    pub fn database_lookups(&self) -> u64 {
        self.database_lookups.load(Ordering::Relaxed)
    }

    /// The principal of `token` presented by `client` (its address, when
    /// known); `Ok(None)` for an unknown token.
    pub async fn principal(
        &self,
        token: &str,
        client: Option<IpAddr>,
    ) -> Result<Option<Principal>, AuthError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let hash = token_hash(token);
        let now = Instant::now();
        if let Some((principal, fetched, expires)) =
            self.cache.lock().expect("cache lock").get(&hash)
            && now.duration_since(*fetched) < self.ttl
        {
            if expires.is_some_and(|at| at <= chrono::Utc::now()) {
                return Ok(None);
            }
            return Ok(principal.clone());
        }
        let known_good = self
            .known_good
            .lock()
            .expect("known good lock")
            .peek(&hash)
            .is_some_and(|valid| now.duration_since(*valid) < KNOWN_GOOD_TTL);
        // A token valid lately is looked up at once: neither a flood from
        // its address nor one from everywhere keeps it out.
        let (charged, permit) = if known_good {
            (None, None)
        } else {
            // Charged before the lookup, so that concurrent requests cannot
            // all pass the check before the first one counts.
            let charged = client.map(client_key);
            if let Some(client) = charged {
                self.failures
                    .lock()
                    .expect("failures lock")
                    .take(client, now)
                    .map_err(|wait| AuthError::Throttled {
                        // Whole seconds, rounded up, as Retry-After has them.
                        retry_after: Duration::from_secs(wait.as_secs_f64().ceil() as u64),
                    })?;
            }
            let permit =
                tokio::time::timeout(UNKNOWN_LOOKUP_WAIT, self.unknown_lookups.acquire()).await;
            match permit {
                Ok(Ok(permit)) => (charged, Some(permit)),
                _ => {
                    self.refund(charged);
                    return Err(AuthError::Busy);
                }
            }
        };
        let looked_up = self.look_up(token, &hash).await;
        drop(permit);
        let (principal, expires) = match looked_up {
            Ok(found) => found,
            Err(e) => {
                self.refund(charged);
                return Err(e.into());
            }
        };
        {
            let mut known_good = self.known_good.lock().expect("known good lock");
            if principal.is_some() {
                known_good.insert(hash, now);
            } else {
                known_good.remove(&hash);
            }
        }
        if principal.is_some() {
            self.refund(charged);
        }
        self.cache
            .lock()
            .expect("cache lock")
            .insert(hash, (principal.clone(), now, expires));
        Ok(principal)
    }

    async fn look_up(
        &self,
        token: &str,
        hash: &[u8; 32],
    ) -> Result<(Option<Principal>, Option<chrono::DateTime<chrono::Utc>>), StoreError> {
        self.database_lookups.fetch_add(1, Ordering::Relaxed);
        Ok(if token.starts_with(ACCOUNT_TOKEN_PREFIX) {
            let record = self.store.find_account_token(hash).await?;
            (
                record.as_ref().map(Principal::of_account),
                record.map(|r| r.expires_at),
            )
        } else {
            let record = self.store.find_token(hash).await?;
            (
                record.as_ref().map(Principal::from_record),
                record.and_then(|r| r.expires_at),
            )
        })
    }

    fn refund(&self, charged: Option<ClientKey>) {
        if let Some(client) = charged {
            self.failures
                .lock()
                .expect("failures lock")
                .refund(client, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(verb: Verb, kind: Kind, namespace: Option<&'static str>) -> Access<'static> {
        Access {
            verb,
            kind,
            namespace,
            name: Some("x"),
            status: false,
            node_selector: None,
        }
    }

    fn roles(pairs: &[(&str, Role)]) -> Principal {
        Principal::Namespaced(pairs.iter().map(|(n, r)| (n.to_string(), *r)).collect())
    }

    #[test]
    fn namespace_roles() {
        use Decision::{Allow, Deny};
        let viewer = roles(&[("shop", Role::View)]);
        let editor = roles(&[("shop", Role::Edit)]);
        let table = [
            (&viewer, access(Verb::Get, Kind::Pod, Some("shop")), Allow),
            (
                &viewer,
                access(Verb::List, Kind::Deployment, Some("shop")),
                Allow,
            ),
            (&viewer, access(Verb::Create, Kind::Pod, Some("shop")), Deny),
            (&viewer, access(Verb::Get, Kind::Secret, Some("shop")), Deny),
            (&viewer, access(Verb::Get, Kind::Pod, Some("other")), Deny),
            (&viewer, access(Verb::List, Kind::Pod, None), Deny),
            (
                &editor,
                access(Verb::Create, Kind::Pod, Some("shop")),
                Allow,
            ),
            (
                &editor,
                access(Verb::Delete, Kind::Secret, Some("shop")),
                Allow,
            ),
            (
                &editor,
                access(Verb::Create, Kind::Pod, Some("other")),
                Deny,
            ),
            (&editor, access(Verb::Get, Kind::Node, None), Deny),
            (&editor, access(Verb::Create, Kind::Namespace, None), Deny),
            (&editor, access(Verb::Delete, Kind::Namespace, None), Deny),
        ];
        for (i, (principal, access, want)) in table.into_iter().enumerate() {
            assert_eq!(authorize(principal, &access), want, "row {i}: {access:?}");
        }
    }

    #[test]
    fn a_namespaces_quota_is_read_by_its_members_and_written_by_cluster_admins_alone() {
        let admin = roles(&[("shop", Role::Admin)]);
        let viewer = roles(&[("shop", Role::View)]);
        for verb in [Verb::Create, Verb::Update, Verb::Patch, Verb::Delete] {
            let write = access(verb, Kind::ResourceQuota, Some("shop"));
            assert_eq!(authorize(&admin, &write), Decision::Deny, "{verb:?}");
            assert_eq!(authorize(&Principal::ClusterAdmin, &write), Decision::Allow);
        }
        for principal in [&admin, &viewer] {
            let read = access(Verb::List, Kind::ResourceQuota, Some("shop"));
            assert_eq!(authorize(principal, &read), Decision::Allow);
            let elsewhere = access(Verb::Get, Kind::ResourceQuota, Some("other"));
            assert_eq!(authorize(principal, &elsewhere), Decision::Deny);
        }
    }

    #[test]
    fn tenants_never_write_status() {
        let admin = roles(&[("shop", Role::Admin)]);
        for kind in [Kind::Pod, Kind::Deployment, Kind::Service, Kind::Route] {
            for verb in [Verb::Update, Verb::Patch] {
                let status = Access {
                    status: true,
                    ..access(verb, kind, Some("shop"))
                };
                assert_eq!(authorize(&admin, &status), Decision::Deny, "{kind:?}");
            }
            let read = Access {
                status: true,
                ..access(Verb::Get, kind, Some("shop"))
            };
            assert_eq!(authorize(&admin, &read), Decision::Allow, "{kind:?}");
        }
    }

    #[test]
    fn members_may_read_their_own_namespace_only() {
        let viewer = roles(&[("shop", Role::View)]);
        let get = |name| Access {
            name: Some(name),
            ..access(Verb::Get, Kind::Namespace, None)
        };
        assert_eq!(authorize(&viewer, &get("shop")), Decision::Allow);
        assert_eq!(authorize(&viewer, &get("other")), Decision::Deny);
    }

    #[test]
    fn nodes_touch_only_their_node_and_pods() {
        let node = Principal::Node("n1".into());
        let named = |verb, kind, name| Access {
            name: Some(name),
            ..access(verb, kind, None)
        };
        let node_status = |name| Access {
            status: true,
            ..named(Verb::Patch, Kind::Node, name)
        };
        assert_eq!(authorize(&node, &node_status("n1")), Decision::Allow);
        assert_eq!(authorize(&node, &node_status("n2")), Decision::Deny);
        assert_eq!(
            authorize(&node, &named(Verb::Create, Kind::Node, "n1")),
            Decision::Allow
        );
        assert_eq!(
            authorize(&node, &named(Verb::Create, Kind::Node, "n2")),
            Decision::Deny
        );
        // Labels, taints and unschedulable are in the main part.
        for verb in [Verb::Update, Verb::Patch] {
            assert_eq!(
                authorize(&node, &named(verb, Kind::Node, "n1")),
                Decision::Deny
            );
        }
        assert_eq!(
            authorize(&node, &named(Verb::Delete, Kind::Node, "n1")),
            Decision::Deny
        );
        let used = Decision::AllowIfUsedOn("n1".into());
        assert_eq!(
            authorize(&node, &named(Verb::Get, Kind::Secret, "regcred")),
            used
        );
        assert_eq!(
            authorize(&node, &named(Verb::Get, Kind::ConfigMap, "settings")),
            used
        );
        for verb in [Verb::List, Verb::Watch] {
            assert_eq!(
                authorize(&node, &access(verb, Kind::Secret, Some("shop"))),
                Decision::Deny
            );
        }
        assert_eq!(
            authorize(&node, &named(Verb::Update, Kind::Secret, "regcred")),
            Decision::Deny
        );
        let bound = Decision::AllowIfBoundTo("n1".into());
        assert_eq!(
            authorize(&node, &access(Verb::Get, Kind::Pod, Some("shop"))),
            bound
        );
        let status = Access {
            status: true,
            ..access(Verb::Update, Kind::Pod, Some("shop"))
        };
        assert_eq!(authorize(&node, &status), bound);
        assert_eq!(
            authorize(&node, &access(Verb::Update, Kind::Pod, Some("shop"))),
            Decision::Deny
        );
        let watch = |selector| Access {
            node_selector: selector,
            ..access(Verb::Watch, Kind::Pod, None)
        };
        for kind in [Kind::Service, Kind::Route] {
            assert_eq!(
                authorize(&node, &access(Verb::Watch, kind, None)),
                Decision::Allow
            );
            assert_eq!(
                authorize(&node, &named(Verb::Update, kind, "web")),
                Decision::Deny
            );
        }
        assert_eq!(authorize(&node, &watch(Some("n1"))), Decision::Allow);
        assert_eq!(authorize(&node, &watch(Some("n2"))), Decision::Deny);
        assert_eq!(authorize(&node, &watch(None)), Decision::Deny);
    }

    #[test]
    fn only_a_node_itself_and_cluster_admins_read_the_proxy_key() {
        assert!(may_read_proxy_key(&Principal::Node("n1".into()), "n1"));
        assert!(!may_read_proxy_key(&Principal::Node("n1".into()), "n2"));
        assert!(may_read_proxy_key(&Principal::ClusterAdmin, "n1"));
        assert!(!may_read_proxy_key(&roles(&[("shop", Role::Admin)]), "n1"));
    }

    fn address(i: u32) -> ClientKey {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    /// Takes from `client`'s bucket until it refuses; returns how many it allowed.
    fn drain(limiter: &mut FailureLimiter, client: ClientKey, now: Instant) -> usize {
        (0..)
            .take_while(|_| limiter.take(client, now).is_ok())
            .count()
    }

    #[test]
    fn lookups_are_charged_before_they_are_made_and_refunded_when_valid() {
        let mut limiter = FailureLimiter::new(10);
        let now = Instant::now();
        // Taken one after the other with none finished: the burst, no more.
        assert_eq!(
            drain(&mut limiter, address(1), now),
            FAILED_AUTH_BURST as usize
        );
        let wait = limiter.take(address(1), now).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        limiter.refund(address(1), now);
        assert!(
            limiter.take(address(1), now).is_ok(),
            "a refund is a lookup back"
        );
        assert!(limiter.take(address(1), now).is_err());
        assert!(
            limiter
                .take(address(1), now + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn overflowing_the_tracked_addresses_never_resets_a_throttled_one() {
        const CAPACITY: usize = 100;
        let mut limiter = FailureLimiter::new(CAPACITY);
        let now = Instant::now();
        let throttled = address(0);
        drain(&mut limiter, throttled, now);
        for i in 1..CAPACITY as u32 {
            drain(&mut limiter, address(i), now);
        }
        // Every tracked address is throttled: newcomers are judged empty
        // too, and none of the tracked is forgotten for them.
        for i in 0..3 * CAPACITY as u32 {
            assert!(limiter.take(address(1000 + i), now).is_err());
        }
        assert!(limiter.take(throttled, now).is_err(), "still throttled");
        assert_eq!(limiter.buckets.len(), CAPACITY);

        // A bucket with lookups left may go to make room, a throttled one
        // still not; a refilled one goes first.
        let later = now + Duration::from_millis(500);
        limiter.refund(address(7), later);
        limiter.refund(address(7), later);
        assert!(limiter.take(address(5000), later).is_ok());
        assert!(!limiter.buckets.contains_key(&address(7)));
        assert!(limiter.take(throttled, later).is_err(), "still throttled");
        let refilled = now + Duration::from_secs(60);
        assert!(limiter.take(address(5001), refilled).is_ok());
        assert!(limiter.buckets.len() <= CAPACITY);
    }

    #[test]
    fn tokens_are_random_and_stored_by_hash() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("skf_") && a.len() > 40);
        assert_eq!(token_hash(&a), hash_a);
    }

    #[test]
    fn token_admins() {
        assert!(may_manage_tokens(&Principal::ClusterAdmin, "shop"));
        assert!(may_manage_tokens(&roles(&[("shop", Role::Admin)]), "shop"));
        assert!(!may_manage_tokens(&roles(&[("shop", Role::Edit)]), "shop"));
        assert!(!may_manage_tokens(
            &roles(&[("shop", Role::Admin)]),
            "other"
        ));
        assert!(!may_manage_tokens(&Principal::Node("n".into()), "shop"));
        // An account's token makes none, even as its namespace's admin.
        let account = Principal::Account([("shop".to_owned(), Role::Admin)].into());
        assert!(!may_manage_tokens(&account, "shop"));
        assert_eq!(account.role_in("shop"), Some(Role::Admin));
    }

    #[test]
    fn a_metrics_reader_reads_the_metrics_and_nothing_else() {
        let reader = Principal::MetricsReader;
        assert!(may_read_metrics(&reader));
        assert!(may_read_metrics(&Principal::ClusterAdmin));
        assert!(!may_read_metrics(&roles(&[("shop", Role::Admin)])));
        assert!(!may_read_metrics(&Principal::Node("n".into())));
        for access in [
            access(Verb::Get, Kind::Pod, Some("shop")),
            access(Verb::List, Kind::Node, None),
            access(Verb::Watch, Kind::Pod, None),
        ] {
            assert_eq!(authorize(&reader, &access), Decision::Deny, "{access:?}");
        }
        assert!(!may_manage_tokens(&reader, "shop"));
        assert!(!may_read_proxy_key(&reader, "n"));
        assert_eq!(reader.role_in("shop"), None);
    }
}
