//! Every read from a registry, bounded: bytes are counted as they arrive
//! and the read stops the moment a cap is crossed (nothing past it is kept),
//! a silence longer than the stall timeout ends it, and each request has a
//! deadline. Manifests are read here with our own HTTP client because
//! oci-client reads a manifest response whole, however long it is; blobs
//! come through oci-client's stream, which does the registry's auth.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::Reference;
use oci_client::manifest::OciDescriptor;
use reqwest::{Method, StatusCode};

use crate::{Credentials, OciError, Registry, classify, sha256_digest};

/// How a bounded read ended early.
#[derive(Debug)]
pub(crate) enum Cut {
    /// Past the limit; the bytes read so far were dropped.
    Over,
    /// Nothing arrived for the stall timeout.
    Stalled,
    /// The response failed; the text says how.
    Failed(String),
    /// The bytes do not match the digest expected of them.
    Digest(String, String),
}

/// Reads `stream` to its end into memory, holding at most `limit` bytes:
/// the chunk that would cross it ends the read (and is dropped with
/// everything before it).
pub(crate) async fn read_capped<S, E>(
    stream: S,
    limit: u64,
    stall: Duration,
) -> Result<Vec<u8>, Cut>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut bytes = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(stall, stream.next()).await {
            Err(_) => return Err(Cut::Stalled),
            Ok(None) => return Ok(bytes),
            Ok(Some(Err(e))) => return Err(stream_error(e.into())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if bytes.len() as u64 + chunk.len() as u64 > limit {
            return Err(Cut::Over);
        }
        bytes.extend_from_slice(&chunk);
    }
}

/// A failed body read, with oci-client's digest check told apart.
fn stream_error(error: Box<dyn std::error::Error + Send + Sync>) -> Cut {
    use oci_client::errors::DigestError;
    let inner = error
        .downcast_ref::<std::io::Error>()
        .and_then(|e| e.get_ref())
        .and_then(|e| e.downcast_ref::<DigestError>());
    if let Some(DigestError::VerificationError { expected, actual }) = inner {
        return Cut::Digest(expected.clone(), actual.clone());
    }
    // The HTTP client's own read timeout (the same stall timeout) may end
    // the read first; it says so somewhere down the chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(cause) = source {
        let timed_out = cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return Cut::Stalled;
        }
        source = cause.source();
    }
    Cut::Failed(chain(&*error))
}

/// An error with its causes, which reqwest keeps out of its own text.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Media types of the manifests the node reads: single images, and
/// indexes of them.
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The most of an error response read, for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;

impl Registry {
    /// `future` held to the request deadline: `what` says what it was
    /// doing, should it run out.
    pub(crate) async fn deadline<T>(
        &self,
        reference: &Reference,
        what: impl Display,
        future: impl Future<Output = Result<T, OciError>>,
    ) -> Result<T, OciError> {
        let limit = self.limits.request_timeout;
        tokio::time::timeout(limit, future)
            .await
            .unwrap_or_else(|_| {
                Err(OciError::Timeout {
                    reference: reference.whole(),
                    what: format!("{what} took longer than {}", seconds(limit)),
                })
            })
    }

    /// A bounded read's early end as the pull's error.
    pub(crate) fn cut(
        &self,
        reference: &Reference,
        blob: &str,
        cap: &'static str,
        limit: u64,
        cut: Cut,
    ) -> OciError {
        let reference = reference.whole();
        match cut {
            Cut::Over => OciError::OverCap {
                reference,
                blob: blob.to_owned(),
                cap,
                limit,
            },
            Cut::Stalled => OciError::Timeout {
                reference,
                what: format!(
                    "the registry sent nothing of {blob} for {}",
                    seconds(self.limits.stall_timeout)
                ),
            },
            Cut::Failed(reason) => OciError::Registry {
                reference,
                reason: format!("reading {blob}: {reason}"),
            },
            Cut::Digest(digest, actual) => OciError::DigestMismatch {
                reference,
                digest,
                actual,
            },
        }
    }

    /// The manifest (or index) `reference` names, at most `limit` bytes
    /// read, and its digest, checked against the one the reference carries
    /// or else the registry names.
    pub(crate) async fn read_manifest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        limit: u64,
        cap: &'static str,
    ) -> Result<(Vec<u8>, String), OciError> {
        let blob = format!("manifest {}", tag_or_digest(reference));
        self.deadline(reference, format!("reading {blob}"), async {
            let response = self
                .manifest_request(reference, credentials, Method::GET)
                .await?;
            // A declared length over the cap is refused before reading.
            if response
                .content_length()
                .is_some_and(|length| length > limit)
            {
                return Err(self.cut(reference, &blob, cap, limit, Cut::Over));
            }
            let named = header_digest(&response);
            let bytes = read_capped(response.bytes_stream(), limit, self.limits.stall_timeout)
                .await
                .map_err(|cut| self.cut(reference, &blob, cap, limit, cut))?;
            let actual = sha256_digest(&bytes);
            let wanted = reference.digest().map(str::to_owned).or(named);
            match wanted {
                Some(wanted) if wanted != actual => Err(OciError::DigestMismatch {
                    reference: reference.whole(),
                    digest: wanted,
                    actual,
                }),
                _ => Ok((bytes, actual)),
            }
        })
        .await
    }

    /// The manifest digest the registry gives for `reference`: from a
    /// HEAD request's header, else from the manifest itself (read within
    /// the cap).
    pub(crate) async fn manifest_digest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<String, OciError> {
        let named = self
            .deadline(reference, "asking for the manifest digest", async {
                let response = self
                    .manifest_request(reference, credentials, Method::HEAD)
                    .await?;
                Ok(header_digest(&response))
            })
            .await?;
        match named {
            Some(digest) => Ok(digest),
            None => {
                let (limit, cap) = self.limits.top_level_cap();
                let (_, digest) = self
                    .read_manifest(reference, credentials, limit, cap)
                    .await?;
                Ok(digest)
            }
        }
    }

    /// A successful response to a manifest request, authenticated the way
    /// the registry asks: the pull secret's credentials first, and a token
    /// from the registry's token service when it answers 401.
    async fn manifest_request(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        method: Method,
    ) -> Result<reqwest::Response, OciError> {
        let name = reference.whole();
        let registry = reference.resolve_registry();
        let url = format!(
            "{}://{registry}/v2/{}/manifests/{}{}",
            self.clients.scheme_for(registry),
            reference.repository(),
            tag_or_digest(reference),
            reference
                .namespace()
                .map(|ns| format!("?ns={ns}"))
                .unwrap_or_default(),
        );
        let send = |token: Option<&str>| {
            let request = self
                .clients
                .http()
                .request(method.clone(), &url)
                .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
            let request = match (token, credentials) {
                (Some(token), _) => request.bearer_auth(token),
                (None, Credentials::Bearer(token)) => request.bearer_auth(token),
                (None, Credentials::Basic { username, password }) => {
                    request.basic_auth(username, Some(password))
                }
                (None, Credentials::Anonymous) => request,
            };
            let name = name.clone();
            async move { request.send().await.map_err(|e| http_error(&name, &e)) }
        };
        let mut response = send(None).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let token = self
                .client_for(reference, credentials)
                .auth(
                    reference,
                    &credentials.auth(),
                    oci_client::RegistryOperation::Pull,
                )
                .await
                .map_err(|e| classify(&name, e))?;
            if let Some(token) = token {
                response = send(Some(&token)).await?;
            }
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let url = response.url().to_string();
        let body = if method == Method::HEAD {
            Vec::new()
        } else {
            // An error's body is read only for its message, and only so far.
            read_capped(
                response.bytes_stream(),
                MAX_ERROR_BODY,
                self.limits.stall_timeout,
            )
            .await
            .unwrap_or_default()
        };
        Err(classify(&name, registry_error(status, &body, url)))
    }

    /// A blob, streamed through oci-client (which checks it against its
    /// digest) and cut off at `limit` bytes or at the size its descriptor
    /// declares, whichever is less: a registry serving more than the
    /// manifest said is refused as soon as it does.
    pub(crate) async fn read_blob(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        descriptor: &OciDescriptor,
        what: &str,
        limit: u64,
        cap: &'static str,
    ) -> Result<Vec<u8>, OciError> {
        let blob = format!("{what} {}", descriptor.digest);
        let (limit, cap) = match u64::try_from(descriptor.size) {
            Ok(declared) if declared < limit => (declared, "its declared size"),
            _ => (limit, cap),
        };
        let client = self.client_for(reference, credentials);
        self.deadline(reference, format!("reading {blob}"), async {
            // oci-client authenticates blob requests with what it was told
            // for the registry (manifests are read without it).
            client
                .store_auth_if_needed(reference.resolve_registry(), &credentials.auth())
                .await;
            let stream = client
                .pull_blob_stream(reference, descriptor)
                .await
                .map_err(|e| classify(&reference.whole(), e))?;
            if stream.content_length.is_some_and(|length| length > limit) {
                return Err(self.cut(reference, &blob, cap, limit, Cut::Over));
            }
            let bytes = read_capped(stream, limit, self.limits.stall_timeout)
                .await
                .map_err(|cut| self.cut(reference, &blob, cap, limit, cut))?;
            // oci-client checks the digest as the bytes come; checked here
            // too so no stream without that check slips through.
            let actual = sha256_digest(&bytes);
            if actual != descriptor.digest {
                return Err(OciError::DigestMismatch {
                    reference: reference.whole(),
                    digest: descriptor.digest.clone(),
                    actual,
                });
            }
            Ok(bytes)
        })
        .await
    }
}

fn tag_or_digest(reference: &Reference) -> &str {
    reference
        .digest()
        .unwrap_or_else(|| reference.tag().unwrap_or("latest"))
}

fn header_digest(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A failed request, a timeout told apart.
fn http_error(reference: &str, error: &reqwest::Error) -> OciError {
    if error.is_timeout() {
        OciError::Timeout {
            reference: reference.to_owned(),
            what: format!("the registry did not answer in time ({})", chain(error)),
        }
    } else {
        OciError::Registry {
            reference: reference.to_owned(),
            reason: chain(error),
        }
    }
}

/// An error response as oci-client describes one, so [`classify`] reads
/// both alike.
fn registry_error(
    status: StatusCode,
    body: &[u8],
    url: String,
) -> oci_client::errors::OciDistributionError {
    use oci_client::errors::{OciDistributionError as E, OciEnvelope};
    if status == StatusCode::UNAUTHORIZED {
        return E::UnauthorizedError { url };
    }
    match serde_json::from_slice::<OciEnvelope>(body) {
        Ok(envelope) if status.is_client_error() => E::RegistryError { envelope, url },
        _ => E::ServerError {
            code: status.as_u16(),
            url,
            message: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

/// `30s`, `1.5s`: a duration as messages give it.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}
