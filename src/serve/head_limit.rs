//! The size limits of request heads, applied while the head is still arriving, so that every
//! client over them gets the service's own 431 (a JSON body in its error shape) at once.
//!
//! hyper answers a head over its buffer or with more fields than it parses with a bare 431, and
//! one that never ends (curl cuts its headers at 128 KB and then waits) with nothing at all once
//! its header timeout ends. [`HeadLimit`] sits between hyper and the TLS stream and watches the
//! bytes of each head: once a head goes over [`super::MAX_HEADER_BYTES`] or begins a field past
//! [`super::MAX_HEADER_FIELDS`], it ends the head there for hyper (at the last whole line, or
//! where the line was cut) and reads nothing more from the client. hyper then hands the head to
//! serve with a [`HeadCut`] attached, and serve answers 431 and closes the connection. HTTP
//! itself stays hyper's: this module only scans for line ends.
//!
//! A client may still be sending the rest of that head when the answer goes out. Closing a
//! socket with unread bytes makes the kernel send a reset, which can destroy the answer before
//! the client reads it; so after a cut, shutdown first ends the TLS stream and then reads and
//! discards what the client sends, until it closes or [`LINGER`] has passed (a lingering close).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a connection whose head was cut goes on reading after its answer, so the client
/// sees the answer instead of a reset.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes read and discarded in that time.
const LINGER_BYTES: usize = 8 << 20;

/// Why a head was ended early; a request extension of the request hyper made of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadCut {
    /// The head went over the byte limit; the bytes received when it was cut.
    Bytes(usize),
    /// The head began a field past the field limit.
    Fields,
}

/// What is known of the head being received on one connection, shared by the stream wrapper,
/// the service (which takes the cut) and the end of each answer (which starts the next head).
#[derive(Debug, Default)]
pub struct HeadState(Mutex<Scan>);

#[derive(Debug)]
struct Scan {
    /// Whether the bytes read now belong to a head (false from its empty line until the answer
    /// to it is out: the body's bytes are not scanned).
    counting: bool,
    /// Bytes of the head so far.
    bytes: usize,
    /// Whole lines of the head so far (the request line, then the fields).
    lines: usize,
    /// Bytes of the current line so far, `\r` left out.
    line_len: usize,
    /// Set when the head was ended early, until the service takes it.
    cut: Option<HeadCut>,
}

impl Default for Scan {
    fn default() -> Scan {
        Scan {
            counting: true,
            bytes: 0,
            lines: 0,
            line_len: 0,
            cut: None,
        }
    }
}

impl HeadState {
    fn scan(&self) -> std::sync::MutexGuard<'_, Scan> {
        // A panic elsewhere cannot leave the counters in a state worse than a stale count.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cut of the head hyper has just parsed, if it was ended early (taken once).
    pub fn take_cut(&self) -> Option<HeadCut> {
        self.scan().cut.take()
    }

    /// Every answer on the connection is out: the next bytes begin a new head.
    pub fn answer_sent(&self) {
        let mut s = self.scan();
        let cut = s.cut.take();
        *s = Scan {
            cut,
            ..Scan::default()
        };
    }
}

/// A stream whose request heads are held to serve's limits (see the module docs).
pub struct HeadLimit<IO> {
    inner: IO,
    state: Arc<HeadState>,
    /// The end of the head still to hand to hyper after a cut.
    pending: &'static [u8],
    /// A head was cut: nothing more is read from the client for hyper.
    ended: bool,
    /// After a cut, the deadline of the lingering close once shutdown has begun.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes discarded while lingering.
    discarded: usize,
}

impl<IO> HeadLimit<IO> {
    /// `inner` with its heads watched; `state` is shared with the connection's service.
    pub fn new(inner: IO, state: Arc<HeadState>) -> HeadLimit<IO> {
        HeadLimit {
            inner,
            state,
            pending: &[],
            ended: false,
            linger: None,
            discarded: 0,
        }
    }
}

/// Where, if anywhere, `chunk` (the next bytes of a head) takes the head over a limit: how many
/// of its bytes to keep, what to append to end the head, and why. Updates the counters.
fn cut_point(s: &mut Scan, chunk: &[u8]) -> Option<(usize, &'static [u8], HeadCut)> {
    let max_bytes = super::MAX_HEADER_BYTES;
    let max_fields = super::MAX_HEADER_FIELDS;
    for (i, &b) in chunk.iter().enumerate() {
        match b {
            b'\n' if s.line_len == 0 => {
                // The empty line ends the head (a blank line before the request line does not).
                if s.lines > 0 {
                    s.counting = false;
                    return None;
                }
            }
            b'\n' => {
                s.lines += 1;
                s.line_len = 0;
            }
            b'\r' => {}
            _ => {
                if s.line_len == 0 && s.lines > max_fields {
                    // The request line and `max_fields` fields are whole: this byte begins one
                    // more. The kept bytes end with a line end, so one more ends the head.
                    return Some((i, b"\r\n", HeadCut::Fields));
                }
                s.line_len += 1;
            }
        }
        s.bytes += 1;
        // A request line over the limit is hyper's (414): only fields are cut.
        if s.bytes > max_bytes && s.lines > 0 {
            let cut = HeadCut::Bytes(s.bytes);
            return Some(match chunk[..=i].iter().rposition(|&c| c == b'\n') {
                Some(j) => (j + 1, b"\r\n", cut),
                None => {
                    // The line began in bytes hyper already has: end it here, then the head.
                    let mut k = i + 1;
                    while k > 0 && chunk[k - 1] == b'\r' {
                        k -= 1;
                    }
                    (k, b"\r\n\r\n", cut)
                }
            });
        }
    }
    None
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeadLimit<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending[..n]);
            this.pending = &this.pending[n..];
            return Poll::Ready(Ok(()));
        }
        if this.ended {
            // The connection closes once serve's 431 is out; the client's further bytes are
            // not read.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let cut = {
            let mut s = this.state.scan();
            if !s.counting {
                return Poll::Ready(Ok(()));
            }
            let found = cut_point(&mut s, &buf.filled()[before..]);
            if let Some((_, _, why)) = found {
                s.cut = Some(why);
            }
            found
        };
        if let Some((keep, end, _)) = cut {
            buf.set_filled(before + keep);
            let n = end.len().min(buf.remaining());
            buf.put_slice(&end[..n]);
            this.pending = &end[n..];
            this.ended = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadLimit<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ended {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 8192];
        while this.discarded < LINGER_BYTES {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => this.discarded += buf.filled().len(),
                // The client is gone: nothing is left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        if this.discarded >= LINGER_BYTES {
            return Poll::Ready(Ok(()));
        }
        match this.linger.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> (Vec<u8>, Option<HeadCut>) {
        let mut s = Scan::default();
        let mut out = Vec::new();
        for chunk in chunks {
            if !s.counting {
                out.extend_from_slice(chunk);
                continue;
            }
            match cut_point(&mut s, chunk) {
                Some((keep, end, why)) => {
                    out.extend_from_slice(&chunk[..keep]);
                    out.extend_from_slice(end);
                    return (out, Some(why));
                }
                None => out.extend_from_slice(chunk),
            }
        }
        (out, None)
    }

    /// The header fields of a head that ends with its empty line.
    fn fields(head: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(head);
        let text = text
            .strip_suffix("\r\n\r\n")
            .expect("the head ends with its empty line");
        text.split("\r\n").skip(1).map(str::to_string).collect()
    }

    #[test]
    fn a_head_within_the_limits_passes_untouched_and_its_body_is_not_scanned() {
        let body = vec![b'f'; 200_000];
        let head = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n";
        let (out, cut) = feed(&[head, &body]);
        assert_eq!(cut, None);
        assert_eq!(out.len(), head.len() + body.len());
    }

    #[test]
    fn fifty_fields_of_8_kb_are_ended_where_they_cross_the_byte_limit() {
        let line = format!("X-Filler: {}\r\n", "f".repeat(8000));
        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for _ in 0..50 {
            head.extend_from_slice(line.as_bytes());
        }
        let chunks: Vec<&[u8]> = head.chunks(16_384).collect();
        let (out, cut) = feed(&chunks);
        assert!(matches!(cut, Some(HeadCut::Bytes(n)) if n > super::super::MAX_HEADER_BYTES));
        assert!(out.len() <= super::super::MAX_HEADER_BYTES + 1 + 4);
        // The chunk that crossed the limit began inside a field: that field is cut, the head
        // ended after it; every field before it is whole.
        let fields = fields(&out);
        assert_eq!(fields.len(), super::super::MAX_HEADER_BYTES / line.len() + 2);
        assert!(
            fields[1..fields.len() - 1]
                .iter()
                .all(|f| f.len() + 2 == line.len())
        );
        assert!(fields.last().unwrap().starts_with("X-Filler: f"));
    }

    #[test]
    fn a_chunk_that_crosses_the_byte_limit_after_a_line_end_cuts_at_that_line_end() {
        let line = format!("X-Filler: {}\r\n", "f".repeat(1000));
        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        while head.len() < 100_000 {
            head.extend_from_slice(line.as_bytes());
        }
        let (out, cut) = feed(&[&head]);
        assert!(matches!(cut, Some(HeadCut::Bytes(_))));
        let fields = fields(&out);
        assert!(
            fields[1..].iter().all(|f| f.len() + 2 == line.len()),
            "only whole fields"
        );
        assert!(out.len() <= super::super::MAX_HEADER_BYTES + 1 + 2);
    }

    #[test]
    fn one_field_over_the_byte_limit_is_cut_inside_its_value() {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
            "v".repeat(100_000)
        );
        let chunks: Vec<&[u8]> = head.as_bytes().chunks(16_384).collect();
        let (out, cut) = feed(&chunks);
        assert!(matches!(cut, Some(HeadCut::Bytes(_))));
        assert!(out.ends_with(b"v\r\n\r\n"), "the value is cut, the head ended");
        let fields = fields(&out);
        assert_eq!(fields.len(), 2);
        assert!(fields[1].starts_with("X-Big: vvv"));
    }

    #[test]
    fn a_field_past_the_field_limit_ends_the_head_before_it() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..300 {
            head.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let (out, cut) = feed(&[&head]);
        assert_eq!(cut, Some(HeadCut::Fields));
        assert!(out.ends_with(b"\r\n\r\n"));
        assert_eq!(fields(&out).len(), super::super::MAX_HEADER_FIELDS);
    }

    #[test]
    fn after_an_answer_the_next_head_is_scanned_afresh() {
        let state = HeadState::default();
        {
            let mut s = state.scan();
            cut_point(&mut s, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert!(!s.counting);
        }
        state.answer_sent();
        let s = state.scan();
        assert!(s.counting && s.bytes == 0 && s.lines == 0);
    }
}
