//! Outbound HTTP through `wasi:http/outgoing-handler`. The host decides
//! where requests may go; Skiff refuses any destination that is not on the
//! component's allow-list, which shows up here as [`Error::is_denied`].

use std::fmt;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};

use crate::Response;
use crate::request::read_body;
use crate::response::write_body;

/// Why an outbound request produced no response.
#[derive(Debug, Clone)]
pub enum Error {
    /// The URL is not `http://` or `https://` with a host.
    InvalidUrl(String),
    /// The host refused or failed the request.
    Http(ErrorCode),
    /// The request could not be assembled or its response not read.
    Io(String),
}

impl Error {
    /// Whether the host refused the destination (not on the allow-list).
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Http(ErrorCode::HttpRequestDenied))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(url) => write!(f, "invalid URL `{url}`"),
            Self::Http(ErrorCode::HttpRequestDenied) => {
                f.write_str("request denied: destination not allowed")
            }
            Self::Http(code) => write!(f, "request failed: {code:?}"),
            Self::Io(reason) => write!(f, "request failed: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    send("GET", url, &[], &[])
}

/// Sends a request and waits for the whole response.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<Response, Error> {
    let target = Target::parse(url).ok_or_else(|| Error::InvalidUrl(url.to_owned()))?;
    let io = |what: &str| Error::Io(what.to_owned());

    let fields = Fields::from_list(headers).map_err(|e| Error::Io(format!("header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&method_of(method))
        .map_err(|()| io("invalid method"))?;
    request
        .set_scheme(Some(&target.scheme))
        .map_err(|()| io("invalid scheme"))?;
    request
        .set_authority(Some(target.authority))
        .map_err(|()| io("invalid host"))?;
    request
        .set_path_with_query(Some(target.path_with_query))
        .map_err(|()| io("invalid path"))?;
    let outgoing_body = request.body().map_err(|()| io("request body taken"))?;

    let pending = outgoing_handler::handle(request, None).map_err(Error::Http)?;
    write_body(outgoing_body, body);

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(Error::Http(code)),
        Some(Err(())) | None => return Err(io("response already taken")),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let body = response
        .consume()
        .map_err(|()| io("response body taken"))
        .and_then(|b| read_body(b).map_err(Error::Io))?;
    Ok(Response::from_parts(status, headers, body))
}

struct Target<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_with_query: &'a str,
}

impl<'a> Target<'a> {
    fn parse(url: &'a str) -> Option<Self> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            (Scheme::Https, url.strip_prefix("https://")?)
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_with_query) = rest.split_at(split);
        if authority.is_empty() {
            return None;
        }
        let path_with_query = if path_with_query.is_empty() {
            "/"
        } else {
            path_with_query
        };
        Some(Self {
            scheme,
            authority,
            path_with_query,
        })
    }
}

fn method_of(method: &str) -> Method {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert!(matches!(t.scheme, Scheme::Http));
        assert_eq!(
            (t.authority, t.path_with_query),
            ("127.0.0.1:8080", "/a/b?c=d")
        );

        let t = Target::parse("https://example.com").unwrap();
        assert!(matches!(t.scheme, Scheme::Https));
        assert_eq!((t.authority, t.path_with_query), ("example.com", "/"));

        let t = Target::parse("http://example.com?x").unwrap();
        assert_eq!((t.authority, t.path_with_query), ("example.com", "?x"));

        assert!(Target::parse("ftp://x/").is_none());
        assert!(Target::parse("http:///path").is_none());
        assert!(Target::parse("example.com").is_none());
    }
}
