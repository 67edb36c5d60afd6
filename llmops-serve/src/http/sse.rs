//! Server-sent-event encoding of a chat stream, as OpenAI sends it.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use llmops_core::{ChatChunk, ChatStream, Error, ErrorKind};
use tokio::time::Instant;

const DONE: &[u8] = b"data: [DONE]\n\n";

/// One `data:` event holding `value` as JSON.
fn event<T: serde::Serialize>(value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    buf.get_mut().put_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        let mut b = BytesMut::new();
        b.put_slice(b"data: {\"error\":{\"message\":\"cannot encode chunk\",\"type\":\"api_error\",\"code\":\"internal_error\",\"param\":null}}\n\n");
        return b.freeze();
    }
    let mut b = buf.into_inner();
    b.put_slice(b"\n\n");
    b.freeze()
}

/// Drops or trims usage the client did not ask for. `None` means "send nothing".
fn client_view(mut chunk: ChatChunk, include_usage: bool) -> Option<ChatChunk> {
    if !include_usage && chunk.usage.is_some() {
        if chunk.choices.is_empty() {
            return None;
        }
        chunk.usage = None;
    }
    Some(chunk)
}

struct State {
    first: Option<ChatChunk>,
    rest: ChatStream,
    include_usage: bool,
    deadline: Option<Instant>,
    finished: bool,
}

/// Encodes `first` and then `rest` as SSE bytes: a `data:` event per chunk, `data: [DONE]`
/// after a clean end, or a final `data: {"error": ...}` event (and no `[DONE]`) when the
/// stream fails or passes its deadline.
pub(super) fn encode(
    first: Option<ChatChunk>,
    rest: ChatStream,
    include_usage: bool,
    deadline: Option<Instant>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let state = State {
        first,
        rest,
        include_usage,
        deadline,
        finished: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            if let Some(chunk) = st.first.take() {
                if let Some(c) = client_view(chunk, st.include_usage) {
                    return Some((Ok(event(&c)), st));
                }
                continue;
            }
            let next = match st.deadline {
                Some(d) => match tokio::time::timeout_at(d, st.rest.next()).await {
                    Ok(item) => item,
                    Err(_) => Some(Err(Error::new(
                        ErrorKind::Timeout,
                        "the request's deadline passed while streaming",
                    ))),
                },
                None => st.rest.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if let Some(c) = client_view(chunk, st.include_usage) {
                        return Some((Ok(event(&c)), st));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, kind = %e.kind(), "stream failed after it started");
                    st.finished = true;
                    return Some((Ok(event(&e.to_body())), st));
                }
                None => {
                    st.finished = true;
                    return Some((Ok(Bytes::from_static(DONE)), st));
                }
            }
        }
    })
}
