//! The journal, the lock and the step logs on S3, with the guarantees of the local ones.
//!
//! Layout under `s3://BUCKET/PREFIX`:
//! - `journal/0000000001.jsonl` …: one object per journal line (the same bytes, hash-chained),
//!   written with `If-None-Match: *` — two writers can never both write event N;
//! - `head.json`: the last sequence number and hash written, the external anchor a cut-off
//!   tail is detected against;
//! - `lock.json`: the driver's lock, written with `If-None-Match: *`, renewed with `If-Match` on
//!   its ETag, removed with `If-Match` (never someone else's); stale when S3 says it has not
//!   been renewed for its lease;
//! - `logs/<step>/<n>.log/<offset>`: the step logs, in chunks, as they grow;
//! - `probe/…`: written twice at first use: a store that lets the second write through ignores
//!   conditional writes, and is refused.
//!
//! One module per job: this one is the client (the SDK's calls run on a runtime of their own,
//! each bounded by a timeout, each interruptible); [`mirror`] keeps the local copy every reader
//! reads; [`store`] writes the journal; [`push`] fills an empty prefix; [`lock`] is the lock and
//! its lease; [`logs`] ships and pulls the step logs; [`watch`] follows S3 for a watcher.

mod lock;
mod logs;
mod mirror;
mod push;
mod store;
mod watch;

pub use lock::{
    acquire, holder, lease, unlock, Lease, RemoteLock, RemoteLockError, RemoteLockInfo, LEASE,
};
pub use logs::{is_step_log, pull_logs, LogShipper, LogShipping};
pub use mirror::{listed_events, mirror_dir, pull, pull_checked, Pulled, Reading};
pub use push::push;
pub use store::S3Store;
pub use watch::{followed_driver, Following, DRIVER_FILE};

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};

use crate::runbook::AwsSettings;

/// How long one S3 call may take in all (its retries included) before it fails naming the
/// call; each attempt gets a third of it. `CUTOVER_S3_TIMEOUT_SECS` overrides it.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// [`TIMEOUT`], or `CUTOVER_S3_TIMEOUT_SECS`.
pub fn timeout() -> Duration {
    std::env::var("CUTOVER_S3_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(TIMEOUT, Duration::from_secs)
}

/// How often a 409 ConditionalRequestConflict ("another conditional write to this key is in
/// progress: retry") is retried, and the first pause (doubled each time).
const CONFLICT_RETRIES: u32 = 6;
const CONFLICT_BACKOFF: Duration = Duration::from_millis(100);

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
    #[error("{action} s3://{bucket}/{key}: no answer within {}s (the S3 calls' time limit; CUTOVER_S3_TIMEOUT_SECS sets it)", .after.as_secs())]
    Timeout {
        action: &'static str,
        bucket: String,
        key: String,
        after: Duration,
    },
    #[error("{action} s3://{bucket}/{key}: interrupted before S3 answered (it may or may not have been done)")]
    Interrupted {
        action: &'static str,
        bucket: String,
        key: String,
    },
    #[error("cannot start the S3 client: {0}")]
    Runtime(String),
    #[error("{0}")]
    Local(String),
}

/// Stops every S3 call of one client, pending or to come: for Ctrl-C while S3 does not answer.
#[derive(Debug, Clone, Default)]
pub struct Interrupter(Arc<AtomicBool>);

impl Interrupter {
    pub fn interrupt(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_interrupted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A client of one S3 prefix, usable from synchronous code and from inside another tokio
/// runtime (its calls run on a runtime of their own).
pub struct Remote {
    pub bucket: String,
    pub prefix: String,
    client: aws_sdk_s3::Client,
    runtime: Option<tokio::runtime::Runtime>,
    interrupter: Interrupter,
    timeout: Duration,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A runtime dropped inside another runtime's task must not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An object as read: its bytes, its ETag, and how long ago it was last written by S3's own
/// clock (the response's `Date` less the object's `Last-Modified`), when S3 said both.
pub(crate) struct Object {
    pub(crate) bytes: Vec<u8>,
    pub(crate) etag: String,
    pub(crate) age: Option<Duration>,
}

/// A key as listed.
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) etag: String,
    pub(crate) size: u64,
}

/// How a conditional write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Put {
    /// Written; its new ETag.
    Written(String),
    /// Its condition did not hold (412, or the key is gone for an `If-Match`).
    Refused,
}

pub(crate) enum Condition {
    Absent,
    Match(String),
    None,
}

/// Why a call was given up on without S3's answer.
enum Stop {
    Interrupted,
    Deadline,
    Dropped,
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

fn is_timeout<E, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(f) => f.is_timeout(),
        _ => false,
    }
}

/// 409 ConditionalRequestConflict: S3 says another conditional write was in progress; retry.
fn is_conflict<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    status_of(e) == Some(409) || code_of(e).as_deref() == Some("ConditionalRequestConflict")
}

/// Remembers the `Date` of the response it sees: S3's own clock, to set against an object's
/// `Last-Modified` (also S3's), so no other machine's clock is ever trusted.
#[derive(Debug, Clone, Default)]
struct ServerDate(Arc<Mutex<Option<String>>>);

impl Intercept for ServerDate {
    fn name(&self) -> &'static str {
        "cutover-server-date"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let (Some(date), Ok(mut seen)) =
            (context.response().headers().get("date"), self.0.lock())
        {
            *seen = Some(date.to_string());
        }
        Ok(())
    }
}

impl ServerDate {
    /// The time since `modified`, by S3's clock (whole seconds, as HTTP dates are).
    fn age_of(&self, modified: Option<&DateTime>) -> Option<Duration> {
        let date = self.0.lock().ok()?.clone()?;
        let now = DateTime::from_str(&date, DateTimeFormat::HttpDate).ok()?;
        let modified = modified?;
        Some(Duration::from_secs(
            u64::try_from(now.secs() - modified.secs()).unwrap_or(0),
        ))
    }
}

impl Remote {
    /// The client for `s3://bucket/prefix`, with the same AWS settings as the steps (an
    /// endpoint override makes path-style requests, as local servers want) and the calls'
    /// timeouts. Checks the bucket.
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
        let timeout = timeout();
        let attempt = (timeout / 3).max(Duration::from_secs(1));
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(aws.endpoint_url.is_some())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(attempt)
                    .operation_attempt_timeout(attempt)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        let remote = Remote {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            client: aws_sdk_s3::Client::from_conf(s3_config),
            runtime: Some(runtime),
            interrupter: Interrupter::default(),
            timeout,
        };
        remote.check_bucket()?;
        Ok(remote)
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The handle that stops this client's calls (Ctrl-C while S3 does not answer).
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }

    /// Runs a future on this client's runtime and waits for it (from any thread), until it
    /// ends, the client is interrupted, or `deadline` passes.
    fn call<F, T>(
        &self,
        action: &'static str,
        key: &str,
        deadline: Option<Instant>,
        future: F,
    ) -> Result<T, S3Error>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| S3Error::Runtime("stopped".into()))?;
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let task = runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        let stop = loop {
            if self.interrupter.is_interrupted() {
                break Stop::Interrupted;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Stop::Deadline;
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(value) => return Ok(value),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Stop::Dropped,
            }
        };
        task.abort();
        let (bucket, key) = (self.bucket.clone(), key.to_string());
        Err(match stop {
            Stop::Interrupted => S3Error::Interrupted {
                action,
                bucket,
                key,
            },
            Stop::Deadline => S3Error::Timeout {
                action,
                bucket,
                key,
                after: started.elapsed(),
            },
            Stop::Dropped => S3Error::Runtime("the S3 call was dropped".into()),
        })
    }

    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail<E, R>(&self, action: &'static str, key: &str, e: &SdkError<E, R>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        tracing::debug!(error = %DisplayErrorContext(e), "S3 call failed");
        if is_timeout(e) {
            return S3Error::Timeout {
                action,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                after: self.timeout,
            };
        }
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
                detail: crate::aws_error::explain(action, e)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            },
        }
    }

    fn check_bucket(&self) -> Result<(), S3Error> {
        const ACTION: &str = "s3:ListBucket (HeadBucket)";
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        match self.call(ACTION, "", None, async move {
            client.head_bucket().bucket(bucket).send().await
        })? {
            Ok(_) => Ok(()),
            Err(e) => match status_of(&e) {
                Some(404) => Err(S3Error::NoBucket {
                    bucket: self.bucket.clone(),
                }),
                Some(403) => Err(S3Error::AccessDenied {
                    action: ACTION,
                    bucket: self.bucket.clone(),
                    key: String::new(),
                }),
                _ => Err(self.fail(ACTION, "", &e)),
            },
        }
    }

    /// The object at `name`, or `None` when there is none.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Object>, S3Error> {
        self.get_until(name, None)
    }

    pub(crate) fn get_until(
        &self,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<Object>, S3Error> {
        const ACTION: &str = "s3:GetObject";
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        let date = ServerDate::default();
        let seen = date.clone();
        let body_limit = self.timeout;
        let got = self.call(ACTION, &key, deadline, async move {
            match client
                .get_object()
                .bucket(bucket)
                .key(k)
                .customize()
                .interceptor(seen)
                .send()
                .await
            {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    let modified = out.last_modified().copied();
                    // The body streams after the call: bounded too.
                    match tokio::time::timeout(body_limit, out.body.collect()).await {
                        Ok(Ok(data)) => Ok(Ok((data.into_bytes().to_vec(), etag, modified))),
                        Ok(Err(e)) => Ok(Err(e.to_string())),
                        Err(_) => Ok(Err(format!(
                            "the object's body did not arrive within {}s",
                            body_limit.as_secs()
                        ))),
                    }
                }
                Err(e) => Err(e),
            }
        })?;
        match got {
            Ok(Ok((bytes, etag, modified))) => Ok(Some(Object {
                bytes,
                etag,
                age: date.age_of(modified.as_ref()),
            })),
            Ok(Err(e)) => Err(S3Error::Call {
                action: ACTION,
                bucket: self.bucket.clone(),
                key,
                detail: e,
            }),
            Err(e) if code_of(&e).as_deref() == Some("NoSuchKey") || status_of(&e) == Some(404) => {
                Ok(None)
            }
            Err(e) => Err(self.fail(ACTION, &key, &e)),
        }
    }

    /// Writes `bytes` at `name` only if nothing is there.
    pub(crate) fn put_if_absent(&self, name: &str, bytes: Vec<u8>) -> Result<Put, S3Error> {
        self.put_conditional(name, bytes, Condition::Absent, None)
    }

    /// Writes `bytes` at `name` whatever is there.
    pub(crate) fn put(&self, name: &str, bytes: Vec<u8>) -> Result<String, S3Error> {
        match self.put_conditional(name, bytes, Condition::None, None)? {
            Put::Written(etag) => Ok(etag),
            Put::Refused => Err(S3Error::Local("an unconditional write was refused".into())),
        }
    }

    /// A write under `condition`; a 409 ConditionalRequestConflict is retried with backoff
    /// (S3's own advice), a 412 (or, for `If-Match`, a key that is gone) is [`Put::Refused`].
    pub(crate) fn put_conditional(
        &self,
        name: &str,
        bytes: Vec<u8>,
        condition: Condition,
        deadline: Option<Instant>,
    ) -> Result<Put, S3Error> {
        const ACTION: &str = "s3:PutObject";
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        let matching = matches!(condition, Condition::Match(_));
        let put = self.call(ACTION, &key, deadline, async move {
            let mut pause = CONFLICT_BACKOFF;
            let mut tries = 0;
            loop {
                let mut request = client
                    .put_object()
                    .bucket(&bucket)
                    .key(&k)
                    .body(ByteStream::from(bytes.clone()));
                match &condition {
                    Condition::Absent => request = request.if_none_match("*"),
                    Condition::Match(etag) => request = request.if_match(etag),
                    Condition::None => {}
                }
                match request.send().await {
                    Err(e) if is_conflict(&e) && tries < CONFLICT_RETRIES => {
                        tracing::debug!(key = %k, "409 ConditionalRequestConflict: retrying");
                        tries += 1;
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    other => return other,
                }
            }
        })?;
        match put {
            Ok(out) => Ok(Put::Written(out.e_tag().unwrap_or_default().to_string())),
            Err(e)
                if status_of(&e) == Some(412)
                    || code_of(&e).as_deref() == Some("PreconditionFailed")
                    || (matching && status_of(&e) == Some(404)) =>
            {
                Ok(Put::Refused)
            }
            Err(e) => Err(self.fail(ACTION, &key, &e)),
        }
    }

    /// Deletes `name` only if it still has `etag`: false when it changed (or is gone). A 409
    /// is retried as for a write.
    pub(crate) fn delete_if_match(&self, name: &str, etag: &str) -> Result<bool, S3Error> {
        const ACTION: &str = "s3:DeleteObject";
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k, etag) = (self.bucket.clone(), key.clone(), etag.to_string());
        let deleted = self.call(ACTION, &key, None, async move {
            let mut pause = CONFLICT_BACKOFF;
            let mut tries = 0;
            loop {
                match client
                    .delete_object()
                    .bucket(&bucket)
                    .key(&k)
                    .if_match(&etag)
                    .send()
                    .await
                {
                    Err(e) if is_conflict(&e) && tries < CONFLICT_RETRIES => {
                        tries += 1;
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    other => return other,
                }
            }
        })?;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if matches!(status_of(&e), Some(412) | Some(404)) => Ok(false),
            Err(e) => Err(self.fail(ACTION, &key, &e)),
        }
    }

    pub(crate) fn delete(&self, name: &str) -> Result<(), S3Error> {
        const ACTION: &str = "s3:DeleteObject";
        let key = self.key(name);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        self.call(ACTION, &key, None, async move {
            client.delete_object().bucket(bucket).key(k).send().await
        })?
        .map(|_| ())
        .map_err(|e| self.fail(ACTION, &key, &e))
    }

    /// Every key under `PREFIX/dir`, in key order.
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<Listed>, S3Error> {
        self.list_after(dir, None)
    }

    /// The keys under `PREFIX/dir` after `after` (a name under the prefix).
    pub(crate) fn list_after(
        &self,
        dir: &str,
        after: Option<&str>,
    ) -> Result<Vec<Listed>, S3Error> {
        const ACTION: &str = "s3:ListBucket";
        let key = self.key(dir);
        let client = self.client.clone();
        let (bucket, k) = (self.bucket.clone(), key.clone());
        let after = after.map(|a| self.key(a));
        let listed = self.call(ACTION, &key, None, async move {
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
                    out.push(Listed {
                        key: o.key().unwrap_or_default().to_string(),
                        etag: o.e_tag().unwrap_or_default().to_string(),
                        size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    });
                }
            }
            Ok::<_, SdkError<_, _>>(out)
        })?;
        let mut listed = listed.map_err(|e| self.fail(ACTION, &key, &e))?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
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
            (Put::Written(_), Put::Refused) => {
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
