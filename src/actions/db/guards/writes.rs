//! `db.writes`: the database's write counters (`pg_stat_user_tables`: rows inserted, updated
//! and deleted per table). Without `since` it records them (at the DNS cutover: the moment
//! writes start landing on RDS); with `since` it counts the rows changed after that record —
//! what going back to Heroku would lose, said before the DNS rollback is confirmed.

use std::collections::BTreeMap;

use super::idle::written_since;
use crate::actions::db::capture::catalog;
use crate::actions::db::capture::catchup::{pending, Pending};
use crate::actions::db::common::{connect, db_url, write_counters};
use crate::actions::db::copy::baseline::went_down;
use crate::actions::{ActionContext, Outcome};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    url: String,
    since: Option<String>,
    /// A capture's schema on this database: where it is there, its backlog is what going back
    /// carries (nothing is lost), said instead of the counts.
    capture: Option<String>,
    /// The catch-up step carrying that capture's changes (its position and rate).
    applied_by: Option<String>,
    ca_bundle: Option<String>,
}

/// What going back carries, as one sentence.
pub fn describe_pending(pending: &Pending, by: Option<&str>) -> String {
    if pending.changes == 0 {
        return "nothing to carry back: every change made on this database since the cutover is already in the old one (the capture's log is applied to its end)".to_string();
    }
    let age = humantime::format_duration(std::time::Duration::from_secs(pending.oldest_secs));
    let predicted = match pending.rate {
        Some(rate) => format!(
            "predicted {:.0} s at {rate:.0} changes/s (`{}`'s last run)",
            (pending.changes as f64 / rate).ceil(),
            by.unwrap_or("the catch-up")
        ),
        None => format!(
            "no catch-up has run this way yet, so its rate here is not known{}",
            by.map(|b| format!(" (run `{b}` to measure it and shrink the backlog)"))
                .unwrap_or_default()
        ),
    };
    format!(
        "{} change(s) to {} row(s) made on this database since the cutover are not in the old database yet (the oldest {age} ago): the rollback carries them back before the domain goes back — {predicted}",
        pending.changes, pending.rows
    )
}

/// The rows changed since `before`, as one sentence (the largest tables first).
pub fn describe_changes(changed: &[(String, i64)]) -> String {
    let total: i64 = changed.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "no row changed since the cutover: going back loses nothing (as PostgreSQL's statistics say: a session's writes show within about 10 s)".to_string();
    }
    let mut tables = changed.to_vec();
    tables.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let listed: Vec<String> = tables
        .iter()
        .take(5)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    let more = tables.len().saturating_sub(5);
    format!(
        "{total} row(s) changed on this database since the cutover ({}{}): the old database does not have them, and going back to it loses them unless they are copied back first",
        listed.join(", "),
        if more > 0 { format!(", and {more} more table(s)") } else { String::new() }
    )
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let url = db_url(&p.url, "url", p.ca_bundle.as_deref(), ctx)?;
    let client = connect(&url, "url").await?;
    let capture = p
        .capture
        .as_deref()
        .map(|c| crate::actions::db::capture::schema_name(Some(c)))
        .transpose()?;
    if let Some(schema) = capture.as_deref() {
        let recorded = p.applied_by.as_deref().and_then(|s| ctx.recorded.get(s));
        if let Some(pending) = pending(&client, schema, recorded).await? {
            let mut sentence = describe_pending(&pending, p.applied_by.as_deref());
            let left_out = catalog::recorded(&client, schema)
                .await?
                .map(|c| c.left_out)
                .unwrap_or_default();
            if left_out.is_empty() {
                sentence.push_str(". Nothing is lost");
            } else {
                sentence.push_str(&format!(
                    ". Not carried (the old database has no such table, the capture left them out): {} — their rows stay on this database only",
                    left_out.join(", ")
                ));
            }
            ctx.report
                .output("backlog", pending.changes.to_string())
                .await;
            ctx.report.info(sentence.clone()).await;
            return Ok(Outcome::Succeeded {
                note: Some(sentence),
            });
        }
        ctx.report
            .info(format!(
                "no change capture on this database ({schema}): what was written here since the cutover is known only by count"
            ))
            .await;
    }
    let now = write_counters(&client).await?;
    match p.since.as_deref().map(str::trim) {
        None | Some("") => {
            ctx.report
                .output("counters", serde_json::to_string(&now).unwrap_or_default())
                .await;
            Ok(Outcome::Succeeded {
                note: Some(format!("write counters of {} table(s) recorded", now.len())),
            })
        }
        Some(text) => {
            let before: BTreeMap<String, i64> = serde_json::from_str(text).map_err(|e| {
                Outcome::failed(format!(
                    "`since` is not a table of write counters (as this action's `counters`): {e}"
                ))
            })?;
            let changed = written_since(&before, &now);
            let total: i64 = changed.iter().map(|(_, n)| n).sum();
            // After a statistics reset the counters start again from zero: what they say
            // since is a floor, not a count (and "nothing" would be a false comfort).
            let reset = went_down(&before, &now);
            ctx.report
                .output(
                    "changed_rows",
                    if reset.is_empty() {
                        total.to_string()
                    } else {
                        "unknown".to_string()
                    },
                )
                .await;
            let sentence = if reset.is_empty() {
                describe_changes(&changed)
            } else {
                format!(
                    "{}: how many rows changed on this database since the counters were recorded cannot be told (at least {total}); going back may lose rows written here",
                    reset.join("; ")
                )
            };
            ctx.report.info(sentence.clone()).await;
            Ok(Outcome::Succeeded {
                note: Some(sentence),
            })
        }
    }
}
