//! The journal's writer when its state is on S3: each line is first an object written only if
//! absent, by the holder of a live lease (see `lock`), then the head moves (only over the head
//! this driver last saw), then the line goes into the local mirror.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::mirror::{etags_path, event_name, pull, Head};
use super::{Condition, Lease, LogShipper, Put, Remote, RemoteLockInfo, S3Error};
use crate::journal::{hash_line, FileStore, JournalError, JournalStore};

pub struct S3Store {
    remote: Arc<Remote>,
    local: FileStore,
    journal: PathBuf,
    lease: Arc<Lease>,
    /// The head as this driver last read or wrote it.
    head_etag: Option<String>,
    /// The step logs, shipped before each event when S3 takes them (never in its way).
    logs: Option<Arc<Mutex<LogShipper>>>,
}

impl S3Store {
    /// The writer for the holder of `lease`: the mirror brought up to S3 first (what another
    /// machine wrote before this one took the lock).
    pub fn open(
        remote: Arc<Remote>,
        journal: &Path,
        lease: Arc<Lease>,
    ) -> Result<S3Store, JournalError> {
        let pulled = pull(&remote, journal)?;
        Ok(S3Store {
            remote,
            local: FileStore::new(journal),
            journal: journal.to_path_buf(),
            lease,
            head_etag: pulled.head_etag,
            logs: None,
        })
    }

    /// Ships `logs` before every event it writes (best effort: a failure is a warning).
    pub fn with_logs(mut self, logs: Arc<Mutex<LogShipper>>) -> S3Store {
        self.logs = Some(logs);
        self
    }

    fn holder(&self) -> String {
        self.remote
            .get("lock.json")
            .ok()
            .flatten()
            .and_then(|o| {
                let mut info = serde_json::from_slice::<RemoteLockInfo>(&o.bytes).ok()?;
                info.silent = o.age;
                Some(info.describe())
            })
            .unwrap_or_else(|| "another driver".to_string())
    }

    /// Someone else wrote where this driver meant to: it is not the driver any more.
    fn conflict(&self, seq: u64, what: String) -> JournalError {
        let detail = format!("{what}: {}", self.holder());
        self.lease.lose(format!(
            "another driver wrote to {} (event {seq}): this driver stops, and writes nothing more to the journal",
            self.remote.url()
        ));
        JournalError::Conflict { seq, detail }
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

impl JournalStore for S3Store {
    fn read_all(&self) -> Result<Vec<u8>, JournalError> {
        self.local.read_all()
    }

    fn append_line(&mut self, line: &[u8]) -> Result<(), JournalError> {
        let seq = serde_json::from_slice::<SeqOnly>(line)?.seq;
        let written = line.strip_suffix(b"\n").unwrap_or(line);
        let s3 = |e: S3Error| JournalError::Remote(e.to_string());
        self.lease
            .ensure()
            .map_err(|why| JournalError::Remote(format!("event {seq} was not written: {why}")))?;
        if let Some(logs) = &self.logs {
            if let Ok(mut shipper) = logs.lock() {
                shipper.ship_before_event();
            }
        }
        let name = event_name(seq);
        let etag = match self
            .remote
            .put_if_absent(&name, line.to_vec())
            .map_err(s3)?
        {
            Put::Written(etag) => etag,
            // Ours, its answer lost (the SDK's retry was refused): the same bytes are there.
            Put::Refused => match self.remote.get(&name).map_err(s3)? {
                Some(object) if object.bytes == line => object.etag,
                _ => {
                    return Err(self.conflict(
                        seq,
                        format!("{} holds event {seq} already", self.remote.url()),
                    ))
                }
            },
        };
        let head = serde_json::to_vec(&Head {
            seq,
            hash: hash_line(written),
        })?;
        let condition = match &self.head_etag {
            Some(etag) => Condition::Match(etag.clone()),
            None => Condition::Absent,
        };
        let head_etag = match self
            .remote
            .put_conditional("head.json", head.clone(), condition, None)
            .map_err(s3)?
        {
            Put::Written(etag) => etag,
            Put::Refused => match self.remote.get("head.json").map_err(s3)? {
                Some(object) if object.bytes == head => object.etag,
                _ => {
                    return Err(self.conflict(
                        seq,
                        format!(
                            "the head of {} moved under this driver after it wrote event {seq}",
                            self.remote.url()
                        ),
                    ))
                }
            },
        };
        self.head_etag = Some(head_etag);
        self.local.append_line(line)?;
        let mut etags = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(etags_path(&self.journal))
            .map_err(|e| JournalError::Io {
                action: "write",
                path: etags_path(&self.journal),
                source: e,
            })?;
        writeln!(etags, "{etag}").map_err(|e| JournalError::Io {
            action: "write",
            path: etags_path(&self.journal),
            source: e,
        })?;
        Ok(())
    }

    fn set_aside_tail(&mut self, keep: u64) -> Result<String, JournalError> {
        self.local.set_aside_tail(keep)
    }

    fn location(&self) -> String {
        format!(
            "{}journal/ (mirrored in {})",
            self.remote.url(),
            self.journal.display()
        )
    }
}
