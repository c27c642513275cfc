//! A request body on its way to another process (a Linux pod or another
//! node's ingress). A small body is kept whole, so the request can be sent
//! again to another endpoint; a larger one is streamed through, never
//! collected, and can be sent again only while nothing of it was read (a
//! connection that could not be made).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the ingress's client sends.
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// Bodies up to this size (by their declared length) are kept whole so a
/// request can be retried; larger or unsized ones stream.
pub const REPLAYABLE_BODY: u64 = 64 << 10;

/// A request's body, ready to be sent once or more.
pub enum Outgoing {
    Whole(Bytes),
    Streamed {
        slot: Arc<Mutex<Option<ClientBody>>>,
        hint: SizeHint,
    },
}

impl Outgoing {
    /// Keeps `body` whole when it says it is small and arrives so, else
    /// streams it. A body that claimed to be small and is not is refused
    /// (the error) rather than held.
    pub async fn new<B>(body: B) -> Result<Outgoing, BoxError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let hint = body.size_hint();
        let small = body.is_end_stream() || hint.upper().is_some_and(|n| n <= REPLAYABLE_BODY);
        if small {
            let limited = http_body_util::Limited::new(body, REPLAYABLE_BODY as usize);
            return Ok(Outgoing::Whole(limited.collect().await?.to_bytes()));
        }
        let body = body.map_err(Into::into).boxed_unsync();
        Ok(Outgoing::Streamed {
            slot: Arc::new(Mutex::new(Some(body))),
            hint,
        })
    }

    /// A body for one try, or None when a streamed body was already (partly)
    /// sent and cannot be again.
    pub fn attempt(&self) -> Option<ClientBody> {
        match self {
            Outgoing::Whole(bytes) => Some(
                Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
            Outgoing::Streamed { slot, hint } => {
                if slot.lock().expect("body slot").is_none() {
                    return None;
                }
                Some(
                    Take {
                        slot: slot.clone(),
                        body: None,
                        hint: *hint,
                    }
                    .boxed_unsync(),
                )
            }
        }
    }
}

/// A streamed body for one try: takes the body out of the shared slot when
/// first read, so a try that never read it leaves it for the next.
struct Take {
    slot: Arc<Mutex<Option<ClientBody>>>,
    body: Option<ClientBody>,
    hint: SizeHint,
}

impl http_body::Body for Take {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.body.is_none() {
            this.body = this.slot.lock().expect("body slot").take();
        }
        match &mut this.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(Some(Err("the request body was already sent".into()))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
