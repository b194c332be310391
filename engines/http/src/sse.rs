//! An incremental parser for Server-Sent Events (`text/event-stream`), as
//! OpenAI-compatible servers stream completions.
//!
//! Pure and allocation-light: feed it the body's byte chunks as they arrive,
//! split anywhere (inside a line, inside a `\r\n` pair, inside a multi-byte
//! UTF-8 character), and it yields the same events as for the whole body at
//! once. Follows the WHATWG event-stream rules:
//!
//! * lines end in `\n`, `\r\n` or a lone `\r`;
//! * a line starting with `:` is a comment and ignored;
//! * `field: value` (one optional space after the colon is dropped); a line
//!   without a colon is a field with an empty value;
//! * `data` lines accumulate, joined by `\n`; `event` and `id` set the
//!   event's type and id; `retry` and unknown fields are ignored;
//! * a blank line dispatches the event, unless it has no `data` line;
//! * a UTF-8 byte order mark at the very start is skipped.
//!
//! Deviations, for robustness against real servers: a line that is not
//! valid UTF-8 is an error (servers send JSON, so it is a broken stream, not
//! something to replace silently), a line longer than [`MAX_LINE`] bytes is
//! an error (a bound on memory), and [`SseParser::finish`] dispatches an
//! event left without its closing blank line at the end of the body.
//!
//! `data: [DONE]`, OpenAI's end-of-stream marker, is an ordinary event
//! here; [`SseEvent::is_done`] recognises it.
//!
//! [`parse_all`] and [`SseParser::feed`] are the entry points a fuzz target
//! uses: neither panics on any input.

use std::fmt;

/// The longest line accepted, in bytes (16 MiB).
pub const MAX_LINE: usize = 16 << 20;

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (the spec's default type is `message`).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

impl SseEvent {
    /// Whether this is OpenAI's end-of-stream marker, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// Why a stream could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseError {
    /// A line is not valid UTF-8; `excerpt` shows its start (lossily).
    InvalidUtf8 { excerpt: String },
    /// A line is longer than [`MAX_LINE`].
    LineTooLong,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::InvalidUtf8 { excerpt } => {
                write!(f, "malformed SSE: a line is not valid UTF-8: {excerpt:?}")
            }
            SseError::LineTooLong => write!(f, "malformed SSE: a line exceeds {MAX_LINE} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// The incremental parser; see the module docs.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next chunk
    /// belongs to that line ending.
    after_cr: bool,
    /// Nothing has been fed yet (for the byte order mark).
    at_start: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser {
            at_start: true,
            ..Default::default()
        }
    }

    /// Feeds the next chunk of the body; complete events are appended to
    /// `out`. After an error the parser should be dropped.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
                self.after_cr = false;
            } else if !bytes.is_empty() {
                self.after_cr = false;
            }
        }
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.push_line_bytes(bytes)?;
                    break;
                }
                Some(i) => {
                    self.push_line_bytes(&bytes[..i])?;
                    let cr = bytes[i] == b'\r';
                    let mut next = i + 1;
                    if cr {
                        if next < bytes.len() {
                            if bytes[next] == b'\n' {
                                next += 1;
                            }
                        } else {
                            self.after_cr = true;
                        }
                    }
                    bytes = &bytes[next..];
                    self.end_line(out)?;
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: an unfinished last line is processed, and an event
    /// still waiting for its blank line is dispatched.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            self.end_line(out)?;
        }
        self.dispatch(out);
        self.after_cr = false;
        Ok(())
    }

    fn push_line_bytes(&mut self, b: &[u8]) -> Result<(), SseError> {
        if self.line.len() + b.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(b);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut raw: &[u8] = &self.line;
        if self.at_start {
            // The BOM can only be at the start of the first line; the first
            // line is complete here, so checking it now is split-safe.
            self.at_start = false;
            if let Some(rest) = raw.strip_prefix(b"\xEF\xBB\xBF") {
                raw = rest;
            }
        }
        let line = match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(_) => {
                let excerpt: String = String::from_utf8_lossy(&raw[..raw.len().min(80)]).into();
                return Err(SseError::InvalidUtf8 { excerpt });
            }
        };
        if line.is_empty() {
            self.dispatch(out);
        } else if !line.starts_with(':') {
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line, ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                "event" => self.event = Some(value.to_string()),
                "id" if !value.contains('\0') => self.id = Some(value.to_string()),
                _ => {}
            }
        }
        self.line.clear();
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            });
        }
        self.has_data = false;
        self.data.clear();
        self.event = None;
    }
}

/// Parses a whole body (including the end-of-stream handling of
/// [`SseParser::finish`]).
pub fn parse_all(bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    p.feed(bytes, &mut out)?;
    p.finish(&mut out)?;
    Ok(out)
}

/// Parses a body delivered as `chunks`, as a streaming client sees it.
pub fn parse_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<SseEvent>, SseError> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, &mut out)?;
    }
    p.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            data: data.into(),
            ..Default::default()
        }
    }

    #[test]
    fn openai_stream() {
        let body = b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n";
        let evs = parse_all(body).unwrap();
        assert_eq!(evs, vec![ev("{\"a\":1}"), ev("{\"a\":2}"), ev("[DONE]")]);
        assert!(evs[2].is_done());
        assert!(!evs[0].is_done());
    }

    #[test]
    fn line_endings_comments_fields() {
        let body = "\u{feff}: keep-alive\r\nevent: error\r\nid: 7\r\ndata: x\r\ndata:y\r\n\r\n\
                    data\rdata: z\r\rretry: 10\nunknown: q\n\n: only a comment\n\n";
        let evs = parse_all(body.as_bytes()).unwrap();
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: Some("error".into()),
                    data: "x\ny".into(),
                    id: Some("7".into())
                },
                SseEvent {
                    event: None,
                    data: "\nz".into(),
                    id: Some("7".into())
                },
            ]
        );
    }

    #[test]
    fn no_data_no_event_and_unterminated_last_event() {
        assert_eq!(parse_all(b"event: ping\n\n").unwrap(), vec![]);
        assert_eq!(parse_all(b"data: tail").unwrap(), vec![ev("tail")]);
        assert_eq!(parse_all(b"data: tail\n").unwrap(), vec![ev("tail")]);
        assert_eq!(parse_all(b"").unwrap(), vec![]);
    }

    #[test]
    fn split_utf8_and_crlf() {
        let body = "data: h\u{e9}llo \u{1f600}\r\n\r\n".as_bytes();
        let whole = parse_all(body).unwrap();
        for i in 0..body.len() {
            for j in i..body.len() {
                let got = parse_chunks([&body[..i], &body[i..j], &body[j..]]).unwrap();
                assert_eq!(got, whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn errors() {
        let e = parse_all(b"data: \xff\xfe\n\n").unwrap_err();
        assert!(matches!(e, SseError::InvalidUtf8 { .. }), "{e}");
        assert!(e.to_string().contains("malformed SSE"));
    }

    fn arb_line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z {}\":,\u{e9}\u{1f600}]{0,12}".prop_map(|s| format!("data: {s}")),
            "[a-z ]{0,6}".prop_map(|s| format!("event: {s}")),
            "[0-9]{0,3}".prop_map(|s| format!("id:{s}")),
            "[a-z ]{0,6}".prop_map(|s| format!(": {s}")),
            Just(String::new()),
            Just("data: [DONE]".to_string()),
            Just("data".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            lines in proptest::collection::vec((arb_line(), 0usize..3), 0..24),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let mut body = String::new();
            for (l, end) in &lines {
                body.push_str(l);
                body.push_str(["\n", "\r\n", "\r"][*end]);
            }
            let bytes = body.as_bytes();
            let whole = parse_all(bytes).unwrap();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            prop_assert_eq!(parse_chunks(chunks).unwrap(), whole);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), cut in 0usize..256) {
            let cut = cut.min(bytes.len());
            let a = parse_all(&bytes);
            let b = parse_chunks([&bytes[..cut], &bytes[cut..]]);
            prop_assert_eq!(a, b);
        }
    }
}
