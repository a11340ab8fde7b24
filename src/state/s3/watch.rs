//! Following S3 into a mirror: what `cutover watch` (and the UI that only watches) reads while
//! another machine drives.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{holder, pull, pull_logs, Remote, RemoteLockInfo};

/// In a followed mirror: who holds the S3 lock, as last seen (`{"alive": bool, "holder": …}`).
pub const DRIVER_FILE: &str = "s3-driver.json";

/// Whether a followed mirror's S3 lock holder was alive when last seen; `None` for a mirror
/// nobody follows (or a local state).
pub fn followed_driver(root: &Path) -> Option<(bool, Option<String>)> {
    let text = std::fs::read_to_string(root.join(DRIVER_FILE)).ok()?;
    let seen: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        seen["alive"].as_bool().unwrap_or(false),
        seen["holder"].as_str().map(str::to_string),
    ))
}

/// Keeps a mirror following S3 (the journal and the logs) every `every` while this lives:
/// what `cutover watch` reads on another machine.
pub struct Following {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Following {
    /// Follows S3 into the mirror at `root`: once now, then every `every` in the background.
    pub fn start(remote: Arc<Remote>, root: &Path, every: Duration) -> Following {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let root: PathBuf = root.to_path_buf();
        follow_once(&remote, &root);
        let thread = std::thread::Builder::new()
            .name("cutover-s3-follow".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    let until = std::time::Instant::now() + every;
                    while std::time::Instant::now() < until && !flag.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    follow_once(&remote, &root);
                }
            })
            .ok();
        Following { stop, thread }
    }
}

/// The journal, the logs and the lock's holder, brought into the mirror once — except while
/// a driver on this machine holds the mirror's lock: the mirror is that driver's to write.
fn follow_once(remote: &Remote, root: &Path) {
    let workspace = crate::workspace::Workspace {
        root: root.to_path_buf(),
    };
    let local_driver = crate::journal::lock::read(&workspace.lock_path())
        .ok()
        .flatten()
        .is_some();
    if !local_driver {
        // The logs first: a step's lines are shipped before the journal says it ended, so the
        // mirror never shows a step done with its log still short.
        if let Err(e) = pull_logs(remote, root, "logs/") {
            tracing::warn!(error = %e, "the S3 logs could not be followed");
        }
        if let Err(e) = pull(remote, &root.join("journal.jsonl")) {
            tracing::warn!(error = %e, "the S3 journal could not be followed");
        }
    }
    if let Ok(holder) = holder(remote) {
        let seen = serde_json::json!({
            "alive": holder.as_ref().is_some_and(|h| !h.is_stale()),
            "holder": holder.as_ref().map(RemoteLockInfo::describe),
        });
        let _ = std::fs::write(root.join(DRIVER_FILE), seen.to_string());
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
