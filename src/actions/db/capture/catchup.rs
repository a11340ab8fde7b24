//! `db.catchup`: applies the change log `db.capture` keeps on the source to the target, in
//! batches (see `apply`); with `final = true`, the freeze's database part (see `freeze`).

use std::time::Duration;

use tokio_postgres::Client;

use super::apply::{backlog, Applier, Until};
use super::{catalog, freeze, guard, schema_name, CATALOG, LOG};
use crate::actions::db::common::{col, connect, db_url, ident, literal, query, schema_exists};
use crate::actions::db::connection;
use crate::actions::{parse_duration, ActionContext, Outcome};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    source: String,
    target: String,
    schema: Option<String>,
    batch: Option<i64>,
    until: Option<serde_json::Value>,
    #[serde(rename = "final")]
    final_: Option<bool>,
    lock_timeout: Option<String>,
    retries: Option<u32>,
    /// Where an earlier catch-up step stopped: its `resume` output.
    resume: Option<String>,
    /// A catch-up step whose recorded position this one starts from, when it has run (and is
    /// of this change log) — for a rollback that may come before or after that step ever ran,
    /// where `${steps.ID.outputs.resume}` could not be read.
    resume_step: Option<String>,
    /// `final = true`: leave the guard on the target once the check has passed (see `freeze`).
    keep_guard: Option<bool>,
    /// `final = true`: `"compare"` (default) index counts per table, or `"own"`: the target
    /// keeps its own indexes (the way back), a difference said, not failed.
    indexes: Option<String>,
    /// `"pass"`: a source with no capture at all is nothing to carry — said so, and the step
    /// succeeds (a way back from a journal whose cutover installed no capture on RDS; its warning
    /// has named what stays behind). `"fail"` (the default) fails instead.
    missing_capture: Option<String>,
    ca_bundle: Option<String>,
}

/// A `resume` value, `POSITION:HORIZON`.
/// An earlier catch-up's `resume`: POSITION:HORIZON, and the change log it is of (LOG, its
/// table's OID) when that step recorded it.
fn parse_resume(text: &str) -> Result<(i64, i64, Option<i64>), Outcome> {
    let bad = || {
        Outcome::failed(format!(
            "`resume` = {text:?}: give an earlier catch-up's `resume` output (POSITION:HORIZON[:LOG])"
        ))
    };
    let parts: Vec<&str> = text.trim().split(':').map(str::trim).collect();
    let number = |s: &str| s.parse::<i64>().map_err(|_| bad());
    match parts.as_slice() {
        [p, h] => Ok((number(p)?, number(h)?, None)),
        [p, h, l] => Ok((number(p)?, number(h)?, Some(number(l)?))),
        _ => Err(bad()),
    }
}

/// The change log's table OID: which log a position is of.
async fn log_oid(source: &Client, log: &str) -> Result<i64, Outcome> {
    let rows = query(
        source,
        &format!("SELECT {}::regclass::oid::bigint", literal(log)),
        "finding the change log (is the capture installed? db.capture mode = \"install\")",
    )
    .await?;
    match rows.first() {
        Some(row) => col(row, 0),
        None => Ok(0),
    }
}

/// The change log's last id (0 when empty).
async fn log_end(source: &Client, log: &str) -> Result<i64, Outcome> {
    let rows = query(
        source,
        &format!("SELECT coalesce(max(id), 0)::bigint FROM {log}"),
        "reading the change log's end",
    )
    .await?;
    match rows.first() {
        Some(row) => col(row, 0),
        None => Ok(0),
    }
}

fn until(value: Option<&serde_json::Value>) -> Result<Until, Outcome> {
    match value {
        None => Ok(Until::Empty),
        Some(serde_json::Value::String(s)) if s == "empty" => Ok(Until::Empty),
        Some(serde_json::Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
            Ok(Until::Backlog(s.trim().parse().unwrap_or(0)))
        }
        Some(serde_json::Value::Number(n)) if n.as_i64().is_some_and(|n| n >= 0) => {
            Ok(Until::Backlog(n.as_i64().unwrap_or(0)))
        }
        Some(other) => Err(Outcome::failed(format!(
            "`until` = {other}: give \"empty\" or the backlog (a number of changes) to stop at"
        ))),
    }
}

/// What a catch-up from a source would carry now (see `pending`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Changes logged after the position.
    pub changes: i64,
    /// The rows (table and key) they touch, and the tables emptied by a TRUNCATE.
    pub rows: i64,
    /// How long ago the oldest of them was logged.
    pub oldest_secs: u64,
    /// The rate the catch-up step applied at, when it has run (changes a second).
    pub rate: Option<f64>,
}

/// The backlog of the capture in `schema` on `source` after where the catch-up step whose
/// record is `recorded` stopped (from the log's start when it has not run, or stopped in an
/// older log); `None` when the source has no capture.
pub async fn pending(
    source: &Client,
    schema: &str,
    recorded: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Option<Pending>, Outcome> {
    if !schema_exists(source, schema).await? {
        return Ok(None);
    }
    let log = format!("{}.{LOG}", ident(schema));
    let id = log_oid(source, &log).await?;
    let field = |name: &str| {
        recorded
            .and_then(|r| r.get(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let same_log = field("log_id").is_none_or(|of| of as i64 == id);
    let position = if same_log {
        field("position").unwrap_or(0.0) as i64
    } else {
        0
    };
    let rows = query(
        source,
        &format!(
            "SELECT count(*)::bigint, count(DISTINCT (tbl, key))::bigint, \
                    coalesce(extract(epoch FROM now() - min(at)), 0)::bigint \
               FROM {log} WHERE id > {position}"
        ),
        "reading the change log's backlog",
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let rate = match (field("applied"), field("applied_secs")) {
        (Some(applied), Some(secs)) if applied > 0.0 && secs > 0.0 => Some(applied / secs),
        _ => None,
    };
    Ok(Some(Pending {
        changes: col(row, 0)?,
        rows: col(row, 1)?,
        oldest_secs: u64::try_from(col::<i64>(row, 2)?).unwrap_or(0),
        rate: rate.filter(|_| same_log),
    }))
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let schema = schema_name(p.schema.as_deref())?;
    let batch = p.batch.unwrap_or(1000);
    if batch < 1 {
        return Err(Outcome::failed("`batch` must be at least 1"));
    }
    let final_ = p.final_.unwrap_or(false);
    let until = until(p.until.as_ref())?;
    if final_ && until != Until::Empty {
        return Err(Outcome::failed(
            "`final = true` drains the log to zero: leave `until` out",
        ));
    }
    let lock_timeout = parse_duration(
        p.lock_timeout.as_deref(),
        Duration::from_secs(5),
        "lock_timeout",
    )?;
    let retries = p.retries.unwrap_or(5);
    let source_url = db_url(&p.source, "source", p.ca_bundle.as_deref(), ctx)?;
    let target_url = db_url(&p.target, "target", p.ca_bundle.as_deref(), ctx)?;
    let own_indexes = match p.indexes.as_deref() {
        None | Some("compare") => false,
        Some("own") => true,
        Some(other) => {
            return Err(Outcome::failed(format!(
                "`indexes` = {other:?}: give \"compare\" or \"own\""
            )))
        }
    };
    let pass_missing = match p.missing_capture.as_deref() {
        None | Some("fail") => false,
        Some("pass") => true,
        Some(other) => {
            return Err(Outcome::failed(format!(
                "`missing_capture` = {other:?}: give \"fail\" or \"pass\""
            )))
        }
    };
    let source = connect(&source_url, "source").await?;
    if pass_missing && !schema_exists(&source, &schema).await? {
        return Ok(Outcome::Succeeded {
            note: Some(format!(
                "nothing carried: the source has no change capture ({schema}), so what was written on it is not known by row — those writes stay on the source only"
            )),
        });
    }
    let target = connect(&target_url, "target").await?;
    let log = format!("{}.{LOG}", ident(&schema));

    // The final catch-up's freeze point comes first: a snapshot of the source as the step
    // starts (every write after it is one the freeze should have stopped).
    let freeze_point = if final_ {
        Some(freeze::freeze_point(&source).await?)
    } else {
        None
    };

    // Writes on the target by anyone but the catch-up are recorded from here on.
    let recorded = catalog::recorded(&source, &schema).await?;
    match &recorded {
        Some(catalog) => {
            guard::install(ctx, &target, &schema, catalog, lock_timeout, retries).await?;
        }
        None if final_ => {
            return Err(Outcome::failed(format!(
                "the source holds no catalog of what the capture follows ({schema}.{CATALOG}): install it again with db.capture (mode = \"install\") before the final catch-up"
            )))
        }
        None => {
            ctx.report
                .info("no recorded catalog on the source: the target is not guarded")
                .await
        }
    }

    // Rows land as the source has them: the target's own triggers and foreign-key checks
    // are off for this session where its role may say so (RDS's master user may).
    // Where it may not (Heroku's credential), its foreign keys and the app's triggers stay
    // on, and each batch is applied in their order (see `apply::live_batch`).
    let live = match target
        .batch_execute("SET session_replication_role = replica")
        .await
    {
        Ok(()) => false,
        Err(e) => {
            ctx.report
                .info(format!(
                    "the target's triggers and foreign keys stay on ({}): each batch deletes children first and upserts parents first, in the order of the target's foreign keys",
                    connection::explain(&e)
                ))
                .await;
            true
        }
    };
    // The key the log records for each table, for the rows a batch reaches through them.
    let keys = if live {
        let tables = match &recorded {
            Some(catalog) => catalog.tables.clone(),
            None => catalog::read(&source, &schema).await?,
        };
        Some(tables.into_iter().map(|(name, t)| (name, t.key)).collect())
    } else {
        None
    };

    let earlier = ctx.recorded.get(&ctx.step);
    let number = |name: &str| -> i64 {
        earlier
            .and_then(|r| r.get(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // This step's own position (a re-run after a kill), or an earlier step's, the further on —
    // each only if it is of this change log: one removed and installed again (db-capture rolled
    // back and run again) starts its ids over, and the engine has the copy made again.
    let log_id = log_oid(&source, &log).await?;
    let (mut position, mut horizon) = (0, 0);
    let own = earlier
        .and_then(|r| r.get("log_id"))
        .and_then(|v| v.trim().parse::<i64>().ok());
    let mut older_log = false;
    if own.is_none_or(|id| id == log_id) {
        (position, horizon) = (number("position"), number("horizon"));
    } else if number("position") > 0 {
        older_log = true;
    }
    let from_step = p.resume_step.as_deref().and_then(|step| {
        let theirs = ctx.recorded.get(step)?;
        let field = |name: &str| theirs.get(name).and_then(|v| v.trim().parse::<i64>().ok());
        Some(match field("log_id") {
            Some(of) => format!("{}:{}:{of}", field("position")?, field("horizon")?),
            None => format!("{}:{}", field("position")?, field("horizon")?),
        })
    });
    for given in p.resume.iter().chain(from_step.iter()) {
        let (p, h, of) = parse_resume(given)?;
        if of.is_some_and(|id| id != log_id) {
            older_log |= p > 0;
        } else if p > position {
            (position, horizon) = (p, h);
        }
    }
    if older_log {
        ctx.report
            .info("a recorded position is of a change log since removed and installed again: not used (the new log's ids start over)")
            .await;
    }
    // A position past the log's end (recorded before this log existed, by a step that did not
    // record which log): nothing of it is in this log.
    let last = log_end(&source, &log).await?;
    if position > last {
        return Err(Outcome::failed(format!(
            "the position {position} is past the change log's last change ({last}): the capture was removed and installed again since it was recorded, and its ids started over — copy again after the capture (db-copy), then run the catch-ups again"
        )));
    }
    let mut applier = Applier::new(ctx, source, target, log, batch, (position, horizon));
    applier.log_id = Some(log_id);
    if let Some(keys) = keys {
        // Guarded, the target keeps a tally of the catch-up's own writes for `db.idle`.
        let tally = recorded.is_some().then(|| schema.clone());
        applier.live_target(keys, tally);
    }
    if applier.position > 0 {
        ctx.report
            .info(format!(
                "the log is applied up to change {} (an earlier attempt, or `resume`): starting after it",
                applier.position
            ))
            .await;
    }
    if let (Some(point), Some(catalog)) = (freeze_point, recorded) {
        return freeze::run(
            &mut applier,
            &source_url,
            &target_url,
            &schema,
            point,
            &catalog,
            lock_timeout,
            retries,
            p.keep_guard.unwrap_or(false),
            own_indexes,
        )
        .await;
    }
    applier.drain(until).await?;

    let (backlog, oldest) = backlog(&applier.source, &applier.log, applier.position).await?;
    let secs = applier.started.elapsed().as_secs_f64();
    applier.outputs().await;
    ctx.report.output("backlog", backlog.to_string()).await;
    ctx.report
        .output("backlog_oldest_secs", oldest.to_string())
        .await;
    ctx.report
        .output("applied_secs", format!("{secs:.3}"))
        .await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{} change(s) applied in {secs:.1} s ({:.0}/s), up to change {}; backlog {backlog}",
            applier.applied,
            applier.applied as f64 / secs.max(0.001),
            applier.position
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_empty_or_a_backlog() {
        assert_eq!(until(None).ok(), Some(Until::Empty));
        assert_eq!(
            until(Some(&serde_json::json!("empty"))).ok(),
            Some(Until::Empty)
        );
        assert_eq!(
            until(Some(&serde_json::json!(500))).ok(),
            Some(Until::Backlog(500))
        );
        assert_eq!(
            until(Some(&serde_json::json!("20"))).ok(),
            Some(Until::Backlog(20))
        );
        assert!(until(Some(&serde_json::json!("soon"))).is_err());
        assert!(until(Some(&serde_json::json!(-1))).is_err());
    }

    #[test]
    fn resume_is_a_position_and_a_horizon() {
        assert_eq!(parse_resume("120:4711").ok(), Some((120, 4711, None)));
        assert_eq!(
            parse_resume("120:4711:16390").ok(),
            Some((120, 4711, Some(16390)))
        );
        assert!(parse_resume("1:2:3:4").is_err());
        assert!(parse_resume("120").is_err());
        assert!(parse_resume("a:b").is_err());
    }
}
