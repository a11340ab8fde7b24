//! The database move (Heroku Postgres → RDS): `db.preflight`, `db.extensions`, `db.copy`,
//! `db.verify` and `db.sql`. Connections come from `postgres://` URLs (usually secrets, read
//! right before the step runs, so a rotated Heroku credential is picked up); `pg_dump` and
//! `pg_restore` get theirs through the environment, never on a command line.

mod connection;
mod copy;
mod extensions;
mod guards;
mod preflight;
mod sql;
mod tools;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;

pub use connection::{tls_client_config, DbUrl, TlsMode};
pub use verify::{TableReport, VerifyReport};

use super::{Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

const SOURCE: ParamSpec = ParamSpec::required(
    "source",
    ParamType::String,
    "source database URL (Heroku), usually ${secret.HEROKU_DATABASE_URL}",
);
const TARGET: ParamSpec = ParamSpec::required(
    "target",
    ParamType::String,
    "target database URL (RDS), usually ${secret.RDS_DATABASE_URL}",
);
const CA_BUNDLE: ParamSpec = ParamSpec::optional(
    "ca_bundle",
    ParamType::String,
    "CA certificates (PEM) for sslmode=verify-full, e.g. the RDS global bundle",
);
const BIN_DIR: ParamSpec = ParamSpec::optional(
    "bin_dir",
    ParamType::String,
    "directory holding pg_dump and pg_restore (default, or \"\": PATH)",
);

static PREFLIGHT: ActionSchema = ActionSchema {
    kind: "db.preflight",
    summary: "checks both databases and the local pg_dump/pg_restore before the move",
    params: &[
        SOURCE,
        TARGET,
        CA_BUNDLE,
        BIN_DIR,
        ParamSpec::optional(
            "warn_size_gb",
            ParamType::Integer,
            "warn when the source is larger (20: Heroku backups stop being suitable)",
        ),
        ParamSpec::optional(
            "long_transaction",
            ParamType::Duration,
            "a source transaction open longer than this is reported (5m)",
        ),
        ParamSpec::optional(
            "jobs",
            ParamType::Integer,
            "connections the copy will open on the target (1)",
        ),
        ParamSpec::optional(
            "maintenance_work_mem",
            ParamType::String,
            "the copy's, for the sample index builds (\"1GB\", db.copy's default)",
        ),
        ParamSpec::optional(
            "index_sample_rows",
            ParamType::Integer,
            "rows sampled per expensive index (HNSW, IVFFlat, GIN, GiST) to time its build on the target (4000; 0: none)",
        ),
    ],
    outputs: &[
        "source_version",
        "target_version",
        "source_bytes",
        "read_mib_s",
        "write_mib_s",
        "predicted_copy_secs",
        "index_builds",
    ],
    needs_operator_note: false,
};

static EXTENSIONS: ActionSchema = ActionSchema {
    kind: "db.extensions",
    summary:
        "creates on the target every extension the source has (vector first) and compares versions",
    params: &[SOURCE, TARGET, CA_BUNDLE],
    outputs: &["extensions"],
    needs_operator_note: false,
};

static COPY: ActionSchema = ActionSchema {
    kind: "db.copy",
    summary: "copies a database: table-parallel COPY on one snapshot with each table read back and compared (default), or pg_dump | pg_restore streamed or through a work directory",
    params: &[
        SOURCE,
        TARGET,
        CA_BUNDLE,
        BIN_DIR,
        ParamSpec::optional(
            "mode",
            ParamType::String,
            "\"parallel\" (default: schema by pg_dump/pg_restore, data by COPY streams through cutover, verified on the stream), \"stream\" (pg_dump -Fc | pg_restore) or \"directory\" (with work_dir)",
        ),
        ParamSpec::optional(
            "work_dir",
            ParamType::String,
            "directory-format dump here and run both sides with `jobs` (mode \"directory\")",
        ),
        ParamSpec::optional(
            "jobs",
            ParamType::Integer,
            "parallel COPY streams, or pg_dump/pg_restore jobs with work_dir (2)",
        ),
        ParamSpec::optional(
            "read_back",
            ParamType::Bool,
            "mode parallel: read each table back from the target and compare it as it lands (true); false leaves the comparison to db.verify with source_checksums",
        ),
        ParamSpec::optional(
            "index_jobs",
            ParamType::Integer,
            "parallel index and constraint builds after the data (mode parallel; default: jobs)",
        ),
        ParamSpec::optional(
            "on_existing",
            ParamType::String,
            "\"fail\" (default) or \"reset\": drop what a previous copy left in the target first",
        ),
        ParamSpec::optional(
            "maintenance_work_mem",
            ParamType::String,
            "for the restore's index builds (HNSW/IVFFlat), e.g. \"1GB\" (default)",
        ),
        ParamSpec::optional(
            "allow_errors",
            ParamType::StringList,
            "regular expressions of restore errors to tolerate (default: Heroku's extension comment and heroku_ext schema errors)",
        ),
    ],
    outputs: &[
        "bytes",
        "tables",
        "indexes",
        "tolerated_errors",
        "source_system_identifier",
        "target_system_identifier",
        "target_database",
        "source_writes",
        "source_baseline",
        "target_state",
        "throughput_mib_s",
        "checksums",
        "target_checksums",
        "table_secs",
        "data_secs",
    ],
    needs_operator_note: false,
};

static VERIFY: ActionSchema = ActionSchema {
    kind: "db.verify",
    summary: "compares every table's rows and content checksum, sequences, extensions, indexes and a vector search",
    params: &[
        SOURCE,
        TARGET,
        CA_BUNDLE,
        ParamSpec::optional(
            "connections",
            ParamType::Integer,
            "queries run at once across both databases (4); 1 checks one table after another",
        ),
        ParamSpec::optional(
            "chunk_mb",
            ParamType::Integer,
            "tables larger than this are checked in parallel pieces (64)",
        ),
        ParamSpec::optional(
            "source_checksums",
            ParamType::String,
            "the source's per-table checksums a parallel db.copy took from its stream (`${steps.db-copy.outputs.checksums}`): the source's tables are not read again, only the target's",
        ),
        ParamSpec::optional(
            "target_checksums",
            ParamType::String,
            "with source_checksums: the target's, as the copy read each table back (`${steps.db-copy.outputs.target_checksums}`): no table is read again; sequences, extensions, indexes and the vector search are still checked",
        ),
    ],
    outputs: &[
        "tables",
        "rows",
        "report",
        "materialized_views",
        "large_objects",
    ],
    needs_operator_note: false,
};

static IDLE: ActionSchema = ActionSchema {
    kind: "db.idle",
    summary: "proves a database unused before it is deleted: no other client over a window, no write since a baseline",
    params: &[
        ParamSpec::required(
            "url",
            ParamType::String,
            "the database about to be removed, usually ${secret.HEROKU_DATABASE_URL}",
        ),
        ParamSpec::optional(
            "window",
            ParamType::Duration,
            "how long no other client may be connected (60s)",
        ),
        ParamSpec::optional(
            "deadline",
            ParamType::Duration,
            "how long clients get to leave before the step fails naming them (3 × window)",
        ),
        ParamSpec::optional(
            "baseline",
            ParamType::String,
            "what the copy recorded of the source, ${steps.db-copy.outputs.source_baseline} (or its bare counters, source_writes): any table written since fails the step",
        ),
        ParamSpec::optional(
            "ignore_applications",
            ParamType::StringList,
            "application names of clients that do not count (e.g. the provider's monitoring)",
        ),
        CA_BUNDLE,
    ],
    outputs: &["clients", "written_tables"],
    needs_operator_note: false,
};

static WRITES: ActionSchema = ActionSchema {
    kind: "db.writes",
    summary: "records a database's write counters, or counts the rows changed since recorded ones (what going back would lose)",
    params: &[
        ParamSpec::required("url", ParamType::String, "database URL"),
        ParamSpec::optional(
            "since",
            ParamType::String,
            "counters recorded earlier (this action's `counters`): count the rows changed since",
        ),
        CA_BUNDLE,
    ],
    outputs: &["counters", "changed_rows"],
    needs_operator_note: false,
};

static SQL: ActionSchema = ActionSchema {
    kind: "db.sql",
    summary: "runs SQL (a statement or a file) against a database and shows what it returns",
    params: &[
        ParamSpec::required("url", ParamType::String, "database URL"),
        ParamSpec::optional("sql", ParamType::String, "the statement(s)"),
        ParamSpec::optional(
            "file",
            ParamType::String,
            "a .sql file, relative to the runbook",
        ),
        CA_BUNDLE,
    ],
    outputs: &["rows"],
    needs_operator_note: false,
};

/// All database action kinds.
pub fn actions() -> Vec<Arc<dyn Action>> {
    vec![
        Arc::new(Db(Kind::Preflight)),
        Arc::new(Db(Kind::Extensions)),
        Arc::new(Db(Kind::Copy)),
        Arc::new(Db(Kind::Verify)),
        Arc::new(Db(Kind::Sql)),
        Arc::new(Db(Kind::Idle)),
        Arc::new(Db(Kind::Writes)),
    ]
}

#[derive(Clone, Copy)]
enum Kind {
    Preflight,
    Extensions,
    Copy,
    Verify,
    Sql,
    Idle,
    Writes,
}

struct Db(Kind);

/// A URL parameter parsed, with the step's CA bundle; an error names the parameter, never the
/// value (it holds a password).
fn db_url(
    text: &str,
    name: &str,
    ca_bundle: Option<&str>,
    ctx: &ActionContext,
) -> Result<DbUrl, Outcome> {
    let ca = ca_bundle.map(|p| ctx.work_dir.join(p));
    let mut url =
        DbUrl::parse(text, ca.as_deref()).map_err(|e| Outcome::failed(format!("`{name}`: {e}")))?;
    url.via = ctx
        .forwards
        .iter()
        .find(|f| f.forwards(&url.host, url.port))
        .map(|f| f.local);
    Ok(url)
}

/// A step that goes through a tunnel must have a URL the tunnel forwards: otherwise nothing
/// would use it, and the operator believes a private path is in use when it is not.
fn check_forwards_used(params: &serde_json::Value, ctx: &ActionContext) -> Result<(), Outcome> {
    let Some(forward) = ctx.forwards.first() else {
        return Ok(());
    };
    let named = ["source", "target", "url"]
        .iter()
        .filter_map(|key| params.get(key).and_then(|v| v.as_str()))
        .filter_map(|text| DbUrl::parse_unchecked(text).ok())
        .any(|url| ctx.forwards.iter().any(|f| f.forwards(&url.host, url.port)));
    if named {
        Ok(())
    } else {
        Err(Outcome::failed(format!(
            "this step goes through the tunnel to {}:{}, but none of its database URLs names that host and port: \
             nothing would use the tunnel (check the URL's host, or drop `via`)",
            forward.host, forward.port
        )))
    }
}

/// A URL parameter as plans and screens show it: `user@host:port/db`, or (a secret, shown
/// masked) the placeholder itself, any password in it masked.
fn shown_url(params: &serde_json::Value, name: &str) -> String {
    let Some(text) = params.get(name).and_then(|v| v.as_str()) else {
        return "?".to_string();
    };
    DbUrl::describe(text)
        .unwrap_or_else(|| crate::redact::Redactor::new().redact(text).into_owned())
}

#[async_trait]
impl Action for Db {
    fn schema(&self) -> &'static ActionSchema {
        match self.0 {
            Kind::Preflight => &PREFLIGHT,
            Kind::Extensions => &EXTENSIONS,
            Kind::Copy => &COPY,
            Kind::Verify => &VERIFY,
            Kind::Sql => &SQL,
            Kind::Idle => &IDLE,
            Kind::Writes => &WRITES,
        }
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let source = shown_url(params, "source");
        let target = shown_url(params, "target");
        match self.0 {
            Kind::Preflight => format!("check {source} → {target} before the move"),
            Kind::Extensions => format!("create {source}'s extensions on {target}"),
            Kind::Copy => {
                let mode = params.get("mode").and_then(|v| v.as_str());
                let how = match (mode, params.get("work_dir").and_then(|v| v.as_str())) {
                    (Some("stream"), _) => {
                        format!("pg_dump -Fc | pg_restore: {source} → {target} (streamed)")
                    }
                    (_, Some(dir)) if mode != Some("parallel") => {
                        format!("pg_dump -Fd -j | pg_restore -j: {source} → {target} via {dir}")
                    }
                    _ => format!(
                        "parallel COPY on one snapshot, each table read back and compared: {source} → {target}"
                    ),
                };
                match params.get("on_existing").and_then(|v| v.as_str()) {
                    Some("reset") => format!(
                        "{how}; first drops every table, view, routine and type already in {target}"
                    ),
                    _ => how,
                }
            }
            Kind::Verify => format!("compare every table of {source} with {target}"),
            Kind::Sql => format!("run SQL on {}", shown_url(params, "url")),
            Kind::Writes => match params.get("since") {
                Some(_) => format!(
                    "count the rows changed in {} since the recorded counters",
                    shown_url(params, "url")
                ),
                None => format!("record the write counters of {}", shown_url(params, "url")),
            },
            Kind::Idle => format!(
                "prove {} unused: no other client for {}, no write since the baseline",
                shown_url(params, "url"),
                params
                    .get("window")
                    .and_then(|v| v.as_str())
                    .unwrap_or("60s")
            ),
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        if let Err(refused) = check_forwards_used(&ctx.params, &ctx) {
            return refused;
        }
        let work = async {
            match self.0 {
                Kind::Preflight => preflight::run(&ctx).await,
                Kind::Extensions => extensions::run(&ctx).await,
                Kind::Copy => copy::run(&ctx).await,
                Kind::Verify => verify::run(&ctx).await,
                Kind::Sql => sql::run(&ctx).await,
                Kind::Idle => guards::idle::run(&ctx).await,
                Kind::Writes => guards::writes::run(&ctx).await,
            }
        };
        let result = match self.0 {
            // The copy stops its own children (pg_dump, pg_restore) and says how far it got.
            Kind::Copy => work.await,
            // The others stop at once: their queries' connections close with them, and the
            // server rolls back whatever was under way.
            _ => tokio::select! {
                result = work => result,
                () = ctx.cancel.cancelled() => Err(Outcome::Cancelled),
            },
        };
        result.unwrap_or_else(|o| o)
    }
}

/// Connects, or fails the step naming which side could not be reached.
async fn connect(url: &DbUrl, side: &str) -> Result<tokio_postgres::Client, Outcome> {
    url.connect()
        .await
        .map_err(|e| Outcome::failed(format!("{side}: {e}")))
}

/// The server's version as it names it, and its major number (16 for "16.4 (Debian…)").
async fn server_version(client: &tokio_postgres::Client) -> Result<(String, u64), Outcome> {
    let rows = query(
        client,
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
        "reading the server version",
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Outcome::failed("the server did not say its version"))?;
    let num: i32 = col(row, 1)?;
    Ok((col(row, 0)?, u64::try_from(num / 10_000).unwrap_or(0)))
}

/// Which database a connection reached: its cluster's `system_identifier` (set at initdb, the
/// same for every database of the cluster and different for every other cluster) and the
/// database's OID and name. Host names can differ for one server (`localhost`, `127.0.0.1`, a
/// tunnel, a DNS alias); these cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub system_identifier: String,
    pub database_oid: String,
    pub database: String,
}

impl Identity {
    pub fn same_database(&self, other: &Identity) -> bool {
        self.system_identifier == other.system_identifier && self.database_oid == other.database_oid
    }
}

async fn identity(client: &tokio_postgres::Client, side: &str) -> Result<Identity, Outcome> {
    let rows = query(
        client,
        "SELECT s.system_identifier::text, d.oid::text, d.datname::text \
           FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()",
        &format!("reading the {side}'s identity"),
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| Outcome::failed(format!("the {side} did not say which database it is")))?;
    Ok(Identity {
        system_identifier: col(row, 0)?,
        database_oid: col(row, 1)?,
        database: col(row, 2)?,
    })
}

/// Rows inserted, updated and deleted so far, per user table (`schema.table`), from the
/// statistics collector: they only grow, so a later reading that is higher means a write.
async fn write_counters(
    client: &tokio_postgres::Client,
) -> Result<std::collections::BTreeMap<String, i64>, Outcome> {
    let rows = query(
        client,
        "SELECT format('%I.%I', schemaname, relname), (n_tup_ins + n_tup_upd + n_tup_del)::bigint \
           FROM pg_stat_user_tables ORDER BY 1",
        "reading the write counters",
    )
    .await?;
    rows.iter()
        .map(|r| Ok((col::<String>(r, 0)?, col::<i64>(r, 1)?)))
        .collect()
}

/// The condition (over `pg_class c` joined to `pg_namespace n`) for a relation the app owns:
/// not in a system schema, not a member of an extension.
const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                     AND d.objid = c.oid AND d.deptype = 'e')";

/// The app's tables (not extension members) a database holds, as `schema.table`.
async fn user_tables(client: &tokio_postgres::Client) -> Result<Vec<String>, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND {USER_RELATION} ORDER BY 1"
        ),
        "listing tables",
    )
    .await?;
    rows.iter().map(|r| col(r, 0)).collect()
}

/// `"name"` quoted as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs a query, turning an error into a failed step that says what was being asked.
async fn query(
    client: &tokio_postgres::Client,
    sql: &str,
    what: &str,
) -> Result<Vec<tokio_postgres::Row>, Outcome> {
    client
        .query(sql, &[])
        .await
        .map_err(|e| Outcome::failed(format!("{what}: {}", connection::explain(&e))))
}

/// A `row.get` that fails the step instead of panicking when a column has another type.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    idx: usize,
) -> Result<T, Outcome> {
    row.try_get(idx)
        .map_err(|e| Outcome::failed(format!("unexpected answer from the database: {e}")))
}

/// Version numbers compared part by part ("0.10.0" > "0.7.4").
fn version_parts(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn bytes_human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_parts("0.10.0") > version_parts("0.7.4"));
        assert!(version_parts("0.7.0") > version_parts("0.6.2"));
        assert_eq!(version_parts("16.4 (Debian)"), vec![16, 4]);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("heroku_ext"), "\"heroku_ext\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes_human(512), "512 B");
        assert_eq!(bytes_human(3 * 1024 * 1024), "3.0 MiB");
    }
}
