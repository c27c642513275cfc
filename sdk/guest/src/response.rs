use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::OutputStream;

/// An HTTP response: what a handler returns, and what
/// [`outbound`](crate::outbound) calls receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn from_parts(status: u16, headers: Vec<(String, Vec<u8>)>, body: Vec<u8>) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn status(&self) -> u16 {
        self.status
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

    /// Writes the response to the host. A response the host cannot accept
    /// (an invalid status or header) is replaced by a 500 saying why, so the
    /// client never waits for an answer that will not come.
    pub(crate) fn send(self, out: ResponseOutparam) {
        let (response, body) = match self.outgoing() {
            Ok(parts) => parts,
            Err(reason) => Response::text(500, format!("handler returned {reason}\n"))
                .outgoing()
                .expect("a plain-text 500 is always valid"),
        };
        ResponseOutparam::set(out, Ok(response));
        write_body(body, &self.body);
    }

    fn outgoing(&self) -> Result<(OutgoingResponse, OutgoingBody), String> {
        let fields = Fields::from_list(&self.headers)
            .map_err(|e| format!("a header the host refuses: {e:?}"))?;
        let response = OutgoingResponse::new(fields);
        response
            .set_status_code(self.status)
            .map_err(|()| format!("an invalid status code {}", self.status))?;
        let body = response
            .body()
            .map_err(|()| "a response whose body was already taken".to_owned())?;
        Ok((response, body))
    }
}

/// Writes `bytes` to an outgoing body and finishes it.
pub(crate) fn write_body(body: OutgoingBody, bytes: &[u8]) {
    if let Ok(stream) = body.write() {
        write_all(&stream, bytes);
        // The stream is a child of the body and must go first.
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

fn write_all(stream: &OutputStream, bytes: &[u8]) {
    // `blocking-write-and-flush` takes at most 4096 bytes per call.
    for chunk in bytes.chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            // The client went away; nothing left to do.
            return;
        }
    }
}
