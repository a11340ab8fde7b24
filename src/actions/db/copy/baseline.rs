//! What the source held when the copy read it, for the decommission guard (`db.idle`): the
//! copy's `source_baseline` output.
//!
//! PostgreSQL's write counters (`pg_stat_user_tables`) are not exact on their own: a session
//! publishes its counts at most once a second, or up to 10 s after it goes idle, so counters
//! read at the snapshot can miss writes the snapshot holds (and the guard would later take them
//! for writes after it); and `pg_stat_reset()`, a crash restart or a failover starts them again
//! from zero, so later writes can stay below the baseline. The baseline therefore also records
//! when the statistics were last reset, when the server started, each table's file node (a
//! TRUNCATE, which no counter counts, gives a new one) and — from a parallel copy — each table's
//! content as read from the copy's snapshot: the proof the guard falls back on.
//!
//! Read by the copy (its `source_baseline` output) and by the guards (now, to compare).

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::actions::db::checksum::Checksum;
use crate::actions::db::common::{col, query, Identity};
use crate::actions::Outcome;

/// The copy's statement about its source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    /// The server (`system_identifier`) and database (OID) it is about.
    pub server: String,
    pub database_oid: String,
    /// When it was read, as the server says.
    pub at: String,
    /// Rows inserted, updated and deleted per table (`schema.table`).
    pub counters: BTreeMap<String, i64>,
    /// Each table's file node.
    #[serde(default)]
    pub filenodes: BTreeMap<String, u32>,
    /// `pg_stat_database.stats_reset` (none: never reset).
    pub stats_reset: Option<String>,
    /// `pg_postmaster_start_time()`.
    pub server_started: String,
    /// Each table's rows as the copy read them from its snapshot (a parallel copy's).
    #[serde(default)]
    pub content: BTreeMap<String, Checksum>,
}

/// The statistics' own state: reset time and server start, and what they count per table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub counters: BTreeMap<String, i64>,
    pub filenodes: BTreeMap<String, u32>,
    pub stats_reset: Option<String>,
    pub server_started: String,
    pub at: String,
}

/// Reads the counters with the statistics' reset time and the server's start.
pub async fn read(client: &Client) -> Result<Counters, Outcome> {
    let rows = query(
        client,
        "SELECT format('%I.%I', schemaname, relname), (n_tup_ins + n_tup_upd + n_tup_del)::bigint, \
                coalesce(pg_relation_filenode(relid), 0)::bigint \
           FROM pg_stat_user_tables WHERE schemaname NOT LIKE 'cutover\\_capture%' ORDER BY 1",
        "reading the write counters",
    )
    .await?;
    let mut counters = BTreeMap::new();
    let mut filenodes = BTreeMap::new();
    for row in &rows {
        let table: String = col(row, 0)?;
        let node: i64 = col(row, 2)?;
        counters.insert(table.clone(), col::<i64>(row, 1)?);
        filenodes.insert(table, u32::try_from(node).unwrap_or(0));
    }
    let rows = query(
        client,
        "SELECT (SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()), \
                pg_postmaster_start_time()::text, now()::text",
        "reading when the statistics were reset",
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Outcome::failed("the database did not say when its statistics began"))?;
    Ok(Counters {
        counters,
        filenodes,
        stats_reset: col(row, 0)?,
        server_started: col(row, 1)?,
        at: col(row, 2)?,
    })
}

impl Baseline {
    pub fn new(id: &Identity, read: Counters, content: BTreeMap<String, Checksum>) -> Self {
        Baseline {
            server: id.system_identifier.clone(),
            database_oid: id.database_oid.clone(),
            at: read.at,
            counters: read.counters,
            filenodes: read.filenodes,
            stats_reset: read.stats_reset,
            server_started: read.server_started,
            content,
        }
    }

    /// Why the counters read now cannot be compared with these, if they cannot: the statistics
    /// were reset, the server restarted (a crash or a failover loses them), or a counter went
    /// down.
    pub fn untrusted(&self, now: &Counters) -> Vec<String> {
        let mut why = Vec::new();
        if now.stats_reset != self.stats_reset {
            why.push(format!(
                "the statistics were reset since the baseline (at {}; the baseline's: {})",
                now.stats_reset.as_deref().unwrap_or("?"),
                self.stats_reset.as_deref().unwrap_or("never")
            ));
        }
        if now.server_started != self.server_started {
            why.push(format!(
                "the server restarted since the baseline (at {}; a restart after a crash or a failover starts the counters again)",
                now.server_started
            ));
        }
        if why.is_empty() {
            why.extend(went_down(&self.counters, &now.counters));
        }
        why
    }
}

/// Tables whose counter is lower than before: only a reset does that.
pub fn went_down(before: &BTreeMap<String, i64>, now: &BTreeMap<String, i64>) -> Vec<String> {
    let lower: Vec<String> = now
        .iter()
        .filter_map(|(table, n)| {
            let was = before.get(table)?;
            (n < was).then(|| format!("{table} {was} → {n}"))
        })
        .collect();
    if lower.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "the write counters went down since the baseline, as after a statistics reset ({})",
            lower.join(", ")
        )]
    }
}

/// A `baseline` parameter: the copy's whole `source_baseline`, or bare counters (`source_writes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Given {
    Full(Box<Baseline>),
    Counters(BTreeMap<String, i64>),
}

pub fn parse(text: &str) -> Result<Given, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value.get("counters").is_some_and(|c| c.is_object()) {
        serde_json::from_value(value)
            .map(|b| Given::Full(Box::new(b)))
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_value(value)
            .map(Given::Counters)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn now(reset: Option<&str>, started: &str, pairs: &[(&str, i64)]) -> Counters {
        Counters {
            counters: counters(pairs),
            filenodes: BTreeMap::new(),
            stats_reset: reset.map(str::to_string),
            server_started: started.to_string(),
            at: "later".into(),
        }
    }

    #[test]
    fn a_reset_a_restart_or_a_lower_counter_makes_the_counters_untrusted() {
        let id = Identity {
            system_identifier: "7".into(),
            database_oid: "16384".into(),
            database: "app".into(),
        };
        let base = Baseline::new(
            &id,
            now(None, "t0", &[("public.a", 100), ("public.b", 5)]),
            BTreeMap::new(),
        );
        assert!(base
            .untrusted(&now(None, "t0", &[("public.a", 120), ("public.b", 5)]))
            .is_empty());
        let reset = base.untrusted(&now(Some("t1"), "t0", &[("public.a", 1)]));
        assert_eq!(reset.len(), 1, "{reset:?}");
        assert!(reset[0].contains("statistics were reset") && reset[0].contains("never"));
        // Lower counters with no reset recorded (a reset of another kind): said as such.
        let lower = base.untrusted(&now(None, "t0", &[("public.a", 1)]));
        assert!(lower[0].contains("public.a 100 → 1"), "{lower:?}");
        let restart = base.untrusted(&now(None, "t2", &[("public.a", 100)]));
        assert!(restart[0].contains("server restarted"), "{restart:?}");
    }

    #[test]
    fn a_baseline_parameter_is_a_whole_baseline_or_bare_counters() {
        assert_eq!(
            parse(r#"{"public.a": 3}"#).unwrap(),
            Given::Counters(counters(&[("public.a", 3)]))
        );
        let full = r#"{"server":"7","database_oid":"1","at":"x","counters":{"public.a":3},"stats_reset":null,"server_started":"t0"}"#;
        let Given::Full(b) = parse(full).unwrap() else {
            panic!("a whole baseline")
        };
        assert_eq!(b.counters, counters(&[("public.a", 3)]));
        assert!(b.content.is_empty());
        assert!(parse("[1]").is_err());
    }
}
