//! `db.sql`: a statement or a file run against a database; what it returns goes to the log.
//! May import: `connection`, `common`.

use tokio_postgres::SimpleQueryMessage;

use crate::actions::db::common::{connect, db_url};
use crate::actions::db::connection;
use crate::actions::{ActionContext, Outcome};

/// Rows shown per statement; the count is always given.
const SHOWN_ROWS: usize = 50;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    sql: Option<String>,
    file: Option<String>,
    url: String,
    ca_bundle: Option<String>,
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let text = match (&p.sql, &p.file) {
        (Some(sql), None) => sql.clone(),
        (None, Some(file)) => {
            let path = ctx.work_dir.join(file);
            tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| Outcome::failed(format!("cannot read {}: {e}", path.display())))?
        }
        _ => {
            return Err(Outcome::failed(
                "give exactly one of `sql` (the statements) or `file` (a .sql file)",
            ))
        }
    };
    let url = db_url(&p.url, "url", p.ca_bundle.as_deref(), ctx)?;
    let client = connect(&url, "database").await?;
    ctx.report.info(format!("on {}", url.display())).await;
    let messages = tokio::select! {
        m = client.simple_query(&text) => m,
        () = ctx.cancel.cancelled() => {
            // Ask the server to stop the statement too, not only stop waiting for it.
            let _ = client.cancel_token().cancel_query(tokio_postgres::NoTls).await;
            return Err(Outcome::Cancelled);
        }
    }
    .map_err(|e| Outcome::failed(connection::explain(&e)))?;
    let mut rows_total = 0usize;
    let mut shown = 0usize;
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                rows_total += 1;
                if shown == 0 {
                    let header: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
                    ctx.report.info(header.join("\t")).await;
                }
                if shown < SHOWN_ROWS {
                    let values: Vec<&str> = (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL"))
                        .collect();
                    ctx.report.info(values.join("\t")).await;
                }
                shown += 1;
            }
            SimpleQueryMessage::CommandComplete(n) => {
                if shown > SHOWN_ROWS {
                    ctx.report
                        .info(format!("… {} more row(s)", shown - SHOWN_ROWS))
                        .await;
                }
                ctx.report.info(format!("({n} row(s))")).await;
                shown = 0;
            }
            _ => {}
        }
    }
    ctx.report.output("rows", rows_total.to_string()).await;
    Ok(Outcome::Succeeded { note: None })
}
