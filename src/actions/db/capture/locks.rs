//! A catalog change on a table the app uses, under a short `lock_timeout`, retried: a busy
//! table waits at most that long at a time, never the app behind it.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::actions::db::connection;
use crate::actions::{ActionContext, Outcome};

/// Runs `sql` in a transaction of its own under `lock_timeout`, retried when a lock was not
/// granted in time; returns how long it waited in all and how many attempts it took.
pub async fn under_lock_timeout(
    ctx: &ActionContext,
    client: &Client,
    sql: &str,
    lock_timeout: Duration,
    retries: u32,
    table: &str,
) -> Result<(Duration, u32), Outcome> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let text = format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'; {sql} COMMIT;",
            lock_timeout.as_millis().max(1)
        );
        match client.batch_execute(&text).await {
            Ok(()) => return Ok((started.elapsed(), attempt)),
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                let timed_out = e.as_db_error().is_some_and(|d| d.code().code() == "55P03");
                if !timed_out || attempt > retries {
                    return Err(Outcome::failed(format!(
                        "{table}: {} (after {attempt} attempt(s), {} ms waiting)",
                        connection::explain(&e),
                        started.elapsed().as_millis()
                    )));
                }
                ctx.report
                    .info(format!(
                        "{table}: its lock was not granted within {} ms (attempt {attempt}); trying again",
                        lock_timeout.as_millis()
                    ))
                    .await;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
}
