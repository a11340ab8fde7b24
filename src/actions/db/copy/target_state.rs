//! What the journal says of a copy's target: dirty from the moment a restore is about to write
//! into it until a whole, accepted copy makes it clean again (`target_state`, keyed by the
//! target's server and database OID, which no host alias changes). The copy refuses a dirty
//! target without `on_existing = "reset"`; `db.verify` uses no recorded figures for one.

use crate::actions::db::common::Identity;

/// The output recording whether a copy's target is dirty (a restore began and has not
/// finished) or clean again.
pub const TARGET_STATE: &str = "target_state";

/// One record of [`TARGET_STATE`]: which database, dirty or not, since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetState {
    pub target: String,
    pub dirty: bool,
    /// RFC 3339 with milliseconds: the latest record for a target, from any step, decides.
    pub at: String,
}

impl TargetState {
    pub fn now(target: &str, dirty: bool) -> Self {
        TargetState {
            target: target.to_string(),
            dirty,
            at: crate::clock::now_rfc3339(),
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How the journal names a target database: its server and OID, which no host alias changes.
pub fn target_key(id: &Identity) -> String {
    format!(
        "server {} database oid {} ({})",
        id.system_identifier, id.database_oid, id.database
    )
}

/// The step whose unfinished restore left `target` dirty, and since when: the latest record
/// of that target across every step decides (a later whole copy by another step cleans it).
pub fn dirty_since(
    recorded: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    target: &str,
) -> Option<(String, String)> {
    recorded
        .iter()
        .filter_map(|(step, outputs)| {
            let state: TargetState = serde_json::from_str(outputs.get(TARGET_STATE)?).ok()?;
            (state.target == target).then_some((step, state))
        })
        .max_by(|a, b| a.1.at.cmp(&b.1.at))
        .filter(|(_, state)| state.dirty)
        .map(|(step, state)| (step.clone(), state.at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_record_of_a_target_decides_whether_it_is_dirty() {
        use std::collections::BTreeMap;
        let record = |target: &str, dirty: bool, at: &str| {
            BTreeMap::from([(
                TARGET_STATE.to_string(),
                TargetState {
                    target: target.into(),
                    dirty,
                    at: at.into(),
                }
                .encode(),
            )])
        };
        let mut recorded = BTreeMap::new();
        assert_eq!(dirty_since(&recorded, "rds"), None);
        recorded.insert(
            "a".to_string(),
            record("rds", true, "2026-11-30T10:00:00.000Z"),
        );
        recorded.insert(
            "b".to_string(),
            record("other", false, "2026-11-30T11:00:00.000Z"),
        );
        assert_eq!(
            dirty_since(&recorded, "rds"),
            Some(("a".into(), "2026-11-30T10:00:00.000Z".into()))
        );
        assert_eq!(dirty_since(&recorded, "other"), None);
        // Another step's later whole copy into the same target cleans it.
        recorded.insert(
            "c".to_string(),
            record("rds", false, "2026-11-30T10:30:00.000Z"),
        );
        assert_eq!(dirty_since(&recorded, "rds"), None);
        // A record that does not parse is not a clean bill: it is ignored, the others decide.
        recorded.insert(
            "d".to_string(),
            BTreeMap::from([(TARGET_STATE.to_string(), "garbage".to_string())]),
        );
        recorded.insert(
            "e".to_string(),
            record("rds", true, "2026-11-30T12:00:00.000Z"),
        );
        assert_eq!(dirty_since(&recorded, "rds").map(|d| d.0), Some("e".into()));
    }
}
