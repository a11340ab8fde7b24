//! What every stage of the database move uses: a URL parameter parsed, a connection, a query
//! whose error says what was asked, a column read without panicking, which database a
//! connection reached, the app's relations, the write counters, and how numbers are shown.
//! Imports only `connection`.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::actions::db::connection::{self, DbUrl};
use crate::actions::{ActionContext, Outcome};

/// A URL parameter parsed, with the step's CA bundle; an error names the parameter, never the
/// value (it holds a password).
pub fn db_url(
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

/// Connects, or fails the step naming which side could not be reached.
pub async fn connect(url: &DbUrl, side: &str) -> Result<tokio_postgres::Client, Outcome> {
    url.connect()
        .await
        .map_err(|e| Outcome::failed(format!("{side}: {e}")))
}

/// The server's version as it names it, and its major number (16 for "16.4 (Debian…)").
pub async fn server_version(client: &tokio_postgres::Client) -> Result<(String, u64), Outcome> {
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

pub async fn identity(client: &tokio_postgres::Client, side: &str) -> Result<Identity, Outcome> {
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
pub async fn write_counters(
    client: &tokio_postgres::Client,
) -> Result<std::collections::BTreeMap<String, i64>, Outcome> {
    let rows = query(
        client,
        "SELECT format('%I.%I', schemaname, relname), (n_tup_ins + n_tup_upd + n_tup_del)::bigint \
           FROM pg_stat_user_tables WHERE schemaname NOT LIKE 'cutover\\_capture%' ORDER BY 1",
        "reading the write counters",
    )
    .await?;
    rows.iter()
        .map(|r| Ok((col::<String>(r, 0)?, col::<i64>(r, 1)?)))
        .collect()
}

/// The schema the change capture (`db.capture`) keeps its log, its catalog and its functions
/// in on the source, and `db.catchup` its guard of the target in: cutover's, never the app's.
/// Every schema whose name starts with it is cutover's (RDS's capture for the way back lives in
/// `cutover_capture_back`, apart from the forward catch-up's guard there): left out of the
/// app's tables, the copy, the counters and the checks.
pub const CAPTURE_SCHEMA: &str = "cutover_capture";

/// The condition (over `pg_class c` joined to `pg_namespace n`) for a relation the app owns:
/// not in a system schema, not a member of an extension, not the change capture's.
pub const USER_RELATION: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'cutover\\_capture%' \
    AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                     AND d.objid = c.oid AND d.deptype = 'e')";

/// The app's tables (not extension members) a database holds, as `schema.table`.
pub async fn user_tables(client: &tokio_postgres::Client) -> Result<Vec<String>, Outcome> {
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
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` quoted as an SQL string literal (standard_conforming_strings, on since 9.1).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Whether a schema exists.
pub async fn schema_exists(client: &tokio_postgres::Client, schema: &str) -> Result<bool, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT to_regnamespace({}) IS NOT NULL",
            literal(&ident(schema))
        ),
        "looking for a schema",
    )
    .await?;
    match rows.first() {
        Some(row) => col(row, 0),
        None => Ok(false),
    }
}

/// Runs a query, turning an error into a failed step that says what was being asked.
pub async fn query(
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
pub fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    idx: usize,
) -> Result<T, Outcome> {
    row.try_get(idx)
        .map_err(|e| Outcome::failed(format!("unexpected answer from the database: {e}")))
}

/// Version numbers compared part by part ("0.10.0" > "0.7.4").
pub fn version_parts(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn bytes_human(bytes: u64) -> String {
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
/// The app's tables (`schema.table`) by OID.
pub async fn table_oids(client: &Client) -> Result<BTreeMap<String, u32>, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname), c.oid::bigint \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND {USER_RELATION}"
        ),
        "listing the tables' OIDs",
    )
    .await?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let oid: i64 = col(row, 1)?;
        out.insert(col(row, 0)?, u32::try_from(oid).unwrap_or(0));
    }
    Ok(out)
}

/// How many large objects a database holds.
pub async fn count_large_objects(client: &Client) -> Result<u64, Outcome> {
    let rows = query(
        client,
        "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata",
        "counting the large objects",
    )
    .await?;
    let count: i64 = match rows.first() {
        Some(row) => col(row, 0)?,
        None => 0,
    };
    Ok(u64::try_from(count).unwrap_or(0))
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
