//! The step logs on S3: shipped beside the journal as they grow, never in its way, and pulled
//! by readers elsewhere.
//!
//! Only the logs the engine writes through the redactor are shipped (`logs/<step>/<n>.log`,
//! `check-<n>.log`, `rollback-<n>.log`): never what else a step leaves beside its log — a
//! copy's schema archive (`.dump`) and restore lists (`.list`), a failed shell step's
//! `$CUTOVER_OUTPUT` (`.outputs`, unredacted), a tunnel's files. A chunk S3 refuses is a
//! warning, not a failed event: the shipper tries again in the background (and once more, for
//! a while, when the command ends), and the log on S3 catches up.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Lease, Remote, S3Error};

/// The most one chunk carries (a log that grew while S3 refused chunks is sent in several).
const CHUNK_MAX: u64 = 8 << 20;

/// How long a command that ends keeps trying to ship the logs S3 refused.
const FINAL_GRACE: Duration = Duration::from_secs(15);

/// Whether `relative` (to the state directory) is a step log the engine writes through the
/// redactor: `logs/<step>/<n>.log`, `logs/<step>/check-<n>.log`, `logs/<step>/rollback-<n>.log`.
pub fn is_step_log(relative: &str) -> bool {
    let Some((step, file)) = relative
        .strip_prefix("logs/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    let Some(stem) = file.strip_suffix(".log") else {
        return false;
    };
    let number = stem
        .strip_prefix("check-")
        .or_else(|| stem.strip_prefix("rollback-"))
        .unwrap_or(stem);
    !step.is_empty()
        && !file.contains('/')
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

fn chunk_key(relative: &str, offset: u64) -> String {
    format!("{relative}/{offset:012}")
}

/// Every step log under `root/logs`, relative to `root`, with its length.
fn local_logs(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("logs")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let (Ok(meta), Ok(rel)) = (entry.metadata(), path.strip_prefix(root)) {
                let relative = rel.to_string_lossy().into_owned();
                if is_step_log(&relative) {
                    out.push((relative, meta.len()));
                }
            }
        }
    }
    out.sort();
    out
}

/// A chunk of a step log on S3: its offset in the log, its key (relative to the prefix), its
/// size.
type Chunk = (u64, String, u64);

/// The step logs' chunks under `dir` on S3, by file, in offset order.
fn chunks_on_s3(remote: &Remote, dir: &str) -> Result<BTreeMap<String, Vec<Chunk>>, S3Error> {
    let mut by_file: BTreeMap<String, Vec<Chunk>> = BTreeMap::new();
    let skip = remote.prefix.len();
    for listed in remote.list(dir)? {
        let relative = &listed.key[skip.min(listed.key.len())..];
        let Some((file, offset)) = relative.rsplit_once('/') else {
            continue;
        };
        let Ok(offset) = offset.parse::<u64>() else {
            continue;
        };
        if !is_step_log(file) {
            continue;
        }
        by_file.entry(file.to_string()).or_default().push((
            offset,
            relative.to_string(),
            listed.size,
        ));
    }
    for chunks in by_file.values_mut() {
        chunks.sort();
    }
    Ok(by_file)
}

/// Sends the step logs to S3 as they grow: each new stretch of a log file is an object
/// `logs/<step>/<file>/<offset>` (its first byte's offset), so a reader elsewhere appends the
/// chunks it lacks in order.
pub struct LogShipper {
    remote: Arc<Remote>,
    root: PathBuf,
    /// How much of each log S3 holds from its start: read from S3 at the first ship, so what
    /// an earlier command could not ship is shipped now.
    sent: Option<BTreeMap<String, u64>>,
    /// The driver's lease: a driver that lost it ships nothing more.
    lease: Option<Arc<Lease>>,
    /// Failed attempts since the last that went through.
    failing: u32,
    /// The last failure was S3 not answering (not worth waiting for at the end).
    silent: bool,
}

impl LogShipper {
    pub fn new(remote: Arc<Remote>, root: &Path, lease: Option<Arc<Lease>>) -> LogShipper {
        LogShipper {
            remote,
            root: root.to_path_buf(),
            sent: None,
            lease,
            failing: 0,
            silent: false,
        }
    }

    /// Ships what every step log gained since S3 last took a chunk of it; how many chunks.
    pub fn ship(&mut self) -> Result<usize, S3Error> {
        if self.lease.as_ref().is_some_and(|l| l.is_lost()) {
            return Ok(0);
        }
        if self.sent.is_none() {
            let mut shipped = BTreeMap::new();
            for (file, chunks) in chunks_on_s3(&self.remote, "logs/")? {
                let mut end = 0;
                for (offset, _, size) in chunks {
                    if offset > end {
                        break;
                    }
                    end = end.max(offset + size);
                }
                shipped.insert(file, end);
            }
            self.sent = Some(shipped);
        }
        let Some(sent) = self.sent.as_mut() else {
            return Ok(0);
        };
        let mut chunks = 0;
        for (relative, len) in local_logs(&self.root) {
            let mut from = sent.get(&relative).copied().unwrap_or(0);
            while len > from {
                let bytes = {
                    use std::io::{Read, Seek, SeekFrom};
                    let local = |e: std::io::Error| S3Error::Local(format!("{relative}: {e}"));
                    let mut file = std::fs::File::open(self.root.join(&relative)).map_err(local)?;
                    file.seek(SeekFrom::Start(from)).map_err(local)?;
                    let mut bytes = Vec::new();
                    file.take((len - from).min(CHUNK_MAX))
                        .read_to_end(&mut bytes)
                        .map_err(local)?;
                    bytes
                };
                if bytes.is_empty() {
                    break;
                }
                let shipped = bytes.len() as u64;
                self.remote.put(&chunk_key(&relative, from), bytes)?;
                from += shipped;
                sent.insert(relative.clone(), from);
                chunks += 1;
            }
        }
        Ok(chunks)
    }

    /// [`LogShipper::ship`], its failure a warning (the first of a run of them, and the
    /// recovery): true when S3 holds every step log as it is now.
    pub fn ship_reporting(&mut self) -> bool {
        match self.ship() {
            Ok(chunks) => {
                if self.failing > 0 {
                    tracing::warn!(
                        "the step logs reached S3 again ({chunks} chunk(s) caught up after {} failed attempt(s))",
                        self.failing
                    );
                }
                self.failing = 0;
                true
            }
            Err(e) => {
                self.silent = matches!(e, S3Error::Timeout { .. } | S3Error::Interrupted { .. });
                if self.failing == 0 {
                    tracing::warn!(
                        "step logs not shipped to S3 ({e}): the journal goes on; the logs follow once S3 takes them"
                    );
                } else {
                    tracing::debug!(error = %e, "step logs still not shipped to S3");
                }
                self.failing += 1;
                false
            }
        }
    }

    /// Before a journal event: the logs first, so a step never shows done elsewhere with its
    /// log short — unless S3 is refusing chunks, when the event does not wait for them.
    pub fn ship_before_event(&mut self) {
        if self.failing == 0 {
            self.ship_reporting();
        }
    }

    /// The last attempt failed: S3 lacks part of the logs.
    pub fn is_behind(&self) -> bool {
        self.failing > 0
    }

    fn gave_up(&self) -> bool {
        self.remote.interrupter.is_interrupted() || self.lease.as_ref().is_some_and(|l| l.is_lost())
    }
}

/// Ships the logs every `every` in the background while this lives (retrying what S3
/// refused), and once more when dropped (the attempt's last lines), for a while if S3 refuses.
pub struct LogShipping {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogShipping {
    pub fn start(shipper: Arc<Mutex<LogShipper>>, every: Duration) -> LogShipping {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cutover-s3-logs".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    let stopping = flag.load(Ordering::SeqCst);
                    if stopping || last.elapsed() >= every {
                        match shipper.lock() {
                            Ok(mut s) => {
                                s.ship_reporting();
                            }
                            Err(_) => return,
                        }
                        last = Instant::now();
                    }
                    if stopping {
                        finish(&shipper);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        LogShipping { stop, thread }
    }
}

/// The command ends: what S3 refused is tried again for a while, then left to the next
/// command that drives from this machine (it ships what S3 lacks), and said.
fn finish(shipper: &Mutex<LogShipper>) {
    let until = Instant::now() + FINAL_GRACE;
    loop {
        let Ok(s) = shipper.lock() else {
            return;
        };
        if !s.is_behind() || s.gave_up() {
            return;
        }
        if s.silent || Instant::now() >= until {
            tracing::warn!(
                "some step logs are not on S3 yet: the next command that drives from this machine ships them"
            );
            return;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(mut s) = shipper.lock() {
            s.ship_reporting();
        }
    }
}

impl Drop for LogShipping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Brings the local copies of the step logs under `dir` (`logs/` or `logs/<step>/`) up to the
/// chunks on S3: each file gets the chunks that start where it ends, in order.
pub fn pull_logs(remote: &Remote, root: &Path, dir: &str) -> Result<usize, S3Error> {
    let mut fetched = 0;
    for (file, chunks) in chunks_on_s3(remote, dir)? {
        let path = root.join(&file);
        let mut len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        for (offset, name, _) in chunks {
            if offset < len {
                continue;
            }
            if offset > len {
                break;
            }
            let Some(object) = remote.get(&name)? else {
                break;
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| S3Error::Local(format!("{}: {e}", parent.display())))?;
            }
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| S3Error::Local(format!("{}: {e}", path.display())))?;
            out.write_all(&object.bytes)
                .map_err(|e| S3Error::Local(format!("{}: {e}", path.display())))?;
            len += object.bytes.len() as u64;
            fetched += 1;
        }
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::is_step_log;

    #[test]
    fn only_the_step_logs_are_shipped() {
        for log in [
            "logs/db-copy/1.log",
            "logs/db-copy/12.log",
            "logs/db-copy/check-40.log",
            "logs/db-copy/rollback-3.log",
        ] {
            assert!(is_step_log(log), "{log}");
        }
        for other in [
            "logs/db-copy/1.outputs",
            "logs/db-copy/1.tunnel",
            "logs/db-copy/1.schema.dump",
            "logs/db-copy/1.schema.public.users.list",
            "logs/db-copy/1.schema.rest.list",
            "logs/rds-tunnel/1.session.log",
            "logs/db-copy/notes.log",
            "logs/db-copy/1.log/000000000000",
            "logs/1.log",
            "journal.jsonl",
            "logs//1.log",
        ] {
            assert!(!is_step_log(other), "{other}");
        }
    }
}
