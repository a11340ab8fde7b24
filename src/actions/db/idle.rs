//! `db.idle`: the guard before a database is deleted. For a whole window, no client but this
//! one may be connected to it (`pg_stat_activity`; clients that are going away — a dyno just
//! scaled down — get until the deadline to leave, and the window starts again after the last
//! one is seen), and no table may have been written since a baseline of write counters
//! (`pg_stat_user_tables`, recorded by `db.copy` right before its dump). A client is named by
//! application, address, user and since when — never by what it is running, which may hold
//! data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{col, connect, db_url, query, write_counters};
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

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let url = db_url(&p.url, "url", p.ca_bundle.as_deref(), ctx)?;
    let window = parse_duration(p.window.as_deref(), Duration::from_secs(60), "window")?;
    let deadline = parse_duration(p.deadline.as_deref(), window * 3, "deadline")?.max(window);
    let baseline: Option<BTreeMap<String, i64>> = match p.baseline.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            Outcome::failed(format!(
                "`baseline` is not a table of write counters (as db.copy's `source_writes`): {e}"
            ))
        })?),
    };
    let ignored: BTreeSet<&str> = p.ignore_applications.iter().map(String::as_str).collect();
    let client = connect(&url, "database").await?;
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

    let written = match &baseline {
        Some(before) => {
            let now = write_counters(&client).await?;
            let written = written_since(before, &now);
            for (table, rows) in &written {
                ctx.report
                    .info(format!(
                        "written since the baseline: {table} ({rows} row change(s))"
                    ))
                    .await;
            }
            if written.is_empty() {
                ctx.report
                    .info(format!(
                        "no write since the baseline ({} table(s) compared)",
                        now.len()
                    ))
                    .await;
            }
            written
        }
        None => {
            ctx.report
                .info("no baseline given: writes are not compared")
                .await;
            Vec::new()
        }
    };
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

    if !written.is_empty() {
        return Err(Outcome::failed(format!(
            "the database was written after the baseline (those rows are not in the copy): {}",
            written
                .iter()
                .map(|(t, n)| format!("{t} ({n} row change(s))"))
                .collect::<Vec<_>>()
                .join(", ")
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
            if baseline.is_some() {
                ", no write since the baseline"
            } else {
                ""
            }
        )),
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
