//! An incremental server-sent-events decoder.
//!
//! Network reads split events anywhere — mid-line, mid-UTF-8 character, between `\r` and
//! `\n`. [`SseDecoder`] buffers bytes until a line is complete and an event until its blank
//! line, following the WHATWG event-stream rules (`data:` lines joined with `\n`, `event:`,
//! `id:`, comments ignored, `\n`, `\r\n` and `\r` line ends).

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};
use llmops_core::{Error, ErrorKind};

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseEvent {
    /// The `event:` name, if the event had one.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Incremental decoder: [`feed`](Self::feed) bytes as they arrive, get whole events back.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let cr = self.buf[pos] == b'\r';
            if cr && pos + 1 == self.buf.len() {
                // A `\r` at the end may be the first half of `\r\n`: wait for more.
                break;
            }
            let line = self.buf.split_to(pos);
            let skip = if cr && self.buf.get(1) == Some(&b'\n') {
                2
            } else {
                1
            };
            self.buf.advance(skip);
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        out
    }

    /// Whether bytes of an unfinished event are pending (a stream that ends now was cut).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.has_data
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data {
                self.event = None;
                return None;
            }
            self.has_data = false;
            return Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// Whether the body ended cleanly or was cut.
#[derive(Debug)]
pub(crate) enum SseItem {
    /// An event.
    Event(SseEvent),
    /// The body ended; `cut` when it ended inside an event.
    End {
        /// Bytes of an unfinished event were pending.
        cut: bool,
    },
}

/// The events of a response body. Transport failures mid-body become
/// `StreamInterrupted { after_first_event: false }` errors (callers re-classify by position).
pub(crate) fn events(
    provider: std::sync::Arc<str>,
    resp: reqwest::Response,
) -> impl Stream<Item = Result<SseItem, Error>> + Send + 'static {
    let body = resp.bytes_stream();
    futures_util::stream::unfold(
        (
            body,
            SseDecoder::new(),
            std::collections::VecDeque::new(),
            false,
        ),
        move |(mut body, mut dec, mut pending, done)| {
            let provider = provider.clone();
            async move {
                loop {
                    if let Some(ev) = pending.pop_front() {
                        return Some((Ok(SseItem::Event(ev)), (body, dec, pending, done)));
                    }
                    if done {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(bytes)) => pending.extend(dec.feed(&bytes)),
                        Some(Err(e)) => {
                            let err = Error::new(
                                ErrorKind::StreamInterrupted {
                                    after_first_event: false,
                                },
                                format!(
                                    "the upstream connection broke mid-stream: {}",
                                    super::error_chain(&e)
                                ),
                            )
                            .with_provider(provider.as_ref());
                            return Some((Err(err), (body, dec, pending, true)));
                        }
                        None => {
                            let cut = dec.has_partial();
                            return Some((Ok(SseItem::End { cut }), (body, dec, pending, true)));
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_at_once(input: &str) -> Vec<SseEvent> {
        SseDecoder::new().feed(input.as_bytes())
    }

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let input = "event: message_start\r\ndata: {\"a\":\"é\"}\r\n\r\n: comment\n\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let whole = all_at_once(input);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[0].data, "{\"a\":\"é\"}");
        assert_eq!(whole[1].data, "one\ntwo");
        assert_eq!(whole[2].data, "[DONE]");
        let bytes = input.as_bytes();
        for cut in 1..bytes.len() {
            let mut d = SseDecoder::new();
            let mut got = d.feed(&bytes[..cut]);
            got.extend(d.feed(&bytes[cut..]));
            assert_eq!(got, whole, "split at byte {cut}");
            assert!(!d.has_partial());
        }
        // One byte at a time.
        let mut d = SseDecoder::new();
        let got: Vec<_> = bytes.iter().flat_map(|b| d.feed(&[*b])).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn bare_cr_line_ends_and_partial_events() {
        // A final `\r` may be half of `\r\n`, so the event waits for the next byte.
        let mut d = SseDecoder::new();
        assert_eq!(d.feed(b"data: a\r\rdata: b\r\r").len(), 1);
        assert_eq!(d.feed(b"data: c")[0].data, "b");
        let got = all_at_once("data: a\r\rdata: b\r\r\n");
        assert_eq!(
            got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let mut d = SseDecoder::new();
        assert!(d.feed(b"data: {\"cut").is_empty());
        assert!(d.has_partial());
        let mut d = SseDecoder::new();
        assert!(d.feed(b"data: x\n").is_empty());
        assert!(
            d.has_partial(),
            "data without its blank line is an unfinished event"
        );
    }

    #[test]
    fn field_without_colon_and_no_space() {
        let got = all_at_once("data\n\ndata:x\n\n");
        assert_eq!(got[0].data, "");
        assert_eq!(got[1].data, "x");
    }
}
