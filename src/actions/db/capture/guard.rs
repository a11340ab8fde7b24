//! The target's guard: writes on the target by anyone but the catch-up (the app's tasks
//! already on RDS, a hand edit) are recorded there, so the final catch-up can name them.
//!
//! The first `db.catchup` installs, in the capture's schema on the TARGET, a log of such writes
//! and on every table the capture knows a row trigger and a TRUNCATE trigger that record the
//! table and the key. They record nothing when `cutover.applying` is `on` — the catch-up sets it
//! LOCAL in each of its own transactions — and, as ordinary triggers, do not fire at all in a
//! session with `session_replication_role = replica` (the catch-up's, where the target lets
//! it). The final catch-up fails naming every table such a write touched, and takes the guard
//! away once it has passed; `db.capture mode = "remove"` with `target` takes it away too.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::Client;

use super::catalog::Catalog;
use super::locks::under_lock_timeout;
use super::{GUARD_FUNCTION, GUARD_LOG, GUARD_ROW, GUARD_TALLY, GUARD_TRUNCATE};
use crate::actions::db::common::{col, ident, literal, query, schema_exists};
use crate::actions::db::connection;
use crate::actions::{ActionContext, Outcome};

fn guard_sql(schema: &str) -> String {
    let s = ident(schema);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.{GUARD_LOG} ( \
             id bigserial PRIMARY KEY, \
             tbl text NOT NULL, \
             key jsonb, \
             op text NOT NULL, \
             who text NOT NULL DEFAULT session_user, \
             at timestamptz NOT NULL DEFAULT clock_timestamp()); \
         CREATE TABLE IF NOT EXISTS {s}.{GUARD_TALLY} ( \
             tbl text PRIMARY KEY, \
             n bigint NOT NULL); \
         CREATE OR REPLACE FUNCTION {s}.{GUARD_FUNCTION}() RETURNS trigger \
         LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cutover$ \
         DECLARE \
             t text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME); \
             r jsonb; \
             kv jsonb; \
             old_kv jsonb; \
         BEGIN \
             IF coalesce(current_setting('cutover.applying', true), '') = 'on' THEN \
                 RETURN NULL; \
             END IF; \
             IF TG_OP = 'TRUNCATE' THEN \
                 INSERT INTO {s}.{GUARD_LOG} (tbl, op) VALUES (t, 'T'); \
                 RETURN NULL; \
             END IF; \
             IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF; \
             SELECT jsonb_object_agg(a, r -> a) INTO kv FROM unnest(TG_ARGV) a; \
             INSERT INTO {s}.{GUARD_LOG} (tbl, key, op) VALUES (t, kv, left(TG_OP, 1)); \
             IF TG_OP = 'UPDATE' THEN \
                 r := to_jsonb(OLD); \
                 SELECT jsonb_object_agg(a, r -> a) INTO old_kv FROM unnest(TG_ARGV) a; \
                 IF old_kv IS DISTINCT FROM kv THEN \
                     INSERT INTO {s}.{GUARD_LOG} (tbl, key, op) VALUES (t, old_kv, 'D'); \
                 END IF; \
             END IF; \
             RETURN NULL; \
         END $cutover$; \
         REVOKE ALL ON FUNCTION {s}.{GUARD_FUNCTION}() FROM PUBLIC;"
    )
}

/// The rows each table has had changed by this session and not yet published to the write
/// counters (`pg_stat_xact_user_tables`: since PostgreSQL 15 that is this transaction's changes
/// *and* earlier transactions' still pending, so a transaction's own are the difference
/// between its start and its end; nothing is published inside a transaction).
pub async fn pending_counts(
    client: &impl tokio_postgres::GenericClient,
) -> Result<BTreeMap<String, i64>, Outcome> {
    let rows = client
        .query(
            "SELECT format('%I.%I', schemaname, relname), (n_tup_ins + n_tup_upd + n_tup_del)::bigint \
               FROM pg_catalog.pg_stat_xact_user_tables WHERE schemaname NOT LIKE 'cutover\\_capture%'",
            &[],
        )
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "reading the target transaction's own row counts: {}",
                connection::explain(&e)
            ))
        })?;
    rows.iter()
        .map(|r| Ok((col::<String>(r, 0)?, col::<i64>(r, 1)?)))
        .collect()
}

/// On a target whose foreign keys stay on (Heroku, the way back): right before one of the
/// catch-up's transactions commits, the rows it changed per table (`pending_counts` now, less
/// `before`, read as it began: PostgreSQL's own counting, the one `db.idle` reads) added to the
/// tally in the same transaction — so the tally holds exactly the committed batches' writes (a
/// killed batch's are in the counters but not the tally: `db.idle` then errs on the safe side).
pub async fn add_to_tally(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    before: &BTreeMap<String, i64>,
) -> Result<(), Outcome> {
    let now = pending_counts(client).await?;
    let (tables, counts): (Vec<String>, Vec<i64>) = now
        .into_iter()
        .filter_map(|(table, n)| {
            let own = n - before.get(&table).copied().unwrap_or(0);
            (own > 0).then_some((table, own))
        })
        .unzip();
    if tables.is_empty() {
        return Ok(());
    }
    client
        .execute(
            &format!(
                "INSERT INTO {}.{GUARD_TALLY} AS a (tbl, n) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (tbl) DO UPDATE SET n = a.n + EXCLUDED.n",
                ident(schema)
            ),
            &[&tables, &counts],
        )
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "counting the catch-up's own writes on the target: {}",
                connection::explain(&e)
            ))
        })?;
    Ok(())
}

/// What cutover's own catch-ups changed on this database, per table: the tallies of every
/// guard on it (see `tally_statement`). Empty where there is none.
pub async fn applied_here(client: &Client) -> Result<BTreeMap<String, i64>, Outcome> {
    let schemas = query(
        client,
        &format!(
            "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relname = '{GUARD_TALLY}' AND c.relkind = 'r' AND n.nspname LIKE 'cutover\\_capture%' ORDER BY 1"
        ),
        "looking for cutover's own tally of the rows its catch-ups wrote",
    )
    .await?;
    let mut out = BTreeMap::new();
    for schema in &schemas {
        let schema: String = col(schema, 0)?;
        let rows = query(
            client,
            &format!("SELECT tbl, n FROM {}.{GUARD_TALLY}", ident(&schema)),
            "reading cutover's own tally of the rows its catch-ups wrote",
        )
        .await?;
        for row in &rows {
            *out.entry(col::<String>(row, 0)?).or_insert(0) += col::<i64>(row, 1)?;
        }
    }
    Ok(out)
}

/// The tables of the target that carry the guard.
async fn guarded(target: &Client) -> Result<Vec<String>, Outcome> {
    let rows = query(
        target,
        &format!(
            "SELECT DISTINCT format('%I.%I', n.nspname, c.relname) FROM pg_trigger t \
               JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE NOT t.tgisinternal AND t.tgname = '{GUARD_ROW}' ORDER BY 1"
        ),
        "listing the target's guarded tables",
    )
    .await?;
    rows.iter().map(|r| col(r, 0)).collect()
}

/// Puts the guard on every table of `catalog` the target does not guard yet; returns how many
/// tables it guards now.
pub async fn install(
    ctx: &ActionContext,
    target: &Client,
    schema: &str,
    catalog: &Catalog,
    lock_timeout: Duration,
    retries: u32,
) -> Result<usize, Outcome> {
    let already = guarded(target).await?;
    let missing: Vec<(&String, &Vec<String>)> = catalog
        .tables
        .iter()
        .filter(|(name, _)| !already.contains(name))
        .map(|(name, t)| (name, &t.key))
        .collect();
    if missing.is_empty() {
        return Ok(already.len());
    }
    target
        .batch_execute(&guard_sql(schema))
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "creating the target's guard in schema {schema}: {}",
                connection::explain(&e)
            ))
        })?;
    let s = ident(schema);
    for (name, key) in &missing {
        let args: Vec<String> = key.iter().map(|k| literal(k)).collect();
        let sql = format!(
            "DROP TRIGGER IF EXISTS {GUARD_ROW} ON {name}; \
             DROP TRIGGER IF EXISTS {GUARD_TRUNCATE} ON {name}; \
             CREATE TRIGGER {GUARD_ROW} AFTER INSERT OR UPDATE OR DELETE ON {name} \
                 FOR EACH ROW EXECUTE FUNCTION {s}.{GUARD_FUNCTION}({args}); \
             CREATE TRIGGER {GUARD_TRUNCATE} AFTER TRUNCATE ON {name} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {s}.{GUARD_FUNCTION}();",
            args = args.join(", ")
        );
        under_lock_timeout(ctx, target, &sql, lock_timeout, retries, name).await?;
    }
    ctx.report
        .info(format!(
            "the target's guard is on {} more table(s): a write there by anyone but the catch-up is recorded in {schema}.{GUARD_LOG}",
            missing.len()
        ))
        .await;
    Ok(already.len() + missing.len())
}

/// The writes the guard recorded on the target, per table (table, changes).
pub async fn writes(target: &Client, schema: &str) -> Result<Vec<(String, i64)>, Outcome> {
    let exists = query(
        target,
        &format!("SELECT to_regclass('{schema}.{GUARD_LOG}') IS NOT NULL"),
        "looking for the target's guard",
    )
    .await?;
    if !exists
        .first()
        .map(|r| col::<bool>(r, 0))
        .transpose()?
        .unwrap_or(false)
    {
        return Ok(Vec::new());
    }
    let rows = query(
        target,
        &format!(
            "SELECT tbl, count(*) FROM {}.{GUARD_LOG} GROUP BY tbl ORDER BY 1",
            ident(schema)
        ),
        "reading the target's guard",
    )
    .await?;
    rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
}

/// The writes the guard recorded on the target: (id, table, key; none for a TRUNCATE).
pub async fn entries(
    target: &Client,
    schema: &str,
) -> Result<Vec<(i64, String, Option<String>)>, Outcome> {
    let rows = query(
        target,
        &format!(
            "SELECT id, tbl, key::text FROM {}.{GUARD_LOG} ORDER BY id",
            ident(schema)
        ),
        "reading the target's guard",
    )
    .await?;
    rows.iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
        .collect()
}

/// Takes recorded writes off the target's record.
pub async fn forget(target: &Client, schema: &str, ids: &[i64]) -> Result<(), Outcome> {
    target
        .execute(
            &format!(
                "DELETE FROM {}.{GUARD_LOG} WHERE id = ANY($1)",
                ident(schema)
            ),
            &[&ids],
        )
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "clearing the target's guard: {}",
                connection::explain(&e)
            ))
        })?;
    Ok(())
}

/// What of the guard the target's catalogs still hold.
pub async fn leftovers(target: &Client, schema: &str) -> Result<Vec<String>, Outcome> {
    let rows = query(
        target,
        &format!(
            "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = '{schema}' \
             UNION ALL \
             SELECT format('trigger %I on %s', t.tgname, t.tgrelid::regclass) FROM pg_trigger t \
              WHERE NOT t.tgisinternal AND t.tgname IN ('{GUARD_ROW}', '{GUARD_TRUNCATE}')"
        ),
        "looking for what the guard left on the target",
    )
    .await?;
    rows.iter().map(|r| col(r, 0)).collect()
}

/// Takes the guard away from the target and proves it gone; says what it did.
pub async fn remove(
    ctx: &ActionContext,
    target: &Client,
    schema: &str,
    lock_timeout: Duration,
    retries: u32,
) -> Result<String, Outcome> {
    let tables = guarded(target).await?;
    let had_schema = schema_exists(target, schema).await?;
    for table in &tables {
        let sql = format!(
            "DROP TRIGGER IF EXISTS {GUARD_ROW} ON {table}; \
             DROP TRIGGER IF EXISTS {GUARD_TRUNCATE} ON {table};"
        );
        under_lock_timeout(ctx, target, &sql, lock_timeout, retries, table).await?;
    }
    target
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema)))
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "dropping the target's schema {schema}: {}",
                connection::explain(&e)
            ))
        })?;
    let left = leftovers(target, schema).await?;
    if !left.is_empty() {
        return Err(Outcome::failed(format!(
            "the target's guard is not all gone: {}",
            left.join(", ")
        )));
    }
    if tables.is_empty() && !had_schema {
        return Ok(format!(
            "no guard to remove on the target (no guard trigger, no schema {schema}), as its catalogs show"
        ));
    }
    Ok(format!(
        "the guard removed from {} table(s); the target's catalogs hold no schema {schema} and no guard trigger",
        tables.len()
    ))
}
