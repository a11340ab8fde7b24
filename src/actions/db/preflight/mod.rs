//! `db.preflight`: what to know before the write freeze starts — versions on both sides and of
//! the local tools, the source's size and shape, and whether the target can take the copy —
//! and the samples the freeze is predicted from: `throughput` (how fast the copy can go) and
//! `index_sample` (how long the expensive index builds take, on the target).
//!
//! May import: `connection`, `tools`, `common`.

use std::time::Duration;

pub mod index_sample;
pub mod throughput;

use crate::actions::db::common::{
    bytes_human, col, connect, db_url, query, server_version, user_tables, USER_RELATION,
};
use crate::actions::db::tools::{self, restore::memory_setting};
use crate::actions::{parse_duration, ActionContext, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Self {
        Check {
            name,
            verdict,
            detail: detail.into(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    warn_size_gb: Option<u64>,
    long_transaction: Option<String>,
    jobs: Option<u32>,
    bin_dir: Option<String>,
    source: String,
    target: String,
    ca_bundle: Option<String>,
    maintenance_work_mem: Option<String>,
    index_sample_rows: Option<u64>,
}

pub async fn run(ctx: &ActionContext) -> Result<Outcome, Outcome> {
    let p: Params = ctx.params()?;
    let source_url = db_url(&p.source, "source", p.ca_bundle.as_deref(), ctx)?;
    let target_url = db_url(&p.target, "target", p.ca_bundle.as_deref(), ctx)?;
    let long = parse_duration(
        p.long_transaction.as_deref(),
        Duration::from_secs(300),
        "long_transaction",
    )?;
    let warn_bytes = p.warn_size_gb.unwrap_or(20).saturating_mul(1 << 30);
    let jobs = u64::from(p.jobs.unwrap_or(1).max(1));
    let memory = memory_setting(p.maintenance_work_mem.as_deref())?;

    let mut checks = Vec::new();
    let source = connect(&source_url, "source").await?;
    let target = connect(&target_url, "target").await?;
    let (src_version, src_major) = server_version(&source).await?;
    let (tgt_version, tgt_major) = server_version(&target).await?;
    checks.push(Check::new(
        "source server",
        Verdict::Pass,
        format!("PostgreSQL {} at {}", src_version, source_url.display()),
    ));
    checks.push(if tgt_major >= src_major {
        Check::new(
            "target server",
            Verdict::Pass,
            format!("PostgreSQL {} at {}", tgt_version, target_url.display()),
        )
    } else {
        Check::new(
            "target server",
            Verdict::Fail,
            format!(
                "PostgreSQL {} is older than the source's {}: a dump does not restore into an older major version",
                tgt_version, src_version
            ),
        )
    });

    let dump = tools::find("pg_dump", p.bin_dir.as_deref(), ctx).await;
    let restore = tools::find("pg_restore", p.bin_dir.as_deref(), ctx).await;
    checks.push(match &dump {
        Err(e) => Check::new("pg_dump", Verdict::Fail, e.clone()),
        Ok(t) if t.major < src_major => Check::new(
            "pg_dump",
            Verdict::Fail,
            format!(
                "{} is version {}, older than the source server ({}): install pg_dump {} or newer",
                t.path.display(),
                t.version,
                src_major,
                src_major
            ),
        ),
        Ok(t) => Check::new(
            "pg_dump",
            Verdict::Pass,
            format!("{} ({})", t.version, t.path.display()),
        ),
    });
    checks.push(match (&restore, &dump) {
        (Err(e), _) => Check::new("pg_restore", Verdict::Fail, e.clone()),
        (Ok(r), Ok(d)) if r.major < d.major => Check::new(
            "pg_restore",
            Verdict::Fail,
            format!(
                "{} is older than pg_dump {}: pg_restore must be at least the version that wrote the archive",
                r.version, d.version
            ),
        ),
        (Ok(r), _) => Check::new(
            "pg_restore",
            Verdict::Pass,
            format!("{} ({})", r.version, r.path.display()),
        ),
    });

    let size_rows = query(
        &source,
        "SELECT pg_database_size(current_database())",
        "reading the source's size",
    )
    .await?;
    let size: i64 = match size_rows.first() {
        Some(row) => col(row, 0)?,
        None => 0,
    };
    let size = u64::try_from(size).unwrap_or(0);
    checks.push(if size > warn_bytes {
        Check::new(
            "source size",
            Verdict::Warn,
            format!(
                "{}: over {} GB, where Heroku's backups stop being suitable; plan a longer freeze and use work_dir + jobs",
                bytes_human(size),
                warn_bytes >> 30
            ),
        )
    } else {
        Check::new("source size", Verdict::Pass, bytes_human(size))
    });

    let no_pk = query(
        &source,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {USER_RELATION} \
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') \
              ORDER BY 1"
        ),
        "listing tables without a primary key",
    )
    .await?;
    let no_pk: Vec<String> = no_pk.iter().map(|r| col(r, 0)).collect::<Result<_, _>>()?;
    checks.push(if no_pk.is_empty() {
        Check::new("primary keys", Verdict::Pass, "every table has one")
    } else {
        Check::new(
            "primary keys",
            Verdict::Warn,
            format!(
                "{} table(s) without one (copied fine; verified by content checksum, duplicates included): {}",
                no_pk.len(),
                no_pk.join(", ")
            ),
        )
    });

    let heroku_ext = query(
        &source,
        "SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
          WHERE n.nspname = 'heroku_ext' ORDER BY 1",
        "looking for a heroku_ext schema",
    )
    .await?;
    let heroku_ext: Vec<String> = heroku_ext
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_, _>>()?;
    checks.push(if heroku_ext.is_empty() {
        Check::new("heroku_ext", Verdict::Pass, "no extension lives in heroku_ext")
    } else {
        Check::new(
            "heroku_ext",
            Verdict::Warn,
            format!(
                "{} live(s) in schema heroku_ext: db.extensions creates that schema on the target and puts them there",
                heroku_ext.join(", ")
            ),
        )
    });

    let long_rows = query(
        &source,
        &format!(
            "SELECT pid, coalesce(nullif(application_name, ''), usename::text, '?'), \
                    extract(epoch FROM now() - xact_start)::bigint \
               FROM pg_stat_activity \
              WHERE xact_start < now() - interval '{} seconds' AND pid <> pg_backend_pid() \
                AND datname = current_database() ORDER BY xact_start",
            long.as_secs()
        ),
        "looking for long-running transactions",
    )
    .await?;
    let mut long_txns = Vec::new();
    for row in &long_rows {
        let pid: i32 = col(row, 0)?;
        let app: String = col(row, 1)?;
        let secs: i64 = col(row, 2)?;
        long_txns.push(format!("pid {pid} ({app}) open {secs}s"));
    }
    checks.push(if long_txns.is_empty() {
        Check::new(
            "long transactions",
            Verdict::Pass,
            format!("none open longer than {}", humantime::format_duration(long)),
        )
    } else {
        Check::new(
            "long transactions",
            Verdict::Warn,
            format!(
                "{} (they hold locks pg_dump waits for; the write freeze should end them): {}",
                long_txns.len(),
                long_txns.join(", ")
            ),
        )
    });

    let slots = query(
        &target,
        "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int \
                - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int",
        "counting the target's free connections",
    )
    .await?;
    let free: i32 = match slots.first() {
        Some(row) => col(row, 0)?,
        None => 0,
    };
    let free = u64::try_from(free).unwrap_or(0);
    // The restore's jobs, the verification's connections and one to spare.
    let wanted = jobs + 2;
    checks.push(if free == 0 {
        Check::new(
            "target connections",
            Verdict::Fail,
            "no free connection slot",
        )
    } else if free < wanted {
        Check::new(
            "target connections",
            Verdict::Warn,
            format!("{free} free, the copy wants {wanted}"),
        )
    } else {
        Check::new("target connections", Verdict::Pass, format!("{free} free"))
    });

    let existing = user_tables(&target).await?.len();
    checks.push(if existing == 0 {
        Check::new("target empty", Verdict::Pass, "no tables yet")
    } else {
        Check::new(
            "target empty",
            Verdict::Warn,
            format!("it already holds {existing} table(s): db.copy refuses unless its on_existing = \"reset\""),
        )
    });

    // How fast the copy can go: a few seconds of reading the largest table and of writing
    // the same bytes into a scratch table on the target (rolled back: nothing stays).
    let sample = throughput::throughput_sample(&source_url, &target_url).await;
    let rates = match &sample {
        Ok(Some((read, write))) => {
            let slower = read.min(*write).max(1.0);
            let predicted = size as f64 / slower;
            checks.push(Check::new(
                "copy speed",
                Verdict::Pass,
                format!(
                    "read {}/s, write {}/s: about {} for {} (the slower side's rate)",
                    bytes_human(*read as u64),
                    bytes_human(*write as u64),
                    crate::clock::short(Duration::from_secs_f64(predicted)),
                    bytes_human(size as u64)
                ),
            ));
            Some((*read, *write, predicted))
        }
        Ok(None) => None,
        Err(why) => {
            checks.push(Check::new("copy speed", Verdict::Warn, why.clone()));
            None
        }
    };

    // How long the expensive index builds will take at the source's size: they do not grow as
    // a sort does (see index_sample), so they are measured, on the target.
    let sample_rows = p.index_sample_rows.unwrap_or(index_sample::SAMPLE_ROWS);
    let builds = if sample_rows == 0 {
        Vec::new()
    } else {
        ctx.report
            .info(format!(
                "timing the expensive index builds (HNSW, IVFFlat, GIN, GiST) on up to {sample_rows} sampled rows each, on the target, in a transaction rolled back…"
            ))
            .await;
        match index_sample::sample(&source_url, &target_url, &memory, sample_rows).await {
            Ok(found) => found,
            Err(why) => vec![Err(why)],
        }
    };
    let mut measured = Vec::new();
    for build in builds {
        checks.push(match build {
            Ok(b) => {
                let verdict = if b.spills() {
                    Verdict::Warn
                } else {
                    Verdict::Pass
                };
                let check = Check::new("index build", verdict, b.describe());
                measured.push(b);
                check
            }
            Err(why) => Check::new("index build", Verdict::Warn, format!("not sampled: {why}")),
        });
    }

    for check in &checks {
        let mark = match check.verdict {
            Verdict::Pass => "pass",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        ctx.report
            .info(format!("{mark}  {:<20} {}", check.name, check.detail))
            .await;
    }
    ctx.report
        .output("source_version", src_version.clone())
        .await;
    ctx.report
        .output("target_version", tgt_version.clone())
        .await;
    ctx.report.output("source_bytes", size.to_string()).await;
    if let Some((read, write, predicted)) = rates {
        let mib = |b: f64| format!("{:.1}", b / (1024.0 * 1024.0));
        ctx.report.output("read_mib_s", mib(read)).await;
        ctx.report.output("write_mib_s", mib(write)).await;
        ctx.report
            .output("predicted_copy_secs", format!("{predicted:.1}"))
            .await;
    }
    if !measured.is_empty() {
        let json = serde_json::to_string(&measured)
            .map_err(|e| Outcome::failed(format!("the index builds' record: {e}")))?;
        ctx.report.output("index_builds", json).await;
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.name)
        .collect();
    let warned = checks.iter().filter(|c| c.verdict == Verdict::Warn).count();
    if failed.is_empty() {
        Ok(Outcome::Succeeded {
            note: Some(format!(
                "{} checks passed, {warned} warning(s)",
                checks.len() - warned
            )),
        })
    } else {
        Ok(Outcome::failed(format!(
            "preflight failed: {}",
            failed.join(", ")
        )))
    }
}
