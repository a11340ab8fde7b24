//! `db.extensions`: the target gets the source's extensions, in the same schemas, before the
//! restore needs them (pgvector on RDS is `CREATE EXTENSION`, not a preloaded library). The
//! copy ensures them too, and `db.verify` compares them. May import: `connection`, `common`.

use tokio_postgres::Client;

use crate::actions::db::common::{col, connect, db_url, ident, query, version_parts};
use crate::actions::db::connection;
use crate::actions::{ActionContext, Outcome};

/// An installed extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub version: String,
    pub schema: String,
}

/// The extensions a database has (plpgsql, always present, left out); vector first.
pub async fn installed(client: &Client) -> Result<Vec<Extension>, Outcome> {
    let rows = query(
        client,
        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e \
         JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' \
         ORDER BY e.extname <> 'vector', e.extname",
        "listing extensions",
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Extension {
                name: col(r, 0)?,
                version: col(r, 1)?,
                schema: col(r, 2)?,
            })
        })
        .collect()
}

/// pgvector features a database uses, from its column types and index methods.
pub async fn vector_features(client: &Client) -> Result<Vec<String>, Outcome> {
    let rows = query(
        client,
        "SELECT DISTINCT t.typname::text FROM pg_attribute a \
           JOIN pg_type t ON t.oid = a.atttypid JOIN pg_class c ON c.oid = a.attrelid \
          WHERE t.typname IN ('vector', 'halfvec', 'sparsevec', 'bit') AND NOT a.attisdropped \
            AND a.attnum > 0 AND c.relkind IN ('r', 'p', 'm') \
            AND c.relnamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema')) \
         UNION SELECT DISTINCT am.amname::text FROM pg_class c JOIN pg_am am ON am.oid = c.relam \
          WHERE c.relkind = 'i' AND am.amname IN ('hnsw', 'ivfflat')",
        "reading which pgvector features are used",
    )
    .await?;
    let mut features: Vec<String> = rows.iter().map(|r| col(r, 0)).collect::<Result<_, _>>()?;
    features.sort();
    Ok(features)
}

/// The pgvector version the features need, and the feature that needs it most.
pub fn vector_needs(features: &[String]) -> Option<(&'static str, &'static str)> {
    const NEEDS: [(&str, &str); 4] = [
        ("halfvec", "0.7.0"),
        ("sparsevec", "0.7.0"),
        ("hnsw", "0.5.0"),
        ("ivfflat", "0.4.0"),
    ];
    NEEDS
        .iter()
        .filter(|(feature, _)| features.iter().any(|f| f == feature))
        .max_by_key(|(_, version)| version_parts(version))
        .map(|(feature, version)| (*feature, *version))
}

/// Creates the source's extensions on the target and checks the versions. Returns the lines
/// to show; fails when an extension cannot be had or is too old for what is in use.
pub async fn ensure(
    source: &Client,
    target: &Client,
    ctx: &ActionContext,
) -> Result<Vec<Extension>, Outcome> {
    let wanted = installed(source).await?;
    let features = vector_features(source).await?;
    for ext in &wanted {
        let available = target
            .query(
                "SELECT default_version FROM pg_available_extensions WHERE name = $1",
                &[&ext.name],
            )
            .await
            .map_err(|e| {
                Outcome::failed(format!(
                    "listing the target's available extensions: {}",
                    connection::explain(&e)
                ))
            })?;
        if available.is_empty() {
            return Err(Outcome::failed(format!(
                "extension {} (source {}) is not available on the target server \
                 (on RDS, check the engine version's supported extensions)",
                ext.name, ext.version
            )));
        }
        if ext.schema != "public" {
            target
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    ident(&ext.schema)
                ))
                .await
                .map_err(|e| {
                    Outcome::failed(format!(
                        "creating schema {} on the target: {}",
                        ext.schema,
                        connection::explain(&e)
                    ))
                })?;
        }
        target
            .batch_execute(&format!(
                "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}",
                ident(&ext.name),
                ident(&ext.schema)
            ))
            .await
            .map_err(|e| {
                Outcome::failed(format!(
                    "CREATE EXTENSION {} on the target: {} (the target's user needs the right to create it: rds_superuser on RDS)",
                    ext.name,
                    connection::explain(&e)
                ))
            })?;
    }
    let have = installed(target).await?;
    let mut problems = Vec::new();
    for ext in &wanted {
        let Some(there) = have.iter().find(|h| h.name == ext.name) else {
            problems.push(format!("{} is missing on the target", ext.name));
            continue;
        };
        let mut line = format!(
            "{:<12} source {:<8} target {:<8} schema {}",
            ext.name, ext.version, there.version, there.schema
        );
        if there.schema != ext.schema {
            line.push_str(&format!(
                " (source keeps it in {}: qualified names will differ)",
                ext.schema
            ));
        }
        if ext.name == "vector" {
            if let Some((feature, needs)) = vector_needs(&features) {
                if version_parts(&there.version) < version_parts(needs) {
                    problems.push(format!(
                        "vector {} on the target is older than {needs}, which {feature} (used by the source) needs",
                        there.version
                    ));
                }
            }
        }
        if version_parts(&there.version) < version_parts(&ext.version) {
            line.push_str(" (older than the source)");
        }
        ctx.report.info(line).await;
    }
    if !problems.is_empty() {
        return Err(Outcome::failed(problems.join("; ")));
    }
    copy_search_path(source, target, ctx).await;
    Ok(have)
}

/// Extensions outside `public` are usually reached through the database's search_path; the
/// target gets the same one (a dump does not carry it).
async fn copy_search_path(source: &Client, target: &Client, ctx: &ActionContext) {
    let Ok(rows) = source
        .query(
            "SELECT cfg FROM pg_db_role_setting s, unnest(s.setconfig) cfg \
             WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND s.setrole = 0 AND cfg LIKE 'search_path=%'",
            &[],
        )
        .await
    else {
        return;
    };
    let Some(setting) = rows.first().and_then(|r| r.try_get::<_, String>(0).ok()) else {
        return;
    };
    let value = setting.trim_start_matches("search_path=");
    let Ok(db) = target.query_one("SELECT current_database()", &[]).await else {
        return;
    };
    let Ok(name) = db.try_get::<_, String>(0) else {
        return;
    };
    let statement = format!("ALTER DATABASE {} SET search_path = {value}", ident(&name));
    match target.batch_execute(&statement).await {
        Ok(()) => {
            ctx.report
                .info(format!(
                    "search_path = {value} set on the target database, as on the source"
                ))
                .await
        }
        Err(e) => {
            ctx.report
                .info(format!(
                "warning: could not set search_path = {value} on the target ({}); set it by hand",
                connection::explain(&e)
            ))
                .await
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    source: String,
    target: String,
    ca_bundle: Option<String>,
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let source_url = db_url(&p.source, "source", p.ca_bundle.as_deref(), ctx)?;
    let target_url = db_url(&p.target, "target", p.ca_bundle.as_deref(), ctx)?;
    let source = connect(&source_url, "source").await?;
    let target = connect(&target_url, "target").await?;
    let have = ensure(&source, &target, ctx).await?;
    let summary: Vec<String> = have
        .iter()
        .map(|e| format!("{} {} ({})", e.name, e.version, e.schema))
        .collect();
    ctx.report.output("extensions", summary.join(", ")).await;
    Ok(Outcome::Succeeded {
        note: Some(format!("{} extension(s) on the target", have.len())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halfvec_needs_pgvector_0_7() {
        let features = vec![
            "halfvec".to_string(),
            "hnsw".to_string(),
            "vector".to_string(),
        ];
        assert_eq!(vector_needs(&features), Some(("halfvec", "0.7.0")));
        let features = vec!["hnsw".to_string(), "vector".to_string()];
        assert_eq!(vector_needs(&features), Some(("hnsw", "0.5.0")));
        assert_eq!(vector_needs(&["vector".to_string()]), None);
    }
}
