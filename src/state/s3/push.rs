//! `cutover state push`: a local journal uploaded to an empty prefix.

use super::mirror::{event_name, Head};
use super::{Put, Remote};
use crate::journal::hash_line;

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
            == Put::Refused
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
