//! Who is calling and what they may do. Tokens are random 256-bit secrets,
//! stored only as their SHA-256 (they are not passwords, so a slow hash
//! buys nothing). Authorization is a pure decision over the principal and
//! the request, made before anything is read, so a refusal never depends
//! on whether the object exists.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
            Principal::Node(_) => None,
        }
    }

    fn from_record(record: &TokenRecord) -> Principal {
        if record.cluster_admin {
            Principal::ClusterAdmin
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
}

/// Decides whether `principal` may make the `access`.
pub fn authorize(principal: &Principal, access: &Access<'_>) -> Decision {
    match principal {
        Principal::ClusterAdmin => Decision::Allow,
        Principal::Namespaced(roles) | Principal::Account(roles) => namespaced(roles, access),
        Principal::Node(node) => node_agent(node, access),
    }
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
    // what they may use, and change none of it.
    if access.kind == Kind::ResourceQuota {
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
        Principal::Node(_) => false,
    }
}

/// May `principal` read the cluster's proxy key as node `node`? Only that
/// node's own token and cluster admins: with the key, one can have any
/// node's ingress serve any pod.
pub fn may_read_proxy_key(principal: &Principal, node: &str) -> bool {
    match principal {
        Principal::ClusterAdmin => true,
        Principal::Node(own) => own == node,
        Principal::Namespaced(_) | Principal::Account(_) => false,
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
/// flood of made-up tokens cannot grow the cache without bound.
pub const MAX_CACHED_LOOKUPS: usize = 10_000;
/// Failed lookups a client address may make in a burst...
pub const FAILED_AUTH_BURST: f64 = 20.0;
/// ...and the rate at which it regains them, per second. Beyond it, its
/// tokens are not looked up (429), so made-up tokens cannot load the
/// database; tokens already cached still work.
pub const FAILED_AUTH_PER_SECOND: f64 = 1.0;
/// Most client addresses whose failures are tracked at once.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Why a bearer token does not establish a caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Too many lookups of unknown tokens from this client lately.
    #[error(
        "too many requests with unknown tokens from this address; retry in {} s",
        retry_after.as_secs()
    )]
    Throttled { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves bearer tokens to principals, with a short cache so that the
/// database is not asked on every request, and a limit per client address
/// on lookups of tokens that turn out unknown.
pub struct Authenticator {
    store: Store,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], CachedLookup>>,
    failures: Mutex<HashMap<ClientKey, Bucket>>,
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

    fn refill(&mut self, now: Instant) {
        let gained = now.duration_since(self.updated).as_secs_f64() * FAILED_AUTH_PER_SECOND;
        self.tokens = (self.tokens + gained).min(FAILED_AUTH_BURST);
        self.updated = now;
    }

    /// How long until one lookup is allowed again (zero: now).
    fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / FAILED_AUTH_PER_SECOND)
        }
    }
}

impl Authenticator {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
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
        let client = client.map(client_key);
        if let Some(client) = client {
            let mut failures = self.failures.lock().expect("failures lock");
            if let Some(bucket) = failures.get_mut(&client) {
                bucket.refill(now);
                let wait = bucket.wait();
                if !wait.is_zero() {
                    return Err(AuthError::Throttled {
                        // Whole seconds, rounded up, as Retry-After has them.
                        retry_after: Duration::from_secs(wait.as_secs_f64().ceil() as u64),
                    });
                }
            }
        }
        self.database_lookups.fetch_add(1, Ordering::Relaxed);
        let (principal, expires) = if token.starts_with(ACCOUNT_TOKEN_PREFIX) {
            let record = self.store.find_account_token(&hash).await?;
            (
                record.as_ref().map(Principal::of_account),
                record.map(|r| r.expires_at),
            )
        } else {
            let record = self.store.find_token(&hash).await?;
            (
                record.as_ref().map(Principal::from_record),
                record.and_then(|r| r.expires_at),
            )
        };
        if principal.is_none()
            && let Some(client) = client
        {
            self.count_failure(client, now);
        }
        self.remember(hash, (principal.clone(), now, expires));
        Ok(principal)
    }

    fn count_failure(&self, client: ClientKey, now: Instant) {
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() >= MAX_TRACKED_CLIENTS && !failures.contains_key(&client) {
            // A bucket refilled to the brim is as good as none.
            failures.retain(|_, bucket| {
                bucket.refill(now);
                bucket.tokens < FAILED_AUTH_BURST
            });
            if failures.len() >= MAX_TRACKED_CLIENTS {
                // Every tracked client is failing right now: forget the
                // lot rather than grow; each starts over with a full burst.
                failures.clear();
            }
        }
        let bucket = failures.entry(client).or_insert_with(|| Bucket::full(now));
        bucket.refill(now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    fn remember(&self, hash: [u8; 32], lookup: CachedLookup) {
        let now = lookup.1;
        let mut cache = self.cache.lock().expect("cache lock");
        cache.retain(|_, (_, fetched, _)| now.duration_since(*fetched) < self.ttl);
        if cache.len() >= MAX_CACHED_LOOKUPS {
            // Unknown tokens go first: known ones are what saves lookups.
            cache.retain(|_, (principal, _, _)| principal.is_some());
            if cache.len() >= MAX_CACHED_LOOKUPS {
                cache.clear();
            }
        }
        cache.insert(hash, lookup);
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
}
