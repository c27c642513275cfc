//! The node's ingress: one HTTP listener for every HTTP pod on the node,
//! routing by host name. A pod is addressed as `<name>.<namespace>.pod`
//! (also `<name>.<namespace>.pod.localhost`, which resolves to loopback
//! with no DNS set-up), each request served by a fresh instance of the pod's
//! component.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use http::StatusCode;

use crate::runtime::{HttpApp, HttpBody, text_response};

/// Namespace and name of a pod.
pub type PodName = (String, String);

/// The HTTP pods this node serves, by name.
#[derive(Clone, Default)]
pub struct Routes {
    pods: Arc<RwLock<HashMap<PodName, HttpApp>>>,
}

impl Routes {
    pub fn add(&self, pod: PodName, app: HttpApp) {
        self.pods.write().expect("routes lock").insert(pod, app);
    }

    pub fn remove(&self, pod: &PodName) -> Option<HttpApp> {
        self.pods.write().expect("routes lock").remove(pod)
    }

    pub fn len(&self) -> usize {
        self.pods.read().expect("routes lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Serves one request.
    pub async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<HttpBody> {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default()
            .to_owned();
        let Some(pod) = pod_of_host(&host) else {
            return text_response(
                StatusCode::NOT_FOUND,
                format!(
                    "this is a Skiff node's ingress; address a pod as <name>.<namespace>.pod (host was `{host}`)\n"
                ),
            );
        };
        let app = self.pods.read().expect("routes lock").get(&pod).cloned();
        match app {
            Some(app) => app.handle(request).await,
            None => text_response(
                StatusCode::NOT_FOUND,
                format!("no pod {}/{} is serving on this node\n", pod.0, pod.1),
            ),
        }
    }
}

/// `web.shop.pod[.localhost][:port]` → (`shop`, `web`).
pub fn pod_of_host(host: &str) -> Option<PodName> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.');
    let host = host.strip_suffix(".localhost").unwrap_or(host);
    let rest = host.strip_suffix(".pod")?;
    let (name, namespace) = rest.split_once('.')?;
    if name.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some((namespace.to_ascii_lowercase(), name.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_addressed_by_host() {
        let pod = |ns: &str, name: &str| Some((ns.to_owned(), name.to_owned()));
        assert_eq!(pod_of_host("web.shop.pod"), pod("shop", "web"));
        assert_eq!(pod_of_host("web.shop.pod:8080"), pod("shop", "web"));
        assert_eq!(
            pod_of_host("web.shop.pod.localhost:8080"),
            pod("shop", "web")
        );
        assert_eq!(
            pod_of_host("Web.Shop.POD".to_ascii_lowercase().as_str()),
            pod("shop", "web")
        );
        assert_eq!(pod_of_host("127.0.0.1:8080"), None);
        assert_eq!(pod_of_host("web.pod"), None);
        assert_eq!(pod_of_host("a.b.c.pod"), None);
        assert_eq!(pod_of_host(".shop.pod"), None);
    }
}
