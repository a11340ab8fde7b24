//! The copy by `pg_dump` and `pg_restore` alone: `pg_dump -Fc` streamed into `pg_restore`
//! through cutover (bytes counted, no temporary file), or a directory-format dump with `-j N`
//! on both sides. The restore's `--verbose` lines give the progress; its errors are tolerated
//! only when the allow-list names them, and each tolerated one is shown.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::throughput;
use crate::actions::db::common::{bytes_human, CAPTURE_SCHEMA};
use crate::actions::db::connection::DbUrl;
use crate::actions::db::tools::restore::{
    follow_restore, report_progress, restore_command, spawn, tool_command, RestoreLog, Totals, TICK,
};
use crate::actions::db::tools::Tool;
use crate::actions::process::{pump, stop_group};
use crate::actions::{ActionContext, Outcome, Stream};

/// Pipe buffer between pg_dump, cutover and pg_restore (Linux's default is 64 KiB).
const PIPE_BYTES: i32 = 1 << 20;

pub(super) struct Run {
    restore: RestoreLog,
    dump_status: std::process::ExitStatus,
    restore_status: std::process::ExitStatus,
    bytes: u64,
}

pub(super) async fn finish(
    ctx: &ActionContext,
    run: Run,
    allowed: &[Regex],
    elapsed: Duration,
) -> Result<Outcome, Outcome> {
    if !run.dump_status.success() {
        return Err(Outcome::failed(format!(
            "pg_dump failed ({}); see its lines above",
            run.dump_status
        )));
    }
    let (refused, tolerated) = run.restore.judge(allowed);
    for error in &tolerated {
        ctx.report
            .info(format!("tolerated restore error: {}", error.text()))
            .await;
    }
    let counted = run.restore.errors.len() as u64;
    if !refused.is_empty() {
        let first: Vec<String> = refused.iter().take(3).map(|e| e.text()).collect();
        return Err(Outcome::failed(format!(
            "pg_restore reported {} error(s) not on the allow-list: {}",
            refused.len(),
            first.join("; ")
        )));
    }
    if !run.restore_status.success() && run.restore.ignored != Some(counted) {
        return Err(Outcome::failed(format!(
            "pg_restore failed ({}) and its errors could not all be read; see its lines above",
            run.restore_status
        )));
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    ctx.report.output("bytes", run.bytes.to_string()).await;
    ctx.report
        .output("tables", run.restore.tables_loaded.to_string())
        .await;
    ctx.report
        .output("indexes", run.restore.indexes.to_string())
        .await;
    ctx.report
        .output("tolerated_errors", tolerated.len().to_string())
        .await;
    ctx.report
        .output(
            "throughput_mib_s",
            throughput(&run.restore.bytes_at_ticks, TICK),
        )
        .await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{} tables, {} indexes, {} in {:.1}s ({}/s){}",
            run.restore.tables_loaded,
            run.restore.indexes,
            bytes_human(run.bytes),
            secs,
            bytes_human((run.bytes as f64 / secs) as u64),
            if tolerated.is_empty() {
                String::new()
            } else {
                format!(", {} tolerated error(s)", tolerated.len())
            }
        )),
    })
}

pub(super) async fn stream_copy(
    ctx: &ActionContext,
    dump_tool: &Tool,
    restore_tool: &Tool,
    source: &DbUrl,
    target: &DbUrl,
    memory: &str,
    totals: &Totals,
) -> Result<Run, Outcome> {
    ctx.report
        .info(format!(
            "pg_dump -Fc {} | pg_restore {} (streamed, maintenance_work_mem={memory})",
            source.display(),
            target.display()
        ))
        .await;
    let mut dump = spawn(
        tool_command(dump_tool, source)
            .args(["--format=custom", "--no-owner", "--no-acl"])
            .arg(format!("--exclude-table-data={CAPTURE_SCHEMA}*.*"))
            .stdout(Stdio::piped()),
        dump_tool,
    )?;
    let mut restore = match spawn(
        restore_command(restore_tool, target, memory).stdin(Stdio::piped()),
        restore_tool,
    ) {
        Ok(child) => child,
        Err(o) => {
            stop_group(&mut dump).await;
            return Err(o);
        }
    };
    let bytes = Arc::new(AtomicU64::new(0));
    let (Some(mut from), Some(mut into), Some(restore_err)) = (
        dump.stdout.take(),
        restore.stdin.take(),
        restore.stderr.take(),
    ) else {
        stop_group(&mut dump).await;
        stop_group(&mut restore).await;
        return Err(Outcome::failed("lost the pipes of pg_dump and pg_restore"));
    };
    // Bigger pipes: fewer wake-ups of the three processes sharing two cores with the servers.
    for fd in [from.as_raw_fd(), into.as_raw_fd()] {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    }
    let counter = bytes.clone();
    let carry = tokio::spawn(async move {
        let mut buf = vec![0u8; PIPE_BYTES as usize];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if into.write_all(&buf[..n]).await.is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        // Dropping stdin tells pg_restore the archive is complete.
        let _ = into.shutdown().await;
    });
    let dump_err = tokio::spawn(pump(dump.stderr.take(), Stream::Stderr, ctx.report.clone()));
    let started = Instant::now();
    let Some(log) = follow_restore(ctx, restore_err, totals, &bytes, started, "copy").await else {
        stop_group(&mut dump).await;
        stop_group(&mut restore).await;
        carry.abort();
        return Err(Outcome::Cancelled);
    };
    let _ = carry.await;
    let _ = dump_err.await;
    let dump_status = dump
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_dump: {e}")))?;
    let restore_status = restore
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_restore: {e}")))?;
    Ok(Run {
        restore: log,
        dump_status,
        restore_status,
        bytes: bytes.load(Ordering::Relaxed),
    })
}

pub(super) fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn directory_copy(
    ctx: &ActionContext,
    dump_tool: &Tool,
    restore_tool: &Tool,
    source: &DbUrl,
    target: &DbUrl,
    memory: &str,
    totals: &Totals,
    jobs: u32,
    dir: &PathBuf,
) -> Result<Run, Outcome> {
    if dir.exists() {
        // Left by an interrupted attempt of this step: a dump is only good whole.
        tokio::fs::remove_dir_all(dir)
            .await
            .map_err(|e| Outcome::failed(format!("cannot clear {}: {e}", dir.display())))?;
    }
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Outcome::failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    ctx.report
        .info(format!(
            "pg_dump -Fd -j {jobs} {} → {} (maintenance_work_mem={memory})",
            source.display(),
            dir.display()
        ))
        .await;
    let started = Instant::now();
    let mut dump = spawn(
        tool_command(dump_tool, source)
            .args(["--format=directory", "--no-owner", "--no-acl"])
            .arg(format!("--exclude-table-data={CAPTURE_SCHEMA}*.*"))
            .arg("--jobs")
            .arg(jobs.to_string())
            .arg("--file")
            .arg(dir),
        dump_tool,
    )?;
    let dump_err = tokio::spawn(pump(dump.stderr.take(), Stream::Stderr, ctx.report.clone()));
    let empty = RestoreLog::default();
    let mut tick = tokio::time::interval(TICK);
    let dump_status = loop {
        tokio::select! {
            status = dump.wait() => break status.map_err(|e| Outcome::failed(format!("lost track of pg_dump: {e}")))?,
            _ = tick.tick() => {
                let size = dir_size(dir);
                report_progress(ctx, &empty, totals, size, started, "dump").await;
            }
            () = ctx.cancel.cancelled() => {
                stop_group(&mut dump).await;
                return Err(Outcome::Cancelled);
            }
        }
    };
    let _ = dump_err.await;
    let bytes = dir_size(dir);
    if !dump_status.success() {
        return Ok(Run {
            restore: RestoreLog::default(),
            dump_status,
            restore_status: dump_status,
            bytes,
        });
    }
    ctx.report
        .info(format!(
            "pg_dump wrote {}; pg_restore -j {jobs} into {}",
            bytes_human(bytes),
            target.display()
        ))
        .await;
    let mut restore = spawn(
        restore_command(restore_tool, target, memory)
            .arg("--jobs")
            .arg(jobs.to_string())
            .arg(dir),
        restore_tool,
    )?;
    let Some(restore_err) = restore.stderr.take() else {
        stop_group(&mut restore).await;
        return Err(Outcome::failed("lost pg_restore's output"));
    };
    let counter = AtomicU64::new(bytes);
    let Some(log) = follow_restore(ctx, restore_err, totals, &counter, started, "restore").await
    else {
        stop_group(&mut restore).await;
        return Err(Outcome::Cancelled);
    };
    let restore_status = restore
        .wait()
        .await
        .map_err(|e| Outcome::failed(format!("lost track of pg_restore: {e}")))?;
    Ok(Run {
        restore: log,
        dump_status,
        restore_status,
        bytes,
    })
}
