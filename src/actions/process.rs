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

/// The driver lock's descriptor, which the commands a step runs are given (-1: none). A
/// command a killed driver started (an orphaned `pg_restore`, `terraform apply`) keeps the
/// lock until it exits, so nobody drives while it still writes; nothing else cutover starts
/// (the tunnel's guard and plugin, `heroku config`, version probes) gets it, so none of them
/// holds the lock after cutover exits.
static DRIVER_LOCK_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Names the descriptor of the driver lock this process holds (the front end does, once it
/// has the lock); it stays close-on-exec except for step commands.
pub fn set_driver_lock_fd(fd: Option<std::os::fd::RawFd>) {
    DRIVER_LOCK_FD.store(fd.unwrap_or(-1), std::sync::atomic::Ordering::SeqCst);
}

/// Hands the driver lock to a step command: its descriptor survives this command's exec.
pub fn hand_driver_lock(command: &mut tokio::process::Command) {
    let fd = DRIVER_LOCK_FD.load(std::sync::atomic::Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    // SAFETY: between fork and exec only fcntl(2) runs, which is async-signal-safe, on a
    // descriptor this process holds open for its whole life; nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            use std::os::fd::BorrowedFd;
            let fd = BorrowedFd::borrow_raw(fd);
            nix::fcntl::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map(|_| ())
            .map_err(std::io::Error::from)
        });
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::lock;

    /// A step command keeps the driver lock after the driver lets go (it may still write); a
    /// helper cutover started for itself never holds it.
    #[tokio::test]
    async fn only_step_commands_are_handed_the_driver_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let guard = lock::acquire(&path, "ana@laptop", "cutover run").unwrap();
        set_driver_lock_fd(Some(guard.raw_fd()));
        let sleeper = |handed: bool| {
            let mut command = tokio::process::Command::new("sleep");
            command.arg("30").kill_on_drop(true);
            if handed {
                hand_driver_lock(&mut command);
            }
            command.spawn().unwrap()
        };
        let mut helper = sleeper(false);
        let mut step = sleeper(true);
        set_driver_lock_fd(None);
        // The driver dies: its descriptor closes without an unlock (as when it is killed).
        let fd = guard.raw_fd();
        std::mem::forget(guard);
        nix::unistd::close(fd).unwrap();
        assert!(
            matches!(
                lock::acquire(&path, "bo@desk", "cutover run"),
                Err(lock::LockError::Held(_) | lock::LockError::HeldByLeftover(_))
            ),
            "the step command still holds the lock"
        );
        step.kill().await.unwrap();
        let next = lock::acquire(&path, "bo@desk", "cutover run");
        assert!(
            next.is_ok(),
            "the helper, still running, does not hold it: {next:?}"
        );
        assert!(
            helper.try_wait().unwrap().is_none(),
            "the helper still runs"
        );
        helper.kill().await.unwrap();
    }
}
