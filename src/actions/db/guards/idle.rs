//! `db.idle`: the guard before a database is deleted. For a whole window, no client but this
//! one may be connected to it (`pg_stat_activity`; clients that are going away — a dyno just
//! scaled down — get until the deadline to leave, and the window starts again after the last
//! one is seen), and no table may have been written since the copy read it. A client is named
//! by application, address, user and since when — never by what it is running, which may hold
//! data.
//!
//! Writes are judged against the copy's `source_baseline` (see `baseline`). Once every other
//! client has gone their statistics are all published, so the counters read then are whole. A
//! table whose counter moved past the baseline's, whose file was replaced (TRUNCATE), or that
//! appeared or went, is a candidate; when the counters cannot be compared at all (a statistics
//! reset, a restart, a counter gone down) every table is. A candidate's rows are then hashed
//! and compared with what the copy read from its snapshot: equal, it was not written after the
//! copy (its counter moved for writes the snapshot holds, published late); different, it fails
//! the step, named. Without the copy's content figures (a bare `source_writes`, or a copy by
//! pg_dump), a moved counter fails the step, and counters that cannot be compared fail it too,
//! saying why.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::actions::db::capture::guard;
use crate::actions::db::checksum::{copied_columns, hash_tables};
use crate::actions::db::common::{col, connect, db_url, identity, query};
use crate::actions::db::connection::DbUrl;
use crate::actions::db::copy::baseline::{self, Baseline, Given};
use crate::actions::{parse_duration, ActionContext, Outcome};

const SAMPLE: Duration = Duration::from_secs(1);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    url: String,
    window: Option<String>,
    deadline: Option<String>,
    baseline: Option<String>,
    #[serde(default)]
    ignore_applications: Vec<String>,
    ca_bundle: Option<String>,
}

/// One other client seen connected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Client {
    pub pid: i32,
    pub application: String,
    pub address: String,
    pub user: String,
    pub since: String,
}

impl Client {
    fn describe(&self) -> String {
        let application = if self.application.is_empty() {
            "(no application name)"
        } else {
            &self.application
        };
        format!(
            "{application} from {} as {} since {} (pid {})",
            self.address, self.user, self.since, self.pid
        )
    }
}

/// The tables whose write counter is higher now than in the baseline (or that the baseline
/// does not know), with how many rows changed.
pub fn written_since(
    baseline: &BTreeMap<String, i64>,
    now: &BTreeMap<String, i64>,
) -> Vec<(String, i64)> {
    now.iter()
        .filter_map(|(table, count)| {
            let before = baseline.get(table).copied().unwrap_or(0);
            (*count > before).then(|| (table.clone(), count - before))
        })
        .collect()
}

/// The counted writes that are not all cutover's own: a table whose rows changed since the
/// baseline no more than its catch-ups' tally says they wrote there (see
/// `guard::tally_statement`: the way back's catch-ups into Heroku count their writes in the
/// same transactions) is said to be cutover's and left out; any other is named, with how many
/// of its changes were cutover's. The tally starts with the first guarded catch-up into this
/// database, after the drain whose baseline this is.
async fn not_cutovers(
    ctx: &ActionContext,
    written: Vec<(String, i64)>,
    applied: &BTreeMap<String, i64>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (table, n) in written {
        match applied.get(&table).copied().unwrap_or(0) {
            0 => out.push((table, format!("{n} row change(s) counted"))),
            ours if ours >= n => {
                ctx.report
                    .info(format!(
                        "{table}: {n} row change(s) since the baseline, all cutover's own catch-up's ({ours} written by it)"
                    ))
                    .await
            }
            ours => out.push((
                table,
                format!(
                    "{n} row change(s) counted, {ours} of them cutover's own catch-up's: {} by someone else",
                    n - ours
                ),
            )),
        }
    }
    out
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let url = db_url(&p.url, "url", p.ca_bundle.as_deref(), ctx)?;
    let window = parse_duration(p.window.as_deref(), Duration::from_secs(60), "window")?;
    let deadline = parse_duration(p.deadline.as_deref(), window * 3, "deadline")?.max(window);
    let baseline: Option<Given> = match p.baseline.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(baseline::parse(text).map_err(|e| {
            Outcome::failed(format!(
                "`baseline` is neither db.copy's `source_baseline` nor a table of write counters (its `source_writes`): {e}"
            ))
        })?),
    };
    let ignored: BTreeSet<&str> = p.ignore_applications.iter().map(String::as_str).collect();
    let client = connect(&url, "database").await?;
    if let Some(Given::Full(b)) = &baseline {
        let id = identity(&client, "database").await?;
        if id.system_identifier != b.server || id.database_oid != b.database_oid {
            return Err(Outcome::failed(format!(
                "the baseline is of database oid {} on server {}; {} is database oid {} on server {}: \
                 not the database the copy read",
                b.database_oid,
                b.server,
                url.display(),
                id.database_oid,
                id.system_identifier
            )));
        }
    }
    ctx.report
        .info(format!(
            "watching {}: no other client may be connected for {} (giving clients until {} to leave)",
            url.display(),
            humantime::format_duration(window),
            humantime::format_duration(deadline)
        ))
        .await;

    let started = Instant::now();
    let mut quiet_since = started;
    let mut seen: BTreeSet<Client> = BTreeSet::new();
    let mut connected: BTreeSet<Client> = BTreeSet::new();
    loop {
        let rows = query(
            &client,
            "SELECT pid, coalesce(application_name, ''), coalesce(client_addr::text, 'local socket'), \
                    coalesce(usename::text, '?'), \
                    coalesce(to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), '?') \
               FROM pg_stat_activity \
              WHERE datname = current_database() AND pid <> pg_backend_pid() \
                AND backend_type = 'client backend'",
            "listing the connected clients",
        )
        .await?;
        let mut now_connected = BTreeSet::new();
        for row in &rows {
            let found = Client {
                pid: col(row, 0)?,
                application: col(row, 1)?,
                address: col(row, 2)?,
                user: col(row, 3)?,
                since: col(row, 4)?,
            };
            if ignored.contains(found.application.as_str()) {
                continue;
            }
            if seen.insert(found.clone()) {
                ctx.report
                    .info(format!("client connected: {}", found.describe()))
                    .await;
            }
            now_connected.insert(found);
        }
        for gone in connected.difference(&now_connected) {
            ctx.report
                .info(format!("client left: {}", gone.describe()))
                .await;
        }
        connected = now_connected;
        if !connected.is_empty() {
            quiet_since = Instant::now();
        }
        let quiet = quiet_since.elapsed();
        ctx.report
            .progress(
                quiet.as_secs(),
                Some(window.as_secs().max(1)),
                "s",
                Some(format!(
                    "quiet; {} other client(s) connected now",
                    connected.len()
                )),
            )
            .await;
        if connected.is_empty() && quiet >= window {
            break;
        }
        if started.elapsed() >= deadline {
            return Err(Outcome::failed(format!(
                "the database is still in use after {}: {} other client(s) connected: {}",
                humantime::format_duration(deadline),
                connected.len().max(1),
                connected
                    .iter()
                    .map(Client::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let wait = if connected.is_empty() {
            SAMPLE.min(window.saturating_sub(quiet))
        } else {
            SAMPLE
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = ctx.cancel.cancelled() => return Err(Outcome::Cancelled),
        }
    }

    // Every other client has gone: their statistics are published, the counters whole.
    let judged = match &baseline {
        Some(Given::Full(before)) => judge(ctx, &url, &client, before).await?,
        Some(Given::Counters(before)) => {
            let now = baseline::read(&client).await?;
            let untrusted = baseline::went_down(before, &now.counters);
            let applied = guard::applied_here(&client).await?;
            Judged {
                written: not_cutovers(ctx, written_since(before, &now.counters), &applied).await,
                untrusted,
                compared: now.counters.len(),
                by_content: false,
            }
        }
        None => {
            ctx.report
                .info("no baseline given: writes are not compared")
                .await;
            Judged::default()
        }
    };
    let after = if judged.by_content {
        "the copy"
    } else {
        "the baseline"
    };
    for (table, how) in &judged.written {
        ctx.report
            .info(format!("written since {after}: {table} ({how})"))
            .await;
    }
    if baseline.is_some() && judged.written.is_empty() && judged.untrusted.is_empty() {
        ctx.report
            .info(format!(
                "no write since {after} ({} table(s) compared)",
                judged.compared
            ))
            .await;
    }
    let written = &judged.written;
    ctx.report.output("clients", seen.len().to_string()).await;
    ctx.report
        .output(
            "written_tables",
            written
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
        .await;

    let untrusted = if judged.untrusted.is_empty() {
        String::new()
    } else if judged.by_content {
        format!(
            "{}: every table was compared with the copy's snapshot instead; ",
            judged.untrusted.join("; ")
        )
    } else {
        format!("{}; ", judged.untrusted.join("; "))
    };
    if !written.is_empty() {
        return Err(Outcome::failed(format!(
            "{untrusted}the database was written after {after} (those rows are not in the copy): {}",
            written
                .iter()
                .map(|(t, how)| format!("{t} ({how})"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !judged.untrusted.is_empty() && !judged.by_content {
        return Err(Outcome::failed(format!(
            "{untrusted}the counters cannot say whether a table was written since the baseline, and the baseline \
             holds no content to compare (a parallel db.copy's `source_baseline` does): the database cannot be \
             proven unused"
        )));
    }
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "no other client for {}{}{}",
            humantime::format_duration(window),
            if seen.is_empty() {
                String::new()
            } else {
                format!(" (after {} client(s) left)", seen.len())
            },
            match (&baseline, judged.by_content, judged.untrusted.is_empty()) {
                (None, _, _) => String::new(),
                (_, true, false) => format!(
                    ", no write since the copy ({}: every table compared with the copy's snapshot)",
                    judged.untrusted.join("; ")
                ),
                (_, true, true) => ", no write since the copy".to_string(),
                _ => ", no write since the baseline".to_string(),
            }
        )),
    })
}

/// What the guard found about writes.
#[derive(Debug, Default)]
struct Judged {
    /// Tables written after the copy, and how it shows.
    written: Vec<(String, String)>,
    /// Why the counters could not be compared, if they could not.
    untrusted: Vec<String>,
    compared: usize,
    /// Whether tables were judged by their content (the copy's figures), not by counters.
    by_content: bool,
}

/// Judges writes against the copy's whole baseline (see the module's comment).
async fn judge(
    ctx: &ActionContext,
    url: &DbUrl,
    client: &tokio_postgres::Client,
    before: &Baseline,
) -> Result<Judged, Outcome> {
    let now = baseline::read(client).await?;
    let untrusted = before.untrusted(&now);
    let mut candidates: BTreeMap<String, String> = BTreeMap::new();
    if untrusted.is_empty() {
        let applied = guard::applied_here(client).await?;
        for (table, how) in not_cutovers(
            ctx,
            written_since(&before.counters, &now.counters),
            &applied,
        )
        .await
        {
            candidates.insert(table, how);
        }
        for (table, node) in &now.filenodes {
            if before.filenodes.get(table).is_some_and(|was| was != node) {
                candidates
                    .entry(table.clone())
                    .or_insert_with(|| "its file was replaced (a TRUNCATE?)".to_string());
            }
        }
        for table in before.counters.keys() {
            if !now.counters.contains_key(table) {
                candidates.insert(table.clone(), "gone".to_string());
            }
        }
    } else {
        for reason in &untrusted {
            ctx.report.info(reason.clone()).await;
        }
        for table in now.counters.keys().chain(before.content.keys()) {
            candidates.insert(table.clone(), "every table compared".to_string());
        }
    }
    if before.content.is_empty() {
        return Ok(Judged {
            written: if untrusted.is_empty() {
                candidates.into_iter().collect()
            } else {
                Vec::new()
            },
            untrusted,
            compared: now.counters.len(),
            by_content: false,
        });
    }
    let tables = copied_columns(client).await?;
    let wanted: Vec<(u64, String)> = candidates
        .keys()
        .filter(|t| tables.contains_key(*t) && before.content.contains_key(*t))
        .map(|t| (0, t.clone()))
        .collect();
    if !wanted.is_empty() {
        ctx.report
            .info(format!(
                "comparing {} table(s) with what the copy read from its snapshot: {}",
                wanted.len(),
                candidates
                    .iter()
                    .filter(|(t, _)| before.content.contains_key(*t))
                    .take(5)
                    .map(|(t, why)| format!("{t} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await;
    }
    let sums = hash_tables(ctx, url, wanted, 2).await?;
    let mut written = Vec::new();
    for table in candidates.keys() {
        let copied = before.content.get(table);
        let now_sum = sums.get(table);
        match (copied, tables.contains_key(table)) {
            (Some(copied), true) => match now_sum {
                Some(sum) if sum == copied => {
                    ctx.report
                        .info(format!(
                            "{table}: as the copy read it ({} rows){}",
                            sum.rows,
                            if untrusted.is_empty() {
                                ": its counter moved for writes the copy's snapshot holds, published after the baseline was read"
                            } else {
                                ""
                            }
                        ))
                        .await;
                }
                Some(sum) if sum.rows != copied.rows => written.push((
                    table.clone(),
                    format!("{} rows now, {} in the copy", sum.rows, copied.rows),
                )),
                _ => written.push((
                    table.clone(),
                    format!(
                        "{} rows, as in the copy, but not the same rows",
                        copied.rows
                    ),
                )),
            },
            (Some(_), false) => written.push((table.clone(), "dropped since the copy".into())),
            // In the baseline's counters but not its content: a table the final catch-up
            // followed by key (its baseline holds content only for what it copied whole).
            (None, true) if before.counters.contains_key(table) => written.push((
                table.clone(),
                "written since the baseline (its write counter moved; the baseline holds no content of it to compare)".into(),
            )),
            (None, true) => written.push((table.clone(), "created since the copy".into())),
            // Not a table (a materialized view: derived data, refreshed on the target).
            (None, false) => {}
        }
    }
    Ok(Judged {
        written,
        untrusted,
        compared: candidates.len().max(now.counters.len()),
        by_content: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_or_new_counter_is_a_write() {
        let before: BTreeMap<String, i64> =
            [("public.a".to_string(), 5), ("public.b".to_string(), 7)].into();
        let now: BTreeMap<String, i64> = [
            ("public.a".to_string(), 5),
            ("public.b".to_string(), 9),
            ("public.c".to_string(), 1),
        ]
        .into();
        assert_eq!(
            written_since(&before, &now),
            vec![("public.b".to_string(), 2), ("public.c".to_string(), 1)]
        );
        assert!(written_since(&now, &now).is_empty());
    }
}
