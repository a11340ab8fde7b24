//! The journal and the lock on S3, with the guarantees of the local ones.
//!
//! Layout under `s3://BUCKET/PREFIX`:
//! - `journal/0000000001.jsonl` …: one object per journal line (the same bytes, hash-chained),
//!   written with `If-None-Match: *` — two writers can never both write event N;
//! - `head.json`: the last sequence number and hash written, the external anchor a cut-off
//!   tail is detected against;
//! - `lock.json`: the driver's lock, written with `If-None-Match: *`, its `heartbeat` refreshed
//!   with `If-Match` on its ETag, removed with `If-Match` (never someone else's);
//! - `probe/…`: written twice at first use: a store that lets the second write through ignores
//!   conditional writes, and is refused.
//!
//! The local mirror (a state directory of its own) is a cache: reads list the keys, fetch only
//! what is new (or changed: ETags are kept beside the mirror), and rewrite the mirror from S3
//! when it disagrees. Every other reader (status, audit, the UI) reads the mirror as it reads a
//! local journal, and verifies the same hash chain.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::journal::{hash_line, FileStore, JournalError, JournalStore};
use crate::runbook::AwsSettings;

/// How long a lock's heartbeat may be silent before the lock is reported stale (and `cutover
/// unlock ID` may remove it). `CUTOVER_S3_LEASE_SECS` overrides it (tests, slow links).
pub const LEASE: Duration = Duration::from_secs(60);

/// Objects fetched at once when the mirror catches up.
const FETCH_AT_ONCE: usize = 32;

pub fn lease() -> Duration {
    std::env::var("CUTOVER_S3_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(LEASE, Duration::from_secs)
}

/// What went wrong with the S3 state, in words.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("the state bucket {bucket} does not exist (or is not visible to these credentials)")]
    NoBucket { bucket: String },
    #[error("access denied: these credentials may not {action} s3://{bucket}/{key}")]
    AccessDenied {
        action: &'static str,
        bucket: String,
        key: String,
    },
    #[error("s3://{bucket}/{prefix} ignores conditional writes (a second `If-None-Match: *` write of the same key succeeded): two drivers could both write event N there, so cutover will not keep its state in it")]
    NoConditionalWrites { bucket: String, prefix: String },
    #[error("{action} s3://{bucket}/{key}: {detail}")]
    Call {
        action: &'static str,
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("cannot start the S3 client: {0}")]
    Runtime(String),
    #[error("{0}")]
    Local(String),
}

/// The lock as `lock.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLockInfo {
    pub id: String,
    /// `user@host`.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub started: String,
    /// Refreshed while the holder drives.
    pub heartbeat: String,
}

impl RemoteLockInfo {
    /// How long ago the heartbeat was written.
    pub fn silent_for(&self, now: SystemTime) -> Duration {
        crate::journal::parse_time(&self.heartbeat)
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    }

    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.silent_for(now) > lease()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, `{}`, since {}, last heartbeat {} ago, lock id {})",
            self.holder,
            self.pid,
            self.host,
            self.command,
            self.started,
            crate::window::short(self.silent_for(SystemTime::now())),
            self.id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteLockError {
    #[error("another driver holds the S3 lock: {}", .0.describe())]
    Held(Box<RemoteLockInfo>),
    #[error("the S3 lock is stale: {} — its heartbeat is older than the {}s lease (the driver died or lost its network); once you know it is gone: cutover unlock {}", .0.describe(), lease().as_secs(), .0.id)]
    Stale(Box<RemoteLockInfo>),
    #[error("the S3 lock is held and alive: {} — it is not removed", .0.describe())]
    Alive(Box<RemoteLockInfo>),
    #[error("the lock id is {actual}, not {given}; nothing was removed")]
    WrongId { given: String, actual: String },
    #[error("nobody holds the S3 lock")]
    NotHeld,
    #[error("the S3 lock changed while it was being removed (someone took it over): nothing was removed")]
    Changed,
    #[error(transparent)]
    S3(#[from] S3Error),
}

/// A client of one S3 prefix, usable from synchronous code and from inside another tokio
/// runtime (its calls run on a runtime of its own).
pub struct Remote {
    pub bucket: String,
    pub prefix: String,
    client: aws_sdk_s3::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A runtime dropped inside another runtime's task must not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An object as read: its bytes and ETag.
struct Object {
    bytes: Vec<u8>,
    etag: String,
}

fn code_of<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<String> {
    match e {
        SdkError::ServiceError(s) => s.err().code().map(str::to_string),
        _ => None,
    }
}

fn status_of<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
        _ => None,
    }
}

impl Remote {
    /// The client for `s3://bucket/prefix`, with the same AWS settings as the steps (an
    /// endpoint override makes path-style requests, as local servers want). Checks the bucket.
    pub fn connect(bucket: &str, prefix: &str, aws: &AwsSettings) -> Result<Remote, S3Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cutover-s3")
            .enable_all()
            .build()
            .map_err(|e| S3Error::Runtime(e.to_string()))?;
        let settings = aws.clone();
        let config = runtime.block_on(async move {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(region) = &settings.region {
                loader = loader.region(aws_config::Region::new(region.clone()));
            }
            if let Some(profile) = &settings.profile {
                loader = loader.profile_name(profile);
            }
            if let Some(url) = &settings.endpoint_url {
                loader = loader.endpoint_url(url);
            }
            loader.load().await
        });
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(aws.endpoint_url.is_some())
            .build();
        let remote = Remote {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            client: aws_sdk_s3::Client::from_conf(s3_config),
            runtime: Some(runtime),
        };
        remote.check_bucket()?;
        Ok(remote)
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Runs a future on this client's runtime and waits for it (from any thread).
    fn call<F, T>(&self, future: F) -> Result<T, S3Error>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| S3Error::Runtime("stopped".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| S3Error::Runtime("the S3 call was dropped".into()))
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail<E, R>(&self, action: &'static str, key: &str, e: &SdkError<E, R>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        tracing::debug!(error = %DisplayErrorContext(e), "S3 call failed");
        match code_of(e).as_deref() {
            Some("NoSuchBucket") => S3Error::NoBucket {
                bucket: self.bucket.clone(),
            },
            Some("AccessDenied") | Some("Forbidden") => S3Error::AccessDenied {
                action,
                bucket: self.bucket.clone(),
                key: key.to_string(),
            },
            _ => S3Error::Call {
                action,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                detail: crate::actions::aws::explain(action, e)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            },
        }
    }

    fn check_bucket(&self) -> Result<(), S3Error> {
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        match self.call(async move { client.head_bucket().bucket(bucket).send().await })? {
            Ok(_) => Ok(()),
            Err(e) => match status_of(&e) {
                Some(404) => Err(S3Error::NoBucket {
                    bucket: self.bucket.clone(),
                }),
                Some(403) => Err(S3Error::AccessDenied {
                    action: "s3:ListBucket (HeadBucket)",
                    bucket: self.bucket.clone(),
                    key: String::new(),
                }),
                _ => Err(self.fail("s3:ListBucket (HeadBucket)", "", &e)),
            },
        }
    }

    fn get(&self, name: &str) -> Result<Option<Object>, S3Error> {
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        let got = self.call(async move {
            match client.get_object().bucket(bucket).key(k).send().await {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    match out.body.collect().await {
                        Ok(data) => Ok(Ok((data.into_bytes().to_vec(), etag))),
                        Err(e) => Ok(Err(e.to_string())),
                    }
                }
                Err(e) => Err(e),
            }
        })?;
        match got {
            Ok(Ok((bytes, etag))) => Ok(Some(Object { bytes, etag })),
            Ok(Err(e)) => Err(S3Error::Call {
                action: "s3:GetObject",
                bucket: self.bucket.clone(),
                key,
                detail: e,
            }),
            Err(e) if code_of(&e).as_deref() == Some("NoSuchKey") || status_of(&e) == Some(404) => {
                Ok(None)
            }
            Err(e) => Err(self.fail("s3:GetObject", &key, &e)),
        }
    }

    /// Writes `bytes` at `name` only if nothing is there: `None` when something was.
    fn put_if_absent(&self, name: &str, bytes: Vec<u8>) -> Result<Option<String>, S3Error> {
        self.put_conditional(name, bytes, Condition::Absent)
    }

    /// Writes `bytes` at `name` only if it still has `etag`: `None` when it changed.
    fn put_if_match(
        &self,
        name: &str,
        bytes: Vec<u8>,
        etag: &str,
    ) -> Result<Option<String>, S3Error> {
        self.put_conditional(name, bytes, Condition::Match(etag.to_string()))
    }

    fn put(&self, name: &str, bytes: Vec<u8>) -> Result<String, S3Error> {
        self.put_conditional(name, bytes, Condition::None)?
            .ok_or_else(|| S3Error::Local("an unconditional write was refused".into()))
    }

    fn put_conditional(
        &self,
        name: &str,
        bytes: Vec<u8>,
        condition: Condition,
    ) -> Result<Option<String>, S3Error> {
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        let put = self.call(async move {
            let mut request = client
                .put_object()
                .bucket(bucket)
                .key(k)
                .body(ByteStream::from(bytes));
            match condition {
                Condition::Absent => request = request.if_none_match("*"),
                Condition::Match(etag) => request = request.if_match(etag),
                Condition::None => {}
            }
            request.send().await
        })?;
        match put {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            Err(e)
                if matches!(status_of(&e), Some(412) | Some(409))
                    || matches!(
                        code_of(&e).as_deref(),
                        Some("PreconditionFailed") | Some("ConditionalRequestConflict")
                    ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("s3:PutObject", &key, &e)),
        }
    }

    /// Deletes `name` only if it still has `etag`: false when it changed (or is gone).
    fn delete_if_match(&self, name: &str, etag: &str) -> Result<bool, S3Error> {
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k, etag) = (self.bucket.clone(), key.clone(), etag.to_string());
        let deleted = self.call(async move {
            client
                .delete_object()
                .bucket(bucket)
                .key(k)
                .if_match(etag)
                .send()
                .await
        })?;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if matches!(status_of(&e), Some(412) | Some(404)) => Ok(false),
            Err(e) => Err(self.fail("s3:DeleteObject", &key, &e)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), S3Error> {
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        self.call(async move { client.delete_object().bucket(bucket).key(k).send().await })?
            .map(|_| ())
            .map_err(|e| self.fail("s3:DeleteObject", &key, &e))
    }

    /// Every key under `PREFIX/dir` with its ETag, in key order.
    fn list(&self, dir: &str) -> Result<Vec<(String, String)>, S3Error> {
        self.list_after(dir, None)
    }

    /// The keys under `PREFIX/dir` after `after` (a name under the prefix), with their ETags.
    fn list_after(&self, dir: &str, after: Option<&str>) -> Result<Vec<(String, String)>, S3Error> {
        let key = self.key(dir);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        let after = after.map(|a| self.key(a));
        let listed = self.call(async move {
            let mut out = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(k)
                .set_start_after(after)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page?;
                for o in page.contents() {
                    out.push((
                        o.key().unwrap_or_default().to_string(),
                        o.e_tag().unwrap_or_default().to_string(),
                    ));
                }
            }
            Ok::<_, SdkError<_, _>>(out)
        })?;
        let mut listed = listed.map_err(|e| self.fail("s3:ListBucket", &key, &e))?;
        listed.sort();
        Ok(listed)
    }

    /// At first use of a prefix (remembered in `marker`): the same probe key written twice with
    /// `If-None-Match: *`; the second must be refused, else the store is refused.
    pub fn check_conditional_writes(&self, marker: &Path) -> Result<(), S3Error> {
        if marker.exists() {
            return Ok(());
        }
        let name = format!(
            "probe/{}",
            crate::journal::lock::new_id(&crate::actor::current())
        );
        let first = self.put_if_absent(&name, b"probe".to_vec())?;
        let second = self.put_if_absent(&name, b"probe".to_vec())?;
        self.delete(&name)?;
        match (first, second) {
            (Some(_), None) => {
                std::fs::write(marker, self.url())
                    .map_err(|e| S3Error::Local(format!("{}: {e}", marker.display())))?;
                Ok(())
            }
            _ => Err(S3Error::NoConditionalWrites {
                bucket: self.bucket.clone(),
                prefix: self.prefix.clone(),
            }),
        }
    }
}

enum Condition {
    Absent,
    Match(String),
    None,
}

fn event_name(seq: u64) -> String {
    format!("journal/{seq:010}.jsonl")
}

/// `head.json`: the last event written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// How the mirror caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub events: u64,
    /// Objects fetched this time (the rest came from the mirror).
    pub fetched: u64,
}

fn broken(line: u64, reason: String) -> JournalError {
    JournalError::Broken { line, reason }
}

/// The ETags of the mirror's lines, one per line, beside it.
fn etags_path(journal: &Path) -> PathBuf {
    journal.with_extension("etags")
}

/// Brings the local mirror at `journal` up to the S3 journal: lists the events (a missing one
/// is a damaged journal, named), checks the head anchor (a cut-off tail is named), fetches what
/// the mirror lacks or holds differently, and writes the mirror.
pub fn pull(remote: &Remote, journal: &Path) -> Result<Pulled, JournalError> {
    pull_checked(remote, journal, Reading::New)
}

/// How much of the S3 journal a read checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Only what follows the mirror (and the head): the cheap read of every command.
    New,
    /// Every key and its ETag against the mirror (`audit verify`): a deleted or replaced
    /// event anywhere is named.
    Full,
}

/// [`pull`], checking as much as `reading` says.
pub fn pull_checked(
    remote: &Remote,
    journal: &Path,
    reading: Reading,
) -> Result<Pulled, JournalError> {
    let s3 = |e: S3Error| broken(0, e.to_string());
    // The mirror's whole lines and their ETags.
    let cached = std::fs::read(journal).unwrap_or_default();
    let cached_etags = std::fs::read_to_string(etags_path(journal)).unwrap_or_default();
    let mut lines: Vec<Vec<u8>> = cached
        .split_inclusive(|b| *b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .map(<[u8]>::to_vec)
        .collect();
    let mut etags: Vec<String> = cached_etags.lines().map(str::to_string).collect();
    let trusted = match reading {
        Reading::New => lines.len().min(etags.len()),
        Reading::Full => 0,
    };
    let mut listed: Vec<(String, String)> = (1..=trusted as u64)
        .zip(&etags)
        .map(|(seq, etag)| (remote.key(&event_name(seq)), etag.clone()))
        .collect();
    let after = (trusted > 0).then(|| event_name(trusted as u64));
    listed.extend(
        remote
            .list_after("journal/", after.as_deref())
            .map_err(s3)?,
    );
    let mut keys = Vec::with_capacity(listed.len());
    for (i, (key, etag)) in listed.iter().enumerate() {
        let expected = i as u64 + 1;
        let seq = key
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if seq != Some(expected) {
            return Err(broken(
                expected,
                format!(
                    "event {expected} is missing from {}journal/ (deleted, or never written; found {key} next)",
                    remote.url()
                ),
            ));
        }
        keys.push((expected, etag.clone()));
    }
    let last = keys.len() as u64;
    let head: Option<Head> = match remote.get("head.json").map_err(s3)? {
        Some(o) => serde_json::from_slice(&o.bytes).ok(),
        None => None,
    };
    // The mirror trusted for more than S3's head says: it is not S3's (a prefix emptied and
    // begun again, a mirror of another journal). Everything is read again.
    if reading == Reading::New
        && trusted > 0
        && head.as_ref().is_none_or(|h| h.seq < trusted as u64)
    {
        return pull_checked(remote, journal, Reading::Full);
    }
    if let Some(head) = &head {
        if head.seq > last {
            return Err(broken(
                last + 1,
                format!(
                    "the journal on S3 ends at event {last}, but its head says event {} was written: events {}–{} were cut off",
                    head.seq,
                    last + 1,
                    head.seq
                ),
            ));
        }
    } else if last > 0 {
        return Err(broken(
            1,
            format!("{} has events but no head.json: it was not written by cutover, or its head was deleted", remote.url()),
        ));
    }

    // The mirror's lines whose ETags still match S3's, from the first.
    let keep = lines
        .iter()
        .zip(&etags)
        .zip(&keys)
        .take_while(|((_, cached), (_, listed))| *cached == listed)
        .count();
    let rewrite = keep < lines.len();
    lines.truncate(keep);
    etags.truncate(keep);
    let missing: Vec<u64> = keys[keep..].iter().map(|(seq, _)| *seq).collect();
    let fetched = fetch(remote, &missing).map_err(s3)?;
    for (seq, object) in missing.iter().zip(fetched) {
        let object = object.ok_or_else(|| {
            broken(
                *seq,
                format!(
                    "event {seq} disappeared from {} while it was read",
                    remote.url()
                ),
            )
        })?;
        lines.push(object.bytes);
        etags.push(object.etag);
    }
    if let (Some(head), Some(line)) = (&head, lines.last()) {
        if head.seq == last {
            let written = line.strip_suffix(b"\n").unwrap_or(line);
            if hash_line(written) != head.hash {
                return Err(broken(
                    last,
                    format!(
                        "event {last} on S3 is not the one its head.json anchors (hash differs): it was replaced"
                    ),
                ));
            }
        }
    }
    write_mirror(
        journal,
        &lines,
        &etags,
        rewrite || missing.len() as u64 == last,
    )?;
    Ok(Pulled {
        events: last,
        fetched: missing.len() as u64,
    })
}

/// Fetches the events `seqs`, many at once, in order.
fn fetch(remote: &Remote, seqs: &[u64]) -> Result<Vec<Option<Object>>, S3Error> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let client = remote.client.clone();
    let bucket = remote.bucket.clone();
    let keys: Vec<String> = seqs.iter().map(|s| remote.key(&event_name(*s))).collect();
    let got = remote.call(async move {
        futures_util::stream::iter(keys.into_iter().map(|key| {
            let client = client.clone();
            let bucket = bucket.clone();
            async move {
                let out = client.get_object().bucket(bucket).key(&key).send().await;
                match out {
                    Ok(out) => {
                        let etag = out.e_tag().unwrap_or_default().to_string();
                        let bytes = out
                            .body
                            .collect()
                            .await
                            .map(|d| d.into_bytes().to_vec())
                            .map_err(|e| (key.clone(), e.to_string()))?;
                        Ok(Some((bytes, etag)))
                    }
                    Err(e) if matches!(&e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 404) => {
                        Ok(None)
                    }
                    Err(e) => Err((key, DisplayErrorContext(&e).to_string())),
                }
            }
        }))
        .buffered(FETCH_AT_ONCE)
        .collect::<Vec<_>>()
        .await
    })?;
    got.into_iter()
        .map(|r| match r {
            Ok(o) => Ok(o.map(|(bytes, etag)| Object { bytes, etag })),
            Err((key, detail)) => Err(S3Error::Call {
                action: "s3:GetObject",
                bucket: remote.bucket.clone(),
                key,
                detail,
            }),
        })
        .collect()
}

fn write_mirror(
    journal: &Path,
    lines: &[Vec<u8>],
    etags: &[String],
    rewrite: bool,
) -> Result<(), JournalError> {
    let io = |action: &'static str, e: std::io::Error| JournalError::Io {
        action,
        path: journal.to_path_buf(),
        source: e,
    };
    let current = std::fs::metadata(journal).map(|m| m.len()).unwrap_or(0);
    let total: u64 = lines.iter().map(|l| l.len() as u64).sum();
    if !rewrite && current == total {
        return Ok(());
    }
    // Written aside, then renamed: a reader sees the old mirror or the new one.
    let aside = journal.with_extension("jsonl.pulling");
    let mut file = std::fs::File::create(&aside).map_err(|e| io("write", e))?;
    for line in lines {
        file.write_all(line).map_err(|e| io("write", e))?;
    }
    file.sync_data().map_err(|e| io("sync", e))?;
    std::fs::write(etags_path(journal), etags.join("\n") + "\n").map_err(|e| io("write", e))?;
    std::fs::rename(&aside, journal).map_err(|e| io("replace", e))?;
    Ok(())
}

/// The journal's store when its state is on S3: each line is first an object written only if
/// absent (then the head moves), then a line of the local mirror.
pub struct S3Store {
    remote: Arc<Remote>,
    local: FileStore,
    journal: PathBuf,
    /// The step logs, shipped before each event: what the event ends is on S3 before it.
    logs: Option<Arc<Mutex<LogShipper>>>,
}

impl S3Store {
    pub fn new(remote: Arc<Remote>, journal: &Path) -> S3Store {
        S3Store {
            remote,
            local: FileStore::new(journal),
            journal: journal.to_path_buf(),
            logs: None,
        }
    }

    /// Ships `logs` before every event it writes.
    pub fn with_logs(mut self, logs: Arc<Mutex<LogShipper>>) -> S3Store {
        self.logs = Some(logs);
        self
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
        if let Some(logs) = &self.logs {
            if let Ok(mut shipper) = logs.lock() {
                shipper.ship().map_err(s3)?;
            }
        }
        let etag = match self
            .remote
            .put_if_absent(&event_name(seq), line.to_vec())
            .map_err(s3)?
        {
            Some(etag) => etag,
            None => {
                let holder = self
                    .remote
                    .get("lock.json")
                    .ok()
                    .flatten()
                    .and_then(|o| serde_json::from_slice::<RemoteLockInfo>(&o.bytes).ok())
                    .map_or_else(|| "another driver".to_string(), |i| i.describe());
                return Err(JournalError::Conflict {
                    seq,
                    detail: format!("{} holds event {seq} already: {holder}", self.remote.url()),
                });
            }
        };
        let head = serde_json::to_vec(&Head {
            seq,
            hash: hash_line(written),
        })?;
        self.remote.put("head.json", head).map_err(s3)?;
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

/// Uploads a local journal to an empty prefix: its chain verified first, each line an event
/// object written only if absent, then the head. Refuses a prefix that already has events.
pub fn push(remote: &Remote, bytes: &[u8]) -> Result<u64, String> {
    let loaded = crate::journal::load(bytes);
    if let crate::journal::Integrity::Broken { line, reason } = &loaded.integrity {
        return Err(format!(
            "the local journal is damaged at line {line}: {reason} — nothing was uploaded"
        ));
    }
    let existing = remote.list("journal/").map_err(|e| e.to_string())?;
    if !existing.is_empty() {
        return Err(format!(
            "{} already holds a journal ({} events): state push only fills an empty prefix",
            remote.url(),
            existing.len()
        ));
    }
    let mut last: Option<(u64, String)> = None;
    let valid = &bytes[..loaded.valid_len as usize];
    for (i, line) in valid.split_inclusive(|b| *b == b'\n').enumerate() {
        let seq = i as u64 + 1;
        if remote
            .put_if_absent(&event_name(seq), line.to_vec())
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!(
                "event {seq} appeared on {} while pushing: another push or driver is at work",
                remote.url()
            ));
        }
        last = Some((seq, hash_line(line.strip_suffix(b"\n").unwrap_or(line))));
    }
    if let Some((seq, hash)) = last {
        let head = serde_json::to_vec(&Head { seq, hash }).map_err(|e| e.to_string())?;
        remote.put("head.json", head).map_err(|e| e.to_string())?;
    }
    Ok(loaded.state.lines)
}

/// Held while this process drives; its heartbeat refreshed in the background; removed (only
/// if still ours) when dropped.
pub struct RemoteLock {
    remote: Arc<Remote>,
    info: Arc<Mutex<RemoteLockInfo>>,
    etag: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl RemoteLock {
    pub fn info(&self) -> RemoteLockInfo {
        self.info
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(beat) = self.beat.take() {
            let _ = beat.join();
        }
        let etag = self.etag.lock().map(|e| e.clone()).unwrap_or_default();
        if let Err(e) = self.remote.delete_if_match("lock.json", &etag) {
            tracing::warn!(error = %e, "the S3 lock was not released");
        }
    }
}

/// Takes the S3 lock, or says who holds it (and whether that holder is stale).
pub fn acquire(
    remote: Arc<Remote>,
    holder: &str,
    command: &str,
) -> Result<RemoteLock, RemoteLockError> {
    let now = lock_now();
    let info = RemoteLockInfo {
        id: crate::journal::lock::new_id(holder),
        holder: holder.to_string(),
        host: crate::actor::hostname(),
        pid: std::process::id(),
        command: command.to_string(),
        started: now.clone(),
        heartbeat: now,
    };
    let body = serde_json::to_vec_pretty(&info).map_err(|e| S3Error::Local(e.to_string()))?;
    // Refused: who holds it. Released between the write and the read: try again (a few times).
    let mut etag = None;
    for _ in 0..3 {
        if let Some(written) = remote.put_if_absent("lock.json", body.clone())? {
            etag = Some(written);
            break;
        }
        match read_lock(&remote)? {
            Some((held, _)) if held.is_stale(SystemTime::now()) => {
                return Err(RemoteLockError::Stale(Box::new(held)))
            }
            Some((held, _)) => return Err(RemoteLockError::Held(Box::new(held))),
            None => continue,
        }
    }
    let Some(etag) = etag else {
        return Err(RemoteLockError::NotHeld);
    };
    let info = Arc::new(Mutex::new(info));
    let etag = Arc::new(Mutex::new(etag));
    let stop = Arc::new(AtomicBool::new(false));
    let beat = {
        let (remote, info, etag, stop) = (remote.clone(), info.clone(), etag.clone(), stop.clone());
        std::thread::Builder::new()
            .name("cutover-s3-heartbeat".into())
            .spawn(move || heartbeat(&remote, &info, &etag, &stop))
            .map_err(|e| S3Error::Runtime(e.to_string()))?
    };
    Ok(RemoteLock {
        remote,
        info,
        etag,
        stop,
        beat: Some(beat),
    })
}

/// Every quarter lease: the heartbeat rewritten, only over our own lock.
fn heartbeat(
    remote: &Remote,
    info: &Mutex<RemoteLockInfo>,
    etag: &Mutex<String>,
    stop: &AtomicBool,
) {
    let every = lease() / 4;
    let mut last = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < every {
            continue;
        }
        last = std::time::Instant::now();
        let body = match info.lock() {
            Ok(mut i) => {
                i.heartbeat = lock_now();
                serde_json::to_vec_pretty(&*i).unwrap_or_default()
            }
            Err(_) => return,
        };
        let current = etag.lock().map(|e| e.clone()).unwrap_or_default();
        match remote.put_if_match("lock.json", body, &current) {
            Ok(Some(new)) => {
                if let Ok(mut e) = etag.lock() {
                    *e = new;
                }
            }
            Ok(None) => {
                tracing::warn!("the S3 lock is no longer ours (removed or taken over)");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "the S3 lock's heartbeat failed; retrying"),
        }
    }
}

/// "Now" for the lock's times, shifted by `CUTOVER_CLOCK_OFFSET_SECS` (a test knob: a
/// machine whose clock is off).
fn lock_now() -> String {
    let offset = std::env::var("CUTOVER_CLOCK_OFFSET_SECS")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    let now = SystemTime::now();
    let shifted = if offset >= 0 {
        now + Duration::from_secs(offset.unsigned_abs())
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    humantime::format_rfc3339_millis(shifted).to_string()
}

fn read_lock(remote: &Remote) -> Result<Option<(RemoteLockInfo, String)>, S3Error> {
    Ok(remote.get("lock.json")?.and_then(|o| {
        serde_json::from_slice::<RemoteLockInfo>(&o.bytes)
            .ok()
            .map(|i| (i, o.etag))
    }))
}

/// Who holds the S3 lock, if anyone.
pub fn holder(remote: &Remote) -> Result<Option<RemoteLockInfo>, S3Error> {
    Ok(read_lock(remote)?.map(|(i, _)| i))
}

/// Removes a stale lock whose id is `id`, only if it is still the lock that was read (its
/// ETag): a lock taken over in between is not removed.
pub fn unlock(remote: &Remote, id: &str) -> Result<RemoteLockInfo, RemoteLockError> {
    let Some((info, etag)) = read_lock(remote)? else {
        return Err(RemoteLockError::NotHeld);
    };
    if info.id != id {
        return Err(RemoteLockError::WrongId {
            given: id.to_string(),
            actual: info.id,
        });
    }
    if !info.is_stale(SystemTime::now()) {
        return Err(RemoteLockError::Alive(Box::new(info)));
    }
    if remote.delete_if_match("lock.json", &etag)? {
        Ok(info)
    } else {
        Err(RemoteLockError::Changed)
    }
}

/// The local mirror's directory for a prefix: `ROOT/s3/BUCKET/PREFIX`.
pub fn mirror_dir(root: &Path, bucket: &str, prefix: &str) -> PathBuf {
    let mut dir = root.join("s3").join(bucket);
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        dir = dir.join(part);
    }
    dir
}

/// The events' sequence numbers and ETags as S3 lists them (for the tests and the bench).
pub fn listed_events(remote: &Remote) -> Result<BTreeMap<String, String>, S3Error> {
    Ok(remote.list("journal/")?.into_iter().collect())
}

fn chunk_key(relative: &str, offset: u64) -> String {
    format!("{relative}/{offset:012}")
}

/// Every file under `dir`, relative to `root` (`logs/<step>/<n>.log`), with its length.
fn local_files(root: &Path, dir: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let (Ok(meta), Ok(rel)) = (entry.metadata(), path.strip_prefix(root)) {
                out.push((rel.to_string_lossy().into_owned(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// Sends the step logs to S3 as they grow: each new stretch of a log file is an object
/// `logs/<step>/<file>/<offset>` (its first byte's offset), so a reader elsewhere appends the
/// chunks it lacks in order.
pub struct LogShipper {
    remote: Arc<Remote>,
    root: PathBuf,
    sent: BTreeMap<String, u64>,
}

impl LogShipper {
    /// What is on disk now was pulled from S3 or shipped before: only growth is sent.
    pub fn new(remote: Arc<Remote>, root: &Path) -> LogShipper {
        LogShipper {
            remote,
            root: root.to_path_buf(),
            sent: local_files(root, "logs").into_iter().collect(),
        }
    }

    /// Ships what every log gained since the last call; how many chunks.
    pub fn ship(&mut self) -> Result<usize, S3Error> {
        let mut chunks = 0;
        for (relative, len) in local_files(&self.root, "logs") {
            let sent = self.sent.get(&relative).copied().unwrap_or(0);
            if len <= sent {
                continue;
            }
            let bytes = {
                use std::io::{Read, Seek, SeekFrom};
                let mut file = std::fs::File::open(self.root.join(&relative))
                    .map_err(|e| S3Error::Local(format!("{relative}: {e}")))?;
                file.seek(SeekFrom::Start(sent))
                    .map_err(|e| S3Error::Local(format!("{relative}: {e}")))?;
                let mut bytes = Vec::new();
                file.take(len - sent)
                    .read_to_end(&mut bytes)
                    .map_err(|e| S3Error::Local(format!("{relative}: {e}")))?;
                bytes
            };
            let shipped = bytes.len() as u64;
            self.remote.put(&chunk_key(&relative, sent), bytes)?;
            self.sent.insert(relative, sent + shipped);
            chunks += 1;
        }
        Ok(chunks)
    }
}

/// Ships the logs every `every` in the background while this lives, and once more when dropped
/// (the attempt's last lines).
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
                let mut last = std::time::Instant::now();
                loop {
                    let stopping = flag.load(Ordering::SeqCst);
                    if stopping || last.elapsed() >= every {
                        let shipped = match shipper.lock() {
                            Ok(mut s) => s.ship(),
                            Err(_) => return,
                        };
                        if let Err(e) = shipped {
                            tracing::warn!(error = %e, "step logs not shipped to S3 yet");
                        }
                        last = std::time::Instant::now();
                    }
                    if stopping {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        LogShipping { stop, thread }
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
    let mut by_file: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let skip = remote.prefix.len();
    for (key, _) in remote.list(dir)? {
        let relative = &key[skip.min(key.len())..];
        let Some((file, offset)) = relative.rsplit_once('/') else {
            continue;
        };
        let Ok(offset) = offset.parse::<u64>() else {
            continue;
        };
        by_file
            .entry(file.to_string())
            .or_default()
            .push((offset, relative.to_string()));
    }
    let mut fetched = 0;
    for (file, mut chunks) in by_file {
        chunks.sort();
        let path = root.join(&file);
        let mut len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        for (offset, name) in chunks {
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
        let root = root.to_path_buf();
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

/// The journal, the logs and the lock's holder, brought into the mirror once.
fn follow_once(remote: &Remote, root: &Path) {
    // The logs first: a step's lines are shipped before the journal says it ended, so the
    // mirror never shows a step done with its log still short.
    if let Err(e) = pull_logs(remote, root, "logs/") {
        tracing::warn!(error = %e, "the S3 logs could not be followed");
    }
    if let Err(e) = pull(remote, &root.join("journal.jsonl")) {
        tracing::warn!(error = %e, "the S3 journal could not be followed");
    }
    if let Ok(holder) = holder(remote) {
        let now = SystemTime::now();
        let seen = serde_json::json!({
            "alive": holder.as_ref().is_some_and(|h| !h.is_stale(now)),
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
