//! Waiting for the world to change, within a bound that leaves room for a loaded machine: the
//! bound fails the test, it is never what the test asserts.

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `done` until it holds; fails the test after `limit`, saying what it waited for.
#[track_caller]
pub fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the file at `path` holds `needle` (it may not exist yet).
#[track_caller]
pub fn file_contains(path: &Path, needle: &str, limit: Duration) {
    until(
        &format!("{} to contain {needle:?}", path.display()),
        limit,
        || {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains(needle)
        },
    );
}

/// Whether the process `pid` runs (a zombie, ended but not yet reaped, does not).
pub fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Waits until the process `pid` is gone; whether it is, after at most `limit` (the caller
/// asserts it, with its own words).
pub fn gone(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    while pid_alive(pid) && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    !pid_alive(pid)
}

/// The number a pid file holds (written by a step: `echo $$ > child.pid`).
#[track_caller]
pub fn pid_in(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}: {text:?}", path.display()))
}
