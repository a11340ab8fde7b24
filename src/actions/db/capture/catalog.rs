//! What the capture follows, as the catalogs describe it: each table's columns (name, type,
//! NOT NULL, generated, identity), the key the log records, whether it is copied whole in the
//! freeze, and what becomes of large objects. `db.capture install` records it in a table of the
//! capture's schema; the final catch-up reads the catalogs again and names every difference
//! before it applies anything (a schema change on the source during the move).

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::CATALOG;
use crate::actions::db::common::{col, ident, query, USER_RELATION};
use crate::actions::db::connection;
use crate::actions::Outcome;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub not_null: bool,
    /// `pg_attribute.attgenerated` ("" or "s").
    pub generated: String,
    /// `pg_attribute.attidentity` ("", "a" or "d").
    pub identity: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    pub columns: Vec<Column>,
    /// The key the log records (empty: none usable).
    pub key: Vec<String>,
    /// Copied whole inside the freeze (no key, `without_key = "freeze"`).
    #[serde(default)]
    pub whole: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Catalog {
    pub tables: BTreeMap<String, Table>,
    /// "refuse" or "freeze".
    pub large_objects: String,
    /// Tables of this database the capture does not follow because the database it was
    /// installed `like` lacks them (a catch-up from here cannot carry them there): named at
    /// install, in the way back's warning and by the final catch-up.
    #[serde(default)]
    pub left_out: Vec<String>,
}

impl Catalog {
    pub fn followed(&self) -> impl Iterator<Item = (&String, &Table)> {
        self.tables.iter().filter(|(_, t)| !t.whole)
    }
    pub fn whole(&self) -> impl Iterator<Item = &String> {
        self.tables.iter().filter(|(_, t)| t.whole).map(|(n, _)| n)
    }
}

/// The app's tables (the ones the copy copies, less the capture's own schema) with their
/// columns and the key the log would record: the primary key, else the first valid unique
/// index whose columns are all NOT NULL (no expression, no predicate). `whole` is false.
pub async fn read(client: &Client, schema: &str) -> Result<BTreeMap<String, Table>, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname), \
                    coalesce((SELECT jsonb_agg(jsonb_build_object('name', a.attname, \
                                 'type', format_type(a.atttypid, a.atttypmod), 'not_null', a.attnotnull, \
                                 'generated', a.attgenerated::text, 'identity', a.attidentity::text) ORDER BY a.attnum) \
                       FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]')::text, \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) \
                       FROM pg_index i \
                       CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                      WHERE k.ord <= i.indnkeyatts AND i.indexrelid = ( \
                            SELECT j.indexrelid FROM pg_index j \
                             WHERE j.indrelid = c.oid AND j.indisunique AND j.indisvalid \
                               AND j.indpred IS NULL AND j.indexprs IS NULL \
                               AND NOT EXISTS (SELECT 1 FROM pg_attribute b \
                                    WHERE b.attrelid = c.oid AND b.attnum = ANY (j.indkey::int2[]) \
                                      AND NOT b.attnotnull) \
                             ORDER BY j.indisprimary DESC, j.indexrelid LIMIT 1)), '{{}}') \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND {USER_RELATION} AND n.nspname <> '{schema}' ORDER BY 1"
        ),
        "reading the tables' columns and keys",
    )
    .await?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let columns: String = col(row, 1)?;
        let columns: Vec<Column> = serde_json::from_str(&columns)
            .map_err(|e| Outcome::failed(format!("reading the tables' columns: {e}")))?;
        out.insert(
            col(row, 0)?,
            Table {
                columns,
                key: col(row, 2)?,
                whole: false,
            },
        );
    }
    Ok(out)
}

/// The catalog's table in the capture's schema.
pub fn table_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{CATALOG} (id int PRIMARY KEY, recorded jsonb NOT NULL, \
             at timestamptz NOT NULL DEFAULT now());",
        ident(schema)
    )
}

pub async fn record(client: &Client, schema: &str, catalog: &Catalog) -> Result<(), Outcome> {
    let text = serde_json::to_string(catalog)
        .map_err(|e| Outcome::failed(format!("recording the catalog: {e}")))?;
    client
        .execute(
            &format!(
                "INSERT INTO {}.{CATALOG} (id, recorded) VALUES (1, $1::text::jsonb) \
                 ON CONFLICT (id) DO UPDATE SET recorded = excluded.recorded, at = now()",
                ident(schema)
            ),
            &[&text],
        )
        .await
        .map_err(|e| {
            Outcome::failed(format!(
                "recording the catalog: {}",
                connection::explain(&e)
            ))
        })?;
    Ok(())
}

/// The catalog install recorded (none: the capture is not installed, or installed by an
/// earlier version that recorded none).
pub async fn recorded(client: &Client, schema: &str) -> Result<Option<Catalog>, Outcome> {
    let exists = query(
        client,
        &format!("SELECT to_regclass('{schema}.{CATALOG}') IS NOT NULL"),
        "looking for the recorded catalog",
    )
    .await?;
    let exists: bool = match exists.first() {
        Some(row) => col(row, 0)?,
        None => false,
    };
    if !exists {
        return Ok(None);
    }
    let rows = query(
        client,
        &format!(
            "SELECT recorded::text FROM {}.{CATALOG} WHERE id = 1",
            ident(schema)
        ),
        "reading the recorded catalog",
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let text: String = col(row, 0)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Outcome::failed(format!("the recorded catalog does not read: {e}")))
}

/// Every difference between the catalog recorded at install and the tables now, named.
pub fn differences(recorded: &Catalog, now: &BTreeMap<String, Table>) -> Vec<String> {
    let mut out = Vec::new();
    for name in now.keys() {
        if !recorded.tables.contains_key(name) && !recorded.left_out.contains(name) {
            out.push(format!("table {name} created"));
        }
    }
    for (name, was) in &recorded.tables {
        let Some(is) = now.get(name) else {
            out.push(format!("table {name} dropped"));
            continue;
        };
        let before: BTreeMap<&str, &Column> =
            was.columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let after: BTreeMap<&str, &Column> =
            is.columns.iter().map(|c| (c.name.as_str(), c)).collect();
        for (col, c) in &after {
            let Some(b) = before.get(col) else {
                out.push(format!("{name}: column {col} added ({})", c.type_name));
                continue;
            };
            if b.type_name != c.type_name {
                out.push(format!(
                    "{name}: column {col} type changed ({} → {})",
                    b.type_name, c.type_name
                ));
            }
            if b.not_null != c.not_null {
                out.push(format!(
                    "{name}: column {col} NOT NULL {}",
                    if c.not_null { "set" } else { "dropped" }
                ));
            }
            if b.generated != c.generated {
                out.push(format!("{name}: column {col} generation changed"));
            }
            if b.identity != c.identity {
                out.push(format!("{name}: column {col} identity changed"));
            }
        }
        for col in before.keys() {
            if !after.contains_key(col) {
                out.push(format!("{name}: column {col} dropped"));
            }
        }
        if was.columns.len() == is.columns.len()
            && before.keys().eq(after.keys())
            && was
                .columns
                .iter()
                .zip(&is.columns)
                .any(|(a, b)| a.name != b.name)
        {
            out.push(format!("{name}: columns reordered"));
        }
        if !was.whole && was.key != is.key {
            out.push(format!(
                "{name}: key changed ({} → {})",
                was.key.join(", "),
                if is.key.is_empty() {
                    "none".to_string()
                } else {
                    is.key.join(", ")
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_name: &str) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            not_null: false,
            generated: String::new(),
            identity: String::new(),
        }
    }

    #[test]
    fn every_difference_is_named() {
        let mut recorded = Catalog::default();
        recorded.tables.insert(
            "public.users".into(),
            Table {
                columns: vec![column("id", "integer"), column("name", "text")],
                key: vec!["id".into()],
                whole: false,
            },
        );
        recorded.tables.insert(
            "public.gone".into(),
            Table {
                columns: vec![column("a", "integer")],
                key: vec![],
                whole: true,
            },
        );
        let mut now = BTreeMap::new();
        let mut nn = column("name", "character varying(20)");
        nn.not_null = true;
        now.insert(
            "public.users".to_string(),
            Table {
                columns: vec![column("id", "integer"), nn, column("x", "jsonb")],
                key: vec!["id".into()],
                whole: false,
            },
        );
        now.insert(
            "public.t2".to_string(),
            Table {
                columns: vec![],
                key: vec![],
                whole: false,
            },
        );
        let said = differences(&recorded, &now);
        assert_eq!(
            said,
            vec![
                "table public.t2 created",
                "table public.gone dropped",
                "public.users: column name type changed (text → character varying(20))",
                "public.users: column name NOT NULL set",
                "public.users: column x added (jsonb)",
            ]
        );
        let mut same = BTreeMap::new();
        same.insert(
            "public.users".to_string(),
            recorded.tables["public.users"].clone(),
        );
        same.insert(
            "public.gone".to_string(),
            recorded.tables["public.gone"].clone(),
        );
        assert!(differences(&recorded, &same).is_empty());
    }
}
