//! The local mirror of the S3 journal (a state directory of its own): a cache. Reads list the
//! keys, fetch only what is new (or changed: ETags are kept beside the mirror), and rewrite
//! the mirror from S3 when it disagrees. Every other reader (status, audit, the UI) reads the
//! mirror as it reads a local journal, and verifies the same hash chain.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Object, Remote, S3Error};
use crate::journal::{hash_line, JournalError};

/// Objects fetched at once when the mirror catches up.
const FETCH_AT_ONCE: usize = 32;

pub(crate) fn event_name(seq: u64) -> String {
    format!("journal/{seq:010}.jsonl")
}

/// `head.json`: the last event written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

/// How the mirror caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub events: u64,
    /// Objects fetched this time (the rest came from the mirror).
    pub fetched: u64,
    /// `head.json`'s ETag as read (none when there is no head yet): a driver writes the next
    /// head only over this one.
    pub head_etag: Option<String>,
}

fn broken(line: u64, reason: String) -> JournalError {
    JournalError::Broken { line, reason }
}

/// The ETags of the mirror's lines, one per line, beside it.
pub(crate) fn etags_path(journal: &Path) -> PathBuf {
    journal.with_extension("etags")
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
    Ok(remote
        .list("journal/")?
        .into_iter()
        .map(|l| (l.key, l.etag))
        .collect())
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
            .map_err(s3)?
            .into_iter()
            .map(|l| (l.key, l.etag)),
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
    let (head, head_etag): (Option<Head>, Option<String>) =
        match remote.get("head.json").map_err(s3)? {
            Some(o) => (serde_json::from_slice(&o.bytes).ok(), Some(o.etag)),
            None => (None, None),
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
        head_etag,
    })
}

/// Fetches the events `seqs`, many at once, in order.
fn fetch(remote: &Remote, seqs: &[u64]) -> Result<Vec<Option<Object>>, S3Error> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let client = remote.client.clone();
    let bucket = remote.bucket.clone();
    let limit = remote.timeout;
    let keys: Vec<String> = seqs.iter().map(|s| remote.key(&event_name(*s))).collect();
    let first = keys.first().cloned().unwrap_or_default();
    let got = remote.call("s3:GetObject", &first, None, async move {
        futures_util::stream::iter(keys.into_iter().map(|key| {
            let client = client.clone();
            let bucket = bucket.clone();
            async move {
                let out = client.get_object().bucket(bucket).key(&key).send().await;
                match out {
                    Ok(out) => {
                        let etag = out.e_tag().unwrap_or_default().to_string();
                        let bytes = match tokio::time::timeout(limit, out.body.collect()).await {
                            Ok(Ok(data)) => data.into_bytes().to_vec(),
                            Ok(Err(e)) => return Err((key.clone(), e.to_string(), false)),
                            Err(_) => return Err((key.clone(), String::new(), true)),
                        };
                        Ok(Some((bytes, etag)))
                    }
                    Err(e) if matches!(&e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 404) => {
                        Ok(None)
                    }
                    Err(e) => {
                        let timed_out = super::is_timeout(&e);
                        Err((key, DisplayErrorContext(&e).to_string(), timed_out))
                    }
                }
            }
        }))
        .buffered(FETCH_AT_ONCE)
        .collect::<Vec<_>>()
        .await
    })?;
    got.into_iter()
        .map(|r| match r {
            Ok(o) => Ok(o.map(|(bytes, etag)| Object {
                bytes,
                etag,
                age: None,
            })),
            Err((key, _, true)) => Err(S3Error::Timeout {
                action: "s3:GetObject",
                bucket: remote.bucket.clone(),
                key,
                after: limit,
            }),
            Err((key, detail, false)) => Err(S3Error::Call {
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
