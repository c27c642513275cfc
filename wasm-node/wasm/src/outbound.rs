//! Outbound HTTP for guests: denied unless the destination is on the
//! component's allow-list. Raw sockets stay closed altogether (see
//! `sandbox`), so `wasi:http/outgoing-handler` is the only way out and every
//! request through it passes [`AllowList::permits`]. On a node, requests to
//! `http://<service>.<namespace>.svc` go to the node's ingress, which
//! balances them over the Service's pods: discovery without DNS. The host
//! names the caller's namespace on them ([`CALLER_NAMESPACE_HEADER`], with
//! [`CALLER_AUTH_HEADER`] to prove it), and the ingress, not the guest's
//! allow-list, decides whether the Service admits that caller. Every other
//! request is sent by `send`, which checks the addresses its host resolves
//! to (`egress`) before connecting.
//!
//! Every request let out, to a Service or elsewhere, carries a W3C
//! `traceparent` continuing the trace of the request the instance serves
//! (or a trace of its own), unless the guest set a valid one
//! ([`trace::propagate`]).

use std::net::IpAddr;
use std::sync::Arc;

use skiff_api::outbound::AllowList;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::sandbox::ServiceGateway;
use super::send::{self, Egress, Route};
use super::trace::{self, TraceContext};

/// The namespace of the pod calling a Service, set by the host.
pub const CALLER_NAMESPACE_HEADER: &str = "skiff-caller-namespace";
/// The node's credential for [`CALLER_NAMESPACE_HEADER`].
pub const CALLER_AUTH_HEADER: &str = "skiff-caller-auth";
/// The credential one node's ingress sends another's with a proxied request.
pub const PROXY_AUTH_HEADER: &str = "skiff-proxy-auth";
/// Every header the host and its ingresses trust: none of them from a
/// guest, and none of them ever to a guest.
pub const INTERNAL_HEADERS: [&str; 3] = [
    CALLER_NAMESPACE_HEADER,
    CALLER_AUTH_HEADER,
    PROXY_AUTH_HEADER,
];

/// `wasi:http` hooks that enforce an [`AllowList`] before any byte leaves.
pub(crate) struct OutboundHooks {
    allow: Arc<AllowList>,
    services: Option<Arc<ServiceGateway>>,
    /// Refused like private addresses (see `egress`).
    denied: Arc<[IpAddr]>,
    /// The trace of the request the instance serves, if any.
    trace: Option<TraceContext>,
}

impl OutboundHooks {
    pub(crate) fn new(allow: Arc<AllowList>, services: Option<Arc<ServiceGateway>>) -> Self {
        Self {
            allow,
            services,
            denied: Arc::default(),
            trace: None,
        }
    }

    /// Also refuses these addresses unless a rule names them (the node's
    /// own, its control plane's).
    pub(crate) fn denying(mut self, denied: Arc<[IpAddr]>) -> Self {
        self.denied = denied;
        self
    }

    /// Sends every request on in this trace (see [`trace::propagate`]).
    pub(crate) fn continuing(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// Where a request goes: `Some(gateway)` for any Service (whether it
    /// admits this caller is the ingress's decision, made on the Service's
    /// `allowedCallers`: the caller's allow-list never opens another
    /// namespace's Service), `None` for anywhere else it may go, an error
    /// when denied.
    fn destination(&self, uri: &http::Uri) -> Result<Option<&ServiceGateway>, ()> {
        let service = self
            .services
            .as_deref()
            .filter(|_| uri.host().and_then(service_of_host).is_some());
        match service {
            Some(gateway) if uri.scheme() == Some(&http::uri::Scheme::HTTP) => Ok(Some(gateway)),
            Some(_) => Err(()),
            None if self.allow.permits(uri) => Ok(None),
            None => Err(()),
        }
    }
}

/// `web.shop.svc` (also with `.cluster.local` or `.localhost` after it, and
/// any port) → (`shop`, `web`).
pub fn service_of_host(host: &str) -> Option<(String, String)> {
    named_host(host, "svc")
}

/// `NAME.NAMESPACE.<kind>` (also with `.cluster.local` or `.localhost` after
/// it, and any port) → (namespace, name), lower-cased: how pods (`pod`) and
/// Services (`svc`) are addressed by host.
pub fn named_host(host: &str, kind: &str) -> Option<(String, String)> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host
        .strip_suffix(".cluster.local")
        .or_else(|| host.strip_suffix(".localhost"))
        .unwrap_or(&host);
    let (name, namespace) = host
        .strip_suffix(kind)?
        .strip_suffix('.')?
        .split_once('.')?;
    if name.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some((namespace.to_owned(), name.to_owned()))
}

type ResponseFuture = Box<dyn Future<Output = Result<send::Sent, HttpError>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let mut request = request;
        let route = match self.destination(request.uri()) {
            Err(()) => {
                tracing::warn!(
                    uri = %request.uri(),
                    "outbound request denied: destination is not on the allow-list"
                );
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
            // The Host header keeps naming the Service; the connection goes
            // to the ingress.
            Ok(Some(gateway)) => {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                match http::Uri::builder()
                    .scheme("http")
                    .authority(gateway.ingress.to_string())
                    .path_and_query(path)
                    .build()
                {
                    Ok(uri) => *request.uri_mut() = uri,
                    Err(_) => return Box::new(async { Err(HttpError::HttpRequestUriInvalid) }),
                }
                name_the_caller(request.headers_mut(), gateway);
                Route::Gateway(gateway.ingress)
            }
            Ok(None) => Route::Checked(Egress {
                allow: self.allow.clone(),
                denied: self.denied.clone(),
            }),
        };
        // Only requests that may go out get a trace: a denied one costs
        // nothing more.
        trace::propagate(request.headers_mut(), self.trace.as_ref());
        Box::new(send::send(request, options, route))
    }
}

/// Names the calling pod's namespace, with its credential, in place of
/// whatever the guest set under these names (`insert` drops every earlier
/// value), and drops a proxy credential a guest could only have forged.
fn name_the_caller(headers: &mut http::HeaderMap, gateway: &ServiceGateway) {
    headers.insert(CALLER_NAMESPACE_HEADER, gateway.namespace.clone());
    headers.insert(CALLER_AUTH_HEADER, gateway.credential.clone());
    headers.remove(PROXY_AUTH_HEADER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_named_by_host() {
        let svc = |ns: &str, name: &str| Some((ns.to_owned(), name.to_owned()));
        assert_eq!(service_of_host("web.shop.svc"), svc("shop", "web"));
        assert_eq!(service_of_host("web.shop.svc:8080"), svc("shop", "web"));
        assert_eq!(
            service_of_host("Web.Shop.svc.cluster.local"),
            svc("shop", "web")
        );
        assert_eq!(
            service_of_host("web.shop.svc.localhost:80"),
            svc("shop", "web")
        );
        assert_eq!(service_of_host("web.svc"), None);
        assert_eq!(service_of_host("a.b.c.svc"), None);
        assert_eq!(service_of_host("web.shop.pod"), None);
    }

    fn gateway() -> ServiceGateway {
        ServiceGateway::new(
            "shop",
            "127.0.0.1:9000".parse().unwrap(),
            http::HeaderValue::from_static("vouched"),
        )
        .unwrap()
    }

    fn hooks(allow: &[&str]) -> OutboundHooks {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        OutboundHooks::new(
            Arc::new(AllowList::parse(&allow).unwrap()),
            Some(Arc::new(gateway())),
        )
    }

    #[test]
    fn every_service_goes_to_the_ingress_which_decides_on_the_caller() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        let via_ingress = |hooks: &OutboundHooks, u: &str| {
            hooks
                .destination(&uri(u))
                .map(|g| g.map(|g| g.ingress.to_string()))
        };
        let ingress = Ok(Some("127.0.0.1:9000".to_owned()));
        let closed = hooks(&[]);
        assert_eq!(via_ingress(&closed, "http://web.shop.svc/x"), ingress);
        // Another namespace's Service too: it is refused, unless it admits
        // the caller, by the ingress.
        assert_eq!(via_ingress(&closed, "http://web.other.svc/"), ingress);
        assert_eq!(via_ingress(&closed, "http://example.com/"), Err(()));
        assert_eq!(via_ingress(&closed, "https://web.shop.svc/"), Err(()));
        // A grant for another namespace's Services changes nothing: only
        // the Service's allowedCallers open it.
        let granted = hooks(&["*.other.svc", "example.com"]);
        assert_eq!(via_ingress(&granted, "http://web.other.svc/"), ingress);
        assert_eq!(via_ingress(&granted, "https://web.other.svc/"), Err(()));
        assert_eq!(via_ingress(&granted, "http://example.com/"), Ok(None));
        // Without a gateway (`wasmctl run`) a .svc name is just a host.
        let local = OutboundHooks::new(Arc::new(AllowList::default()), None);
        assert_eq!(via_ingress(&local, "http://web.shop.svc/"), Err(()));
    }

    #[test]
    fn the_host_names_the_caller_over_whatever_the_guest_set() {
        let mut headers = http::HeaderMap::new();
        headers.append(CALLER_NAMESPACE_HEADER, "other".parse().unwrap());
        headers.append(CALLER_NAMESPACE_HEADER, "another".parse().unwrap());
        headers.insert(CALLER_AUTH_HEADER, "forged".parse().unwrap());
        headers.insert(PROXY_AUTH_HEADER, "1.forged".parse().unwrap());
        headers.insert("accept", "text/plain".parse().unwrap());
        name_the_caller(&mut headers, &gateway());
        let all = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all(CALLER_NAMESPACE_HEADER), ["shop"]);
        assert_eq!(all(CALLER_AUTH_HEADER), ["vouched"]);
        assert!(all(PROXY_AUTH_HEADER).is_empty());
        assert_eq!(all("accept"), ["text/plain"]);
    }
}
