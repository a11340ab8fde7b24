//! Where approvals are posted: beside the journal, one file per verdict, each written once by
//! its approver, who needs no lock (the driver holds it): `approvals/<step>/<signed_at_ms>-<nonce>.json`
//! in the state directory, or under an S3 state's prefix (written only if absent). The driver
//! reads them when the step is about to run, verifies each with STS and records them in the
//! journal; the files stay, as the approvers left them.

use std::path::PathBuf;
use std::sync::Arc;

use super::{s3, State};
use crate::approval::Mailbox;

/// The approvals mailbox of a state.
pub fn mailbox(state: &State) -> Arc<dyn Mailbox> {
    match &state.remote {
        Some(remote) => Arc::new(S3Box(remote.clone())),
        None => Arc::new(LocalBox(state.workspace.root.join("approvals"))),
    }
}

fn valid(step: &str, name: &str) -> Result<(), String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.starts_with('.')
    };
    if ok(step) && ok(name) {
        Ok(())
    } else {
        Err(format!("not a name for an approval: {step}/{name}"))
    }
}

struct LocalBox(PathBuf);

impl Mailbox for LocalBox {
    fn post(&self, step: &str, name: &str, bytes: &[u8]) -> Result<String, String> {
        valid(step, name)?;
        let dir = self.0.join(step);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(name);
        // Written whole, then renamed: a reader never sees half of one; never over another.
        let temp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&temp, bytes).map_err(|e| format!("{}: {e}", temp.display()))?;
        if path.exists() {
            let _ = std::fs::remove_file(&temp);
            return Err(format!("{} exists already", path.display()));
        }
        std::fs::rename(&temp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path.display().to_string())
    }

    fn read(&self, step: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        valid(step, "x")?;
        let dir = self.0.join(step);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let bytes = std::fs::read(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            out.push((name, bytes));
        }
        out.sort();
        Ok(out)
    }
}

struct S3Box(Arc<s3::Remote>);

impl Mailbox for S3Box {
    fn post(&self, step: &str, name: &str, bytes: &[u8]) -> Result<String, String> {
        valid(step, name)?;
        let key = format!("approvals/{step}/{name}");
        match self
            .0
            .put_if_absent(&key, bytes.to_vec())
            .map_err(|e| e.to_string())?
        {
            s3::Put::Written(_) => Ok(format!("s3://{}/{}", self.0.bucket, self.0.key(&key))),
            s3::Put::Refused => Err(format!("{key} exists already")),
        }
    }

    fn read(&self, step: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        valid(step, "x")?;
        let dir = format!("approvals/{step}/");
        let prefix = self.0.key(&dir);
        let mut out = Vec::new();
        for listed in self.0.list(&dir).map_err(|e| e.to_string())? {
            let Some(name) = listed.key.strip_prefix(&prefix) else {
                continue;
            };
            if name.contains('/') || !name.ends_with(".json") {
                continue;
            }
            if let Some(object) = self
                .0
                .get(&format!("{dir}{name}"))
                .map_err(|e| e.to_string())?
            {
                out.push((name.to_string(), object.bytes));
            }
        }
        Ok(out)
    }
}
