//! Outbound HTTP for guests: denied unless the destination is on the
//! component's allow-list. Raw sockets stay closed altogether (see
//! `sandbox`), so `wasi:http/outgoing-handler` is the only way out and every
//! request through it passes [`AllowList::permits`]. On a node, requests to
//! `http://<service>.<namespace>.svc` go to the node's ingress, which
//! balances them over the Service's pods: discovery without DNS. Every
//! other request is sent by `send`, which checks the addresses its host
//! resolves to (`egress`) before connecting.

use std::net::IpAddr;
use std::sync::Arc;

use skiff_api::outbound::AllowList;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::sandbox::ServiceGateway;
use super::send::{self, Egress, Route};

/// `wasi:http` hooks that enforce an [`AllowList`] before any byte leaves.
pub(crate) struct OutboundHooks {
    allow: Arc<AllowList>,
    services: Option<Arc<ServiceGateway>>,
    /// Refused like private addresses (see `egress`).
    denied: Arc<[IpAddr]>,
}

impl OutboundHooks {
    pub(crate) fn new(allow: Arc<AllowList>, services: Option<Arc<ServiceGateway>>) -> Self {
        Self {
            allow,
            services,
            denied: Arc::default(),
        }
    }

    /// Also refuses these addresses unless a rule names them (the node's
    /// own, its control plane's).
    pub(crate) fn denying(mut self, denied: Arc<[IpAddr]>) -> Self {
        self.denied = denied;
        self
    }

    /// Where a request goes: `Some(ingress)` for a Service the guest may
    /// call, `None` for anywhere else it may go, an error when denied.
    fn destination(&self, uri: &http::Uri) -> Result<Option<std::net::SocketAddr>, ()> {
        let service = self.services.as_ref().and_then(|gateway| {
            let (namespace, _) = service_of_host(uri.host()?)?;
            Some((gateway, namespace))
        });
        match service {
            Some((gateway, namespace))
                if uri.scheme() == Some(&http::uri::Scheme::HTTP)
                    && (namespace == gateway.namespace || self.allow.permits(uri)) =>
            {
                Ok(Some(gateway.ingress))
            }
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
            Ok(Some(ingress)) => {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                match http::Uri::builder()
                    .scheme("http")
                    .authority(ingress.to_string())
                    .path_and_query(path)
                    .build()
                {
                    Ok(uri) => *request.uri_mut() = uri,
                    Err(_) => return Box::new(async { Err(HttpError::HttpRequestUriInvalid) }),
                }
                Route::Gateway(ingress)
            }
            Ok(None) => Route::Checked(Egress {
                allow: self.allow.clone(),
                denied: self.denied.clone(),
            }),
        };
        Box::new(send::send(request, options, route))
    }
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

    fn hooks(allow: &[&str]) -> OutboundHooks {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        OutboundHooks::new(
            Arc::new(AllowList::parse(&allow).unwrap()),
            Some(Arc::new(ServiceGateway {
                namespace: "shop".into(),
                ingress: "127.0.0.1:9000".parse().unwrap(),
            })),
        )
    }

    #[test]
    fn own_namespace_services_are_allowed_and_others_need_a_grant() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        let ingress = Ok(Some("127.0.0.1:9000".parse().unwrap()));
        let closed = hooks(&[]);
        assert_eq!(closed.destination(&uri("http://web.shop.svc/x")), ingress);
        assert_eq!(closed.destination(&uri("http://web.other.svc/")), Err(()));
        assert_eq!(closed.destination(&uri("http://example.com/")), Err(()));
        assert_eq!(closed.destination(&uri("https://web.shop.svc/")), Err(()));
        let granted = hooks(&["*.other.svc", "example.com"]);
        assert_eq!(granted.destination(&uri("http://web.other.svc/")), ingress);
        assert_eq!(granted.destination(&uri("http://example.com/")), Ok(None));
        // Without a gateway (`wasmctl run`) a .svc name is just a host.
        let local = OutboundHooks::new(Arc::new(AllowList::default()), None);
        assert_eq!(local.destination(&uri("http://web.shop.svc/")), Err(()));
    }
}
