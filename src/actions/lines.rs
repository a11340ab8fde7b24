//! Splits a byte stream into lines of bounded length, whatever the child prints.

/// Longest line kept whole; the rest of a longer line is dropped with a marker.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Turns chunks of bytes into lines: invalid UTF-8 is replaced, `\r\n` is a newline, and a line
/// longer than `max` is cut with a marker saying how much was dropped.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    current: Vec<u8>,
    dropped: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter {
            max,
            current: Vec::new(),
            dropped: 0,
        }
    }

    /// Feeds bytes; calls `emit` for every line they complete.
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(String)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(pos) => {
                    self.take(&bytes[..pos]);
                    emit(self.finish_line());
                    bytes = &bytes[pos + 1..];
                }
                None => {
                    self.take(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// The last line, when the stream ended without a newline.
    pub fn finish(&mut self, emit: &mut dyn FnMut(String)) {
        if !self.current.is_empty() || self.dropped > 0 {
            emit(self.finish_line());
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = self.max.saturating_sub(self.current.len());
        let kept = room.min(bytes.len());
        self.current.extend_from_slice(&bytes[..kept]);
        self.dropped += bytes.len() - kept;
    }

    fn finish_line(&mut self) -> String {
        if self.current.last() == Some(&b'\r') {
            self.current.pop();
        }
        let mut line = String::from_utf8_lossy(&self.current).into_owned();
        if self.dropped > 0 {
            line.push_str(&format!(
                "{}{} more bytes]",
                crate::redact::CUT_MARKER,
                self.dropped
            ));
        }
        self.current.clear();
        self.dropped = 0;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn joins_chunks_splits_lines_and_keeps_the_tail() {
        assert_eq!(
            split(&[b"ab", b"c\r\nd", b"e\n", b"tail"], 100),
            vec!["abc", "de", "tail"]
        );
    }

    #[test]
    fn cuts_long_lines_with_a_marker_and_replaces_bad_utf8() {
        let long = vec![b'x'; 1_000_000];
        let out = split(&[&long, b"\nok\n", b"\xff\xfeh\n"], 10);
        assert_eq!(out[0], "xxxxxxxxxx … [line truncated: 999990 more bytes]");
        assert_eq!(out[1], "ok");
        assert_eq!(out[2], "\u{fffd}\u{fffd}h");
    }
}
