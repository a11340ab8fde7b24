//! `db.capture`: the change log and its triggers on the source (`mode = "install"`), or all of
//! it taken away again (`mode = "remove"`).
//!
//! Install decides first, before it creates anything, which tables it can follow: a table
//! needs a primary key or a unique index over NOT NULL columns (the key the log records);
//! one without is refused, or with `without_key = "freeze"` listed in `whole_tables` (to be
//! copied whole inside the freeze). Large objects are refused: no trigger sees them. Then the
//! schema, the log and the trigger function (SECURITY DEFINER, so any role writing to a table
//! can log its change), then each table's triggers in a transaction of their own under a short
//! `lock_timeout`, retried: a busy table waits at most that long at a time, never the app
//! behind it. Everything is created `IF NOT EXISTS` or replaced: installing twice is harmless.
//!
//! The triggers record nothing in a transaction that set `cutover.applying` (every catch-up
//! transaction does, `SET LOCAL`): a capture on a catch-up's target — RDS's after the cutover,
//! Heroku's again after a way back — never logs the rows the catch-up itself brings, so the two
//! directions never feed each other, with no superuser and no `session_replication_role`.

use std::time::Duration;

use tokio_postgres::Client;

use super::catalog::{self, Catalog};
use super::locks::under_lock_timeout;
use super::{guard, schema_name, FUNCTION, LOG, ROW_TRIGGER, TRUNCATE_TRIGGER};
use crate::actions::db::common::{
    col, connect, count_large_objects, db_url, ident, literal, query, schema_exists, user_tables,
};
use crate::actions::db::connection;
use crate::actions::{parse_duration, ActionContext, Outcome};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    url: String,
    mode: String,
    schema: Option<String>,
    lock_timeout: Option<String>,
    retries: Option<u32>,
    without_key: Option<String>,
    large_objects: Option<String>,
    /// `mode = "remove"`: the target too (the guard `db.catchup` installed there).
    target: Option<String>,
    /// `mode = "install"`: follow only the tables this other database has too.
    like: Option<String>,
    /// `mode = "install"`: a catch-up guard's schema here, whose recorded writes the log adopts.
    adopt: Option<String>,
    ca_bundle: Option<String>,
}

/// A table the capture would follow, with its key columns (none: no usable key).
struct Followed {
    name: String,
    key: Vec<String>,
}

/// "refuse" (false) or "freeze" (true), for the parameter `name`.
fn refuse_or_freeze(value: Option<&str>, name: &str) -> Result<bool, Outcome> {
    match value.unwrap_or("refuse") {
        "refuse" => Ok(false),
        "freeze" => Ok(true),
        other => Err(Outcome::failed(format!(
            "`{name}` = {other:?}: give \"refuse\" or \"freeze\""
        ))),
    }
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let schema = schema_name(p.schema.as_deref())?;
    let url = db_url(&p.url, "url", p.ca_bundle.as_deref(), ctx)?;
    let client = connect(&url, "source").await?;
    let lock_timeout = parse_duration(
        p.lock_timeout.as_deref(),
        Duration::from_secs(2),
        "lock_timeout",
    )?;
    let retries = p.retries.unwrap_or(5);
    match p.mode.as_str() {
        "install" => {
            let freeze = refuse_or_freeze(p.without_key.as_deref(), "without_key")?;
            let large_objects = refuse_or_freeze(p.large_objects.as_deref(), "large_objects")?;
            let like = match p.like.as_deref() {
                Some(l) => {
                    let url = db_url(l, "like", p.ca_bundle.as_deref(), ctx)?;
                    Some(connect(&url, "like").await?)
                }
                None => None,
            };
            let adopt = p
                .adopt
                .as_deref()
                .map(|a| schema_name(Some(a)))
                .transpose()?;
            install(
                ctx,
                &client,
                &schema,
                (lock_timeout, retries),
                Unfollowed {
                    without_key: freeze,
                    large_objects,
                },
                like.as_ref(),
                adopt.as_deref(),
            )
            .await
        }
        "remove" => {
            let target = match p.target.as_deref() {
                Some(t) => {
                    let url = db_url(t, "target", p.ca_bundle.as_deref(), ctx)?;
                    Some(connect(&url, "target").await?)
                }
                None => None,
            };
            let removed = remove(ctx, &client, &schema, lock_timeout, retries).await?;
            let Some(target) = target else {
                return Ok(removed);
            };
            let guarded = guard::remove(ctx, &target, &schema, lock_timeout, retries).await?;
            Ok(Outcome::Succeeded {
                note: Some(format!(
                    "{}; on the target, {guarded}",
                    match removed {
                        Outcome::Succeeded { note } => note.unwrap_or_default(),
                        _ => String::new(),
                    }
                )),
            })
        }
        other => Err(Outcome::failed(format!(
            "`mode` = {other:?}: give \"install\" or \"remove\""
        ))),
    }
}

/// The change log and the trigger function. The function keys each row by the columns its
/// trigger names (`TG_ARGV`); an UPDATE that changes the key logs both keys.
fn log_sql(schema: &str) -> String {
    let s = ident(schema);
    let catalog = catalog::table_sql(schema);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.{LOG} ( \
             id bigserial PRIMARY KEY, \
             tbl text NOT NULL, \
             key jsonb, \
             op text NOT NULL, \
             xid bigint NOT NULL DEFAULT txid_current(), \
             at timestamptz NOT NULL DEFAULT clock_timestamp()); \
         CREATE INDEX IF NOT EXISTS {LOG}_xid ON {s}.{LOG} (xid); \
         {catalog} \
         CREATE OR REPLACE FUNCTION {s}.{FUNCTION}() RETURNS trigger \
         LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cutover$ \
         DECLARE \
             t text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME); \
             new_key jsonb; \
             old_key jsonb; \
         BEGIN \
             IF coalesce(current_setting('cutover.applying', true), '') = 'on' THEN \
                 RETURN NULL; \
             END IF; \
             IF TG_OP = 'TRUNCATE' THEN \
                 INSERT INTO {s}.{LOG} (tbl, op) VALUES (t, 'T'); \
                 RETURN NULL; \
             END IF; \
             IF TG_OP <> 'DELETE' THEN \
                 SELECT jsonb_object_agg(k, r -> k) INTO new_key \
                   FROM (SELECT to_jsonb(NEW) AS r) x, unnest(TG_ARGV) k; \
                 INSERT INTO {s}.{LOG} (tbl, key, op) VALUES (t, new_key, left(TG_OP, 1)); \
             END IF; \
             IF TG_OP <> 'INSERT' THEN \
                 SELECT jsonb_object_agg(k, r -> k) INTO old_key \
                   FROM (SELECT to_jsonb(OLD) AS r) x, unnest(TG_ARGV) k; \
                 IF old_key IS DISTINCT FROM new_key THEN \
                     INSERT INTO {s}.{LOG} (tbl, key, op) VALUES (t, old_key, 'D'); \
                 END IF; \
             END IF; \
             RETURN NULL; \
         END $cutover$; \
         REVOKE ALL ON FUNCTION {s}.{FUNCTION}() FROM PUBLIC;"
    )
}

/// A table's own row trigger function: it builds the key from the key columns alone
/// (`jsonb_build_object('id', NEW."id")`), never the whole row — a row's other columns (a
/// 1536-dimension vector, a large jsonb) cost nothing to log. An UPDATE that changes the key
/// logs the old key as deleted. Returns its name and its `CREATE OR REPLACE`.
fn row_function(schema: &str, table: &str, key: &[String]) -> (String, String) {
    let name = format!(
        "{FUNCTION}_{:016x}",
        xxhash_rust::xxh3::xxh3_64(table.as_bytes())
    );
    let s = ident(schema);
    let pairs = |row: &str| -> String {
        key.iter()
            .map(|k| format!("{}, {row}.{}", literal(k), ident(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cols = |row: &str| -> String {
        key.iter()
            .map(|k| format!("{row}.{}", ident(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let t = literal(table);
    let body = format!(
        "CREATE OR REPLACE FUNCTION {s}.{name}() RETURNS trigger \
         LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cutover$ \
         BEGIN \
             IF coalesce(current_setting('cutover.applying', true), '') = 'on' THEN \
                 RETURN NULL; \
             END IF; \
             IF TG_OP = 'INSERT' THEN \
                 INSERT INTO {s}.{LOG} (tbl, key, op) VALUES ({t}, jsonb_build_object({new}), 'I'); \
             ELSIF TG_OP = 'UPDATE' THEN \
                 INSERT INTO {s}.{LOG} (tbl, key, op) VALUES ({t}, jsonb_build_object({new}), 'U'); \
                 IF ROW({old_cols}) IS DISTINCT FROM ROW({new_cols}) THEN \
                     INSERT INTO {s}.{LOG} (tbl, key, op) VALUES ({t}, jsonb_build_object({old}), 'D'); \
                 END IF; \
             ELSE \
                 INSERT INTO {s}.{LOG} (tbl, key, op) VALUES ({t}, jsonb_build_object({old}), 'D'); \
             END IF; \
             RETURN NULL; \
         END $cutover$; \
         REVOKE ALL ON FUNCTION {s}.{name}() FROM PUBLIC;",
        new = pairs("NEW"),
        old = pairs("OLD"),
        new_cols = cols("NEW"),
        old_cols = cols("OLD"),
    );
    (name, body)
}

/// What becomes of what no trigger can follow: copied whole inside the freeze (`true`), or
/// refused.
struct Unfollowed {
    without_key: bool,
    large_objects: bool,
}

async fn install(
    ctx: &ActionContext,
    client: &Client,
    schema: &str,
    (lock_timeout, retries): (Duration, u32),
    unfollowed: Unfollowed,
    like: Option<&Client>,
    adopt: Option<&str>,
) -> Result<Outcome, Outcome> {
    let (freeze, large_objects_freeze) = (unfollowed.without_key, unfollowed.large_objects);
    // What the capture cannot follow, decided before anything is created.
    let large_objects = count_large_objects(client).await?;
    if large_objects > 0 && !large_objects_freeze {
        return Err(Outcome::failed(format!(
            "the source holds {large_objects} large object(s): no trigger sees a large object change, so the capture cannot follow them (nothing was installed; set large_objects = \"freeze\" to copy them whole inside the freeze)"
        )));
    }
    if large_objects > 0 {
        ctx.report
            .info(format!(
                "{large_objects} large object(s): not followed, to be copied whole inside the freeze"
            ))
            .await;
    }
    let mut recorded = Catalog {
        tables: catalog::read(client, schema).await?,
        large_objects: if large_objects_freeze {
            "freeze"
        } else {
            "refuse"
        }
        .to_string(),
        left_out: Vec::new(),
    };
    if let Some(like) = like {
        let there: std::collections::BTreeSet<String> =
            user_tables(like).await?.into_iter().collect();
        recorded.left_out = recorded
            .tables
            .keys()
            .filter(|t| !there.contains(*t))
            .cloned()
            .collect();
        for table in &recorded.left_out {
            recorded.tables.remove(table);
        }
        if !recorded.left_out.is_empty() {
            ctx.report
                .info(format!(
                    "left out, as the other database (`like`) has no such table: {} — their changes are not logged, and a catch-up from here does not carry them",
                    recorded.left_out.join(", ")
                ))
                .await;
        }
    }
    let (followed, keyless): (Vec<Followed>, Vec<Followed>) = recorded
        .tables
        .iter()
        .map(|(name, t)| Followed {
            name: name.clone(),
            key: t.key.clone(),
        })
        .partition(|t| !t.key.is_empty());
    let keyless: Vec<String> = keyless.into_iter().map(|t| t.name).collect();
    if !keyless.is_empty() && !freeze {
        return Err(Outcome::failed(format!(
            "{} table(s) have no primary key nor a unique key over NOT NULL columns, so no change of theirs can be named: {} (nothing was installed; add a key, or set without_key = \"freeze\" to copy them whole inside the freeze)",
            keyless.len(),
            keyless.join(", ")
        )));
    }
    if !keyless.is_empty() {
        ctx.report
            .info(format!(
                "not followed, to be copied whole inside the freeze (no key): {}",
                keyless.join(", ")
            ))
            .await;
    }

    client.batch_execute(&log_sql(schema)).await.map_err(|e| {
        Outcome::failed(format!(
            "creating the change log in schema {schema}: {}",
            connection::explain(&e)
        ))
    })?;
    for name in &keyless {
        if let Some(t) = recorded.tables.get_mut(name) {
            t.whole = true;
        }
    }
    // What is followed, for the final catch-up to compare the catalogs with.
    catalog::record(client, schema, &recorded).await?;
    // A catch-up's guard kept here (`adopt`): what it recorded so far heads the log, before
    // any trigger of the log's goes in; what it records while they go in follows, once they
    // are all in (in both, then: applied twice, harmlessly); then the guard goes — the log
    // records everything from there.
    let followed_names: Vec<String> = followed.iter().map(|t| t.name.clone()).collect();
    let adoption = match adopt {
        Some(g) if guard_kept(client, g).await? => {
            Some((g, adopt_after(client, schema, g, &followed_names, 0).await?))
        }
        Some(g) => {
            ctx.report
                .info(format!(
                    "no guard kept in {g} to adopt: nothing recorded this database's writes before this capture"
                ))
                .await;
            None
        }
        None => None,
    };
    let s = ident(schema);
    let total = followed.len() as u64;
    let mut slowest = (String::new(), Duration::ZERO);
    for (done, table) in followed.iter().enumerate() {
        let (function, body) = row_function(schema, &table.name, &table.key);
        let sql = format!(
            "{body} \
             DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {t}; \
             DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {t}; \
             CREATE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {t} \
                 FOR EACH ROW EXECUTE FUNCTION {s}.{function}(); \
             CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {t} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {s}.{FUNCTION}();",
            t = table.name,
        );
        let (waited, attempts) =
            under_lock_timeout(ctx, client, &sql, lock_timeout, retries, &table.name).await?;
        ctx.report
            .info(format!(
                "{}: followed by ({}), its lock waited {} ms ({attempts} attempt(s))",
                table.name,
                table.key.join(", "),
                waited.as_millis()
            ))
            .await;
        if waited > slowest.1 {
            slowest = (table.name.clone(), waited);
        }
        ctx.report
            .progress(done as u64 + 1, Some(total), "tables", None)
            .await;
    }
    let rows = query(
        client,
        &format!("SELECT coalesce(max(id), 0)::bigint FROM {s}.{LOG}"),
        "reading the change log's position",
    )
    .await?;
    let installed_at: i64 = match rows.first() {
        Some(row) => col(row, 0)?,
        None => 0,
    };
    ctx.report.output("schema", schema).await;
    ctx.report
        .output("tables", followed.len().to_string())
        .await;
    ctx.report
        .output(
            "whole_tables",
            serde_json::to_string(&keyless).unwrap_or_default(),
        )
        .await;
    ctx.report
        .output("installed_at", installed_at.to_string())
        .await;
    let adopted = match adoption {
        Some((g, (first, upto))) => {
            let (then, _) = adopt_after(client, schema, g, &followed_names, upto).await?;
            let others = not_adopted(client, g, &followed_names).await?;
            let removed = guard::remove(ctx, client, g, lock_timeout, retries).await?;
            ctx.report
                .info(format!(
                    "{} write(s) the guard in {g} recorded here since the last catch-up's check adopted into the log ({first} before its triggers, {then} while they went in){}; {removed}",
                    first + then,
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; not adopted (on tables the log does not follow — copied whole, or left out — or without a key): {}",
                            others.join(", ")
                        )
                    }
                ))
                .await;
            format!("; {} earlier write(s) adopted from {g}", first + then)
        }
        None => String::new(),
    };
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{} table(s) followed into {schema}.{LOG}{}{}{adopted}; the longest lock wait {} ms ({})",
            followed.len(),
            if keyless.is_empty() {
                String::new()
            } else {
                format!(", {} to be copied whole in the freeze", keyless.len())
            },
            if recorded.left_out.is_empty() {
                String::new()
            } else {
                format!(
                    "; left out (not in the other database): {}",
                    recorded.left_out.join(", ")
                )
            },
            slowest.1.as_millis(),
            if slowest.0.is_empty() {
                "none"
            } else {
                &slowest.0
            }
        )),
    })
}

/// Whether a catch-up's guard keeps its record in `guard_schema` here.
async fn guard_kept(client: &Client, guard_schema: &str) -> Result<bool, Outcome> {
    let exists = query(
        client,
        &format!(
            "SELECT to_regclass({})::text IS NOT NULL",
            literal(&format!("{}.{}", ident(guard_schema), super::GUARD_LOG))
        ),
        "looking for the guard's record",
    )
    .await?;
    match exists.first() {
        Some(row) => col(row, 0),
        None => Ok(false),
    }
}

/// The guard's recorded writes after id `after` (up to its last one now) on the followed
/// tables — by key, or a TRUNCATE — put in the log in their order; returns how many, and the
/// last id read.
async fn adopt_after(
    client: &Client,
    schema: &str,
    guard_schema: &str,
    followed: &[String],
    after: i64,
) -> Result<(u64, i64), Outcome> {
    let g = ident(guard_schema);
    let upto = query(
        client,
        &format!(
            "SELECT coalesce(max(id), 0)::bigint FROM {g}.{}",
            super::GUARD_LOG
        ),
        "reading the guard's record",
    )
    .await?;
    let upto: i64 = match upto.first() {
        Some(row) => col(row, 0)?,
        None => after,
    };
    let moved = client
        .execute(
            &format!(
                "INSERT INTO {}.{LOG} (tbl, key, op) \
                 SELECT tbl, key, op FROM {g}.{} \
                  WHERE id > $1 AND id <= $2 AND tbl = ANY($3) AND (key IS NOT NULL OR op = 'T') \
                  ORDER BY id",
                ident(schema),
                super::GUARD_LOG
            ),
            &[&after, &upto, &followed],
        )
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "adopting the guard's recorded writes: {}",
                connection::explain(&e)
            ))
        })?;
    Ok((moved, upto.max(after)))
}

/// What the guard recorded that the log does not take: writes on tables it does not follow
/// (copied whole, or left out), or without a key; for the step's words.
async fn not_adopted(
    client: &Client,
    guard_schema: &str,
    followed: &[String],
) -> Result<Vec<String>, Outcome> {
    let rows = client
        .query(
            &format!(
                "SELECT tbl || ' (' || count(*) || ')' FROM {}.{} \
                  WHERE NOT (tbl = ANY($1)) OR (key IS NULL AND op <> 'T') GROUP BY tbl ORDER BY tbl",
                ident(guard_schema),
                super::GUARD_LOG
            ),
            &[&followed],
        )
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "reading the guard's other records: {}",
                connection::explain(&e)
            ))
        })?;
    rows.iter().map(|r| col(r, 0)).collect()
}

/// What of the capture the catalogs still hold: its schema, triggers calling its function or
/// carrying its names, and its function.
async fn leftovers(client: &Client, schema: &str) -> Result<Vec<String>, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = '{schema}' \
             UNION ALL \
             SELECT format('trigger %I on %s', t.tgname, t.tgrelid::regclass) FROM pg_trigger t \
              WHERE NOT t.tgisinternal AND (t.tgname IN ('{ROW_TRIGGER}', '{TRUNCATE_TRIGGER}') \
                 OR t.tgfoid IN (SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                                  WHERE n.nspname = '{schema}')) \
             UNION ALL \
             SELECT 'function ' || p.oid::regprocedure FROM pg_proc p \
               JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '{schema}'"
        ),
        "looking for what the capture left",
    )
    .await?;
    rows.iter().map(|r| col(r, 0)).collect()
}

async fn remove(
    ctx: &ActionContext,
    client: &Client,
    schema: &str,
    lock_timeout: Duration,
    retries: u32,
) -> Result<Outcome, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT DISTINCT t.tgrelid::regclass::text FROM pg_trigger t \
              WHERE NOT t.tgisinternal AND t.tgname IN ('{ROW_TRIGGER}', '{TRUNCATE_TRIGGER}') ORDER BY 1"
        ),
        "listing the capture's triggers",
    )
    .await?;
    let tables: Vec<String> = rows.iter().map(|r| col(r, 0)).collect::<Result<_, _>>()?;
    let had_schema = schema_exists(client, schema).await?;
    for table in &tables {
        let sql = format!(
            "DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {table}; \
             DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {table};"
        );
        let (waited, attempts) =
            under_lock_timeout(ctx, client, &sql, lock_timeout, retries, table).await?;
        ctx.report
            .info(format!(
                "{table}: triggers dropped, its lock waited {} ms ({attempts} attempt(s))",
                waited.as_millis()
            ))
            .await;
    }
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema)))
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "dropping schema {schema}: {}",
                connection::explain(&e)
            ))
        })?;
    let left = leftovers(client, schema).await?;
    if !left.is_empty() {
        return Err(Outcome::failed(format!(
            "the capture is not all gone: {}",
            left.join(", ")
        )));
    }
    let note = if tables.is_empty() && !had_schema {
        format!("nothing to remove: the source held no capture (no trigger of its, no schema {schema}), as its catalogs show")
    } else {
        format!(
            "capture removed from {} table(s); the catalogs hold no schema {schema}, no trigger of its and no function of its",
            tables.len()
        )
    };
    Ok(Outcome::Succeeded { note: Some(note) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_function_logs_keys_never_rows() {
        let sql = log_sql("cutover_capture");
        assert!(sql.contains("INSERT INTO \"cutover_capture\".changes (tbl, key, op)"));
        assert!(sql.contains("SECURITY DEFINER"));
        // Only the key columns the trigger names are kept of the row.
        assert!(sql.contains("jsonb_object_agg(k, r -> k)"));
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn a_tables_row_function_builds_the_key_alone() {
        let (name, body) = row_function(
            "cutover_capture",
            "public.orders",
            &["tenant".to_string(), "id".to_string()],
        );
        assert!(name.starts_with("record_change_"), "{name}");
        assert_eq!(
            row_function("cutover_capture", "public.orders", &[]).0,
            name
        );
        assert_ne!(row_function("cutover_capture", "public.other", &[]).0, name);
        assert!(body.contains("jsonb_build_object('tenant', NEW.\"tenant\", 'id', NEW.\"id\")"));
        assert!(body.contains(
            "IF ROW(OLD.\"tenant\", OLD.\"id\") IS DISTINCT FROM ROW(NEW.\"tenant\", NEW.\"id\")"
        ));
        assert!(!body.contains("to_jsonb(NEW)"));
        assert!(body.contains("VALUES ('public.orders', "));
    }
}
