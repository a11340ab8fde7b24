//! The database move (Heroku Postgres → RDS), laid out by its stages. Connections come from
//! `postgres://` URLs (usually secrets, read right before the step runs, so a rotated Heroku
//! credential is picked up); `pg_dump` and `pg_restore` get theirs through the environment,
//! never on a command line.
//!
//! | stage | where | what |
//! | --- | --- | --- |
//! | connections and TLS | `connection` | `DbUrl`: a URL parsed once, TLS as `sslmode` says, a tunnel's `hostaddr` |
//! | the PostgreSQL tools | `tools/` | finding `pg_dump`/`pg_restore` and their version; `tools::restore`: running `pg_restore` and reading what it says |
//! | shared | `common`, `checksum` | queries, identities, the app's relations; rows hashed as the copy hashes its stream |
//! | preflight and sampling | `preflight/` | `db.preflight`: the checks, the throughput sample, the index-build sample |
//! | extensions | `extensions` | `db.extensions`: the source's extensions on the target |
//! | copy, streamed and parallel | `copy/` | `db.copy`: the step, `parallel` (COPY streams on one snapshot), `stream` (pg_dump \| pg_restore), what it journals (`target_state`, `baseline`) |
//! | change capture and catch-up | `capture/` | `db.capture` (the change log and its triggers on the source), `db.catchup` (the log applied to the target in batches) |
//! | verify | `verify` | `db.verify` |
//! | the guards | `guards/` | `db.idle` (before the source is deleted) and `db.writes` (what a rollback would lose) |
//! | SQL | `sql` | `db.sql` |
//!
//! A stage imports only the stages above it in this table (the shared modules from any stage),
//! through `crate::actions::db::STAGE`: `connection` nothing of the database move; `tools` and
//! `common` only `connection`; `checksum` `connection` and `common`; the copy may use
//! `extensions`; `verify` reads what the copy journals; the guards read the copy's baseline;
//! none reaches down into a later stage. This module only declares the action kinds
//! (`schema`) and dispatches to them. A test below checks the rule on the sources.

mod capture;
mod checksum;
mod common;
mod connection;
mod copy;
mod extensions;
mod guards;
mod preflight;
mod schema;
mod sql;
mod tools;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;

pub use connection::{tls_client_config, DbUrl, TlsMode};
pub use verify::{TableReport, VerifyReport};

use super::{Action, ActionContext, Outcome};
use crate::runbook::ActionSchema;
use schema::{CAPTURE, CATCHUP, COPY, EXTENSIONS, IDLE, PREFLIGHT, SQL, VERIFY, WRITES};

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
        Arc::new(Db(Kind::Capture)),
        Arc::new(Db(Kind::Catchup)),
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
    Capture,
    Catchup,
}

struct Db(Kind);

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
            Kind::Capture => &CAPTURE,
            Kind::Catchup => &CATCHUP,
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
            Kind::Capture => match params.get("mode").and_then(|v| v.as_str()) {
                Some("remove") => format!(
                    "remove the change capture (log, triggers, function) from {}",
                    shown_url(params, "url")
                ),
                _ => format!(
                    "install change capture (a change log and row triggers) on {}",
                    shown_url(params, "url")
                ),
            },
            Kind::Catchup => format!("apply {source}'s captured changes to {target}"),
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
                Kind::Capture => capture::install::run(&ctx).await,
                Kind::Catchup => capture::catchup::run(&ctx).await,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// The stages of the move in order, each with the stages it may import (see the module's
    /// comment): an import from any other is a back-import and fails here.
    const MAY_IMPORT: &[(&str, &[&str])] = &[
        ("connection", &[]),
        ("common", &["connection"]),
        ("tools", &["connection", "common"]),
        ("checksum", &["connection", "common"]),
        ("preflight", &["connection", "common", "tools"]),
        ("extensions", &["connection", "common"]),
        (
            "copy",
            &["connection", "common", "tools", "checksum", "extensions"],
        ),
        (
            "capture",
            &[
                "connection",
                "common",
                "tools",
                "checksum",
                "extensions",
                "copy",
            ],
        ),
        (
            "verify",
            &[
                "connection",
                "common",
                "checksum",
                "extensions",
                "copy",
                "capture",
            ],
        ),
        (
            "guards",
            &["connection", "common", "checksum", "copy", "capture"],
        ),
        ("sql", &["connection", "common"]),
        ("schema", &[]),
    ];

    /// Every `.rs` file under `dir`, with its path relative to `root`.
    fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                out.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    /// The stages a source names through `crate::actions::db::STAGE` (one or a `{…}` group).
    fn named_stages(text: &str) -> Vec<String> {
        let single = regex::Regex::new(r"crate::actions::db::(\w+)").unwrap();
        let group = regex::Regex::new(r"crate::actions::db::\{([^}]*)\}").unwrap();
        let mut out: Vec<String> = single
            .captures_iter(text)
            .map(|c| c[1].to_string())
            .collect();
        for c in group.captures_iter(text) {
            out.extend(
                c[1].split(',')
                    .filter_map(|part| part.trim().split("::").next())
                    .filter(|name| !name.is_empty())
                    .map(str::to_string),
            );
        }
        out
    }

    #[test]
    fn each_stage_imports_only_the_stages_before_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/actions/db");
        let mut files = Vec::new();
        sources(&root, &root, &mut files);
        let allowed: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
        let mut wrong = Vec::new();
        for (path, text) in &files {
            if path == "mod.rs" {
                continue;
            }
            let stage = path
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            let Some(may) = allowed.get(stage.as_str()) else {
                wrong.push(format!("{path}: stage `{stage}` is not in MAY_IMPORT"));
                continue;
            };
            for named in named_stages(text) {
                if named != stage && !may.contains(&named.as_str()) {
                    wrong.push(format!("{path} imports `{named}`"));
                }
            }
            // Other stages only through `crate::actions::db::…`: no `super::` out of the stage.
            let top = !path.contains('/') || path.ends_with("/mod.rs");
            for line in text.lines().map(str::trim) {
                let escapes = if top {
                    line.contains("super::") && !line.starts_with("use super::*")
                } else {
                    line.contains("super::super")
                };
                if escapes && !line.starts_with("//") {
                    wrong.push(format!(
                        "{path}: `{line}` reaches out of its stage by super::"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn a_back_import_is_caught() {
        let text = "use crate::actions::db::verify::hash;\nuse crate::actions::db::{common, guards::idle};";
        assert_eq!(named_stages(text), ["verify", "common", "guards"]);
    }
}
