//! What every action that starts child processes shares: process groups that are stopped as a
//! whole, and output read line by line.

use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::lines::LineSplitter;
use super::{Reporter, Stream};

/// How long a cancelled child gets to exit after SIGTERM before SIGKILL: an action stops
/// within 2 s of a cancel or a timeout (see the engine's `CANCEL_GRACE`).
pub const KILL_GRACE: Duration = Duration::from_millis(1500);

/// Sends `signal` to the process group led by `pgid` (a child started with `process_group(0)`).
pub fn signal_group(pgid: Option<u32>, signal: Signal) {
    if let Some(raw) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH (the group is already gone) is the expected case after a clean exit.
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// Stops a process group: SIGTERM, then SIGKILL after the grace period.
pub async fn stop_group(child: &mut tokio::process::Child) {
    let pgid = child.id();
    signal_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    signal_group(pgid, Signal::SIGKILL);
}

/// A child's output, one line at a time.
pub struct LineReader<R> {
    reader: Option<R>,
    splitter: LineSplitter,
    buf: Vec<u8>,
    ready: std::collections::VecDeque<String>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R) -> Self {
        LineReader {
            reader: Some(reader),
            splitter: LineSplitter::default(),
            buf: vec![0u8; 64 * 1024],
            ready: std::collections::VecDeque::new(),
        }
    }

    /// The next line; `None` at the end of the stream (or when it cannot be read).
    pub async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(line);
            }
            let reader = self.reader.as_mut()?;
            let ready = &mut self.ready;
            match reader.read(&mut self.buf).await {
                Ok(0) | Err(_) => {
                    self.reader = None;
                    self.splitter.finish(&mut |l| ready.push_back(l));
                }
                Ok(n) => self
                    .splitter
                    .push(&self.buf[..n], &mut |l| ready.push_back(l)),
            }
        }
    }
}

/// Streams `reader`'s lines into the step's log; a slow log slows the child, nothing piles up.
pub async fn pump(reader: Option<impl AsyncRead + Unpin>, stream: Stream, report: Reporter) {
    let Some(reader) = reader else {
        return;
    };
    let mut lines = LineReader::new(reader);
    while let Some(line) = lines.next_line().await {
        report.line(stream, line).await;
    }
}
