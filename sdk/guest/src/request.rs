use wasip2::http::types::{IncomingBody, IncomingRequest, Method};
use wasip2::io::streams::{InputStream, StreamError};

/// An incoming HTTP request, with its body read in full.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path_with_query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    /// Builds a request by hand, e.g. in a handler's unit tests.
    pub fn new(method: &str, path_with_query: &str) -> Self {
        Self {
            method: method.to_owned(),
            path_with_query: path_with_query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn read(incoming: IncomingRequest) -> Result<Self, String> {
        let method = method_name(&incoming.method());
        let path_with_query = incoming.path_with_query().unwrap_or_else(|| "/".into());
        let headers = incoming.headers().entries();
        let body = incoming
            .consume()
            .map_err(|()| "request body already taken".to_owned())?;
        let body = read_body(body)?;
        Ok(Self {
            method,
            path_with_query,
            headers,
            body,
        })
    }

    /// The method, upper case (`GET`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path without the query (`/items/7`).
    pub fn path(&self) -> &str {
        self.path_with_query
            .split_once('?')
            .map_or(self.path_with_query.as_str(), |(path, _)| path)
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, query)| query)
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// The first value of a header (names are case-insensitive), if it is
    /// text.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::first_header(&self.headers, name)
    }

    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
    .to_owned()
}

/// Reads an incoming body (a request's or a response's) to its end.
pub(crate) fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let stream = body
        .stream()
        .map_err(|()| "body stream already taken".to_owned())?;
    let bytes = read_stream(&stream)?;
    // The stream is a child of the body and must go first.
    drop(stream);
    IncomingBody::finish(body);
    Ok(bytes)
}

fn read_stream(stream: &InputStream) -> Result<Vec<u8>, String> {
    const CHUNK: u64 = 64 * 1024;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(CHUNK) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
}

/// Decodes `%XX` escapes and `+` (as space), leaving malformed escapes as
/// they are.
fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_are_split() {
        let r = Request::new("GET", "/fetch?url=http%3A%2F%2Fa.test%2Fx&n=1+2&flag");
        assert_eq!(r.path(), "/fetch");
        assert_eq!(r.query_param("url").as_deref(), Some("http://a.test/x"));
        assert_eq!(r.query_param("n").as_deref(), Some("1 2"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(Request::new("GET", "/").query(), None);
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn headers_are_case_insensitive() {
        let r = Request::new("GET", "/").with_header("X-Thing", "yes");
        assert_eq!(r.header("x-thing"), Some("yes"));
        assert_eq!(r.header("X-THING"), Some("yes"));
    }
}
