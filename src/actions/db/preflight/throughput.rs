//! How fast the copy can go, sampled before the freeze: a TABLESAMPLE of the source's largest
//! table read (read-only), the same bytes written into a scratch table on the target in a
//! transaction rolled back. Imports only `connection` and `common`.

use std::time::Duration;

use crate::actions::db::common::bytes_human;
use crate::actions::db::connection::{explain, DbUrl};

/// How long the write side of the throughput sample may run, and about how much the read
/// side reads (a TABLESAMPLE of the largest table).
const SAMPLE_FOR: Duration = Duration::from_secs(2);
const SAMPLE_BYTES: usize = 32 << 20;
/// The write sample's first COPY, and the most one may carry: each next one twice the last.
const FIRST_BATCH: usize = 64 << 10;
const MAX_BATCH: usize = 8 << 20;

/// Bytes per second read from a sample of the source's largest table's pages (`COPY …
/// TABLESAMPLE … TO STDOUT`, read-only, about [`SAMPLE_BYTES`]) and written to a scratch table
/// of as many text columns on the target (`COPY … FROM STDIN` in a transaction rolled back).
/// The write goes in whole rows, as COPY statements of growing size, each finished — so its
/// bytes reached the server — before the clock is read: the sample stops at the first batch
/// that ends past [`SAMPLE_FOR`]. On a link too slow for even one batch in that time the
/// first batch still gives the figure. `None` when the source has no table.
pub async fn throughput_sample(
    source_url: &DbUrl,
    target_url: &DbUrl,
) -> Result<Option<(f64, f64)>, String> {
    use futures_util::{SinkExt, StreamExt};

    // A connection of its own for the sample; the client reads the whole (bounded) sample.
    let source = source_url.connect().await?;
    let largest = source
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), \
                    (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::int, \
                    pg_table_size(c.oid)::float8 \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'cutover\\_capture%' \
                AND n.nspname NOT LIKE 'pg_toast%' \
              ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| format!("no throughput sample: {}", explain(&e)))?;
    let Some(row) = largest.first() else {
        return Ok(None);
    };
    let table: String = row.get(0);
    let columns: i32 = row.get(1);
    let table_bytes: f64 = row.get(2);
    // A sample of the table's pages of about SAMPLE_BYTES (its size with TOAST: wide values
    // such as embeddings live there), read to its end: bounded work on the source, whatever
    // the table's size. Only the first SAMPLE_BYTES are kept for the write.
    let percent = (SAMPLE_BYTES as f64 / table_bytes.max(1.0) * 100.0).clamp(0.01, 100.0);
    let started = std::time::Instant::now();
    let stream = source
        .copy_out(&format!(
            "COPY (SELECT * FROM {table} TABLESAMPLE SYSTEM ({percent:.4})) TO STDOUT"
        ))
        .await
        .map_err(|e| format!("no throughput sample: {}", explain(&e)))?;
    futures_util::pin_mut!(stream);
    let mut sample: Vec<bytes::Bytes> = Vec::new();
    let mut read = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("no throughput sample: {}", explain(&e)))?;
        read += chunk.len();
        if read <= SAMPLE_BYTES {
            sample.push(chunk);
        }
    }
    let read_rate = read as f64 / started.elapsed().as_secs_f64().max(0.001);

    let mut target = target_url.connect().await?;
    let tx = target
        .transaction()
        .await
        .map_err(|e| format!("no write sample: {}", explain(&e)))?;
    let columns: Vec<String> = (1..=columns.max(1)).map(|i| format!("c{i} text")).collect();
    tx.batch_execute(&format!(
        "CREATE TABLE cutover_write_probe ({})",
        columns.join(", ")
    ))
    .await
    .map_err(|e| format!("no write sample: {}", explain(&e)))?;
    // Whole lines only: the sample may end inside one. Prepared before the clock starts.
    let mut joined: Vec<u8> = sample.concat();
    if let Some(end) = joined.iter().rposition(|b| *b == b'\n') {
        joined.truncate(end + 1);
    } else {
        joined.clear();
    }
    let started = std::time::Instant::now();
    let mut written = 0usize;
    let mut batch = FIRST_BATCH;
    while written < joined.len() && (written == 0 || started.elapsed() < SAMPLE_FOR) {
        let end = row_end(&joined, written + batch);
        let sink = tx
            .copy_in("COPY cutover_write_probe FROM STDIN")
            .await
            .map_err(|e| format!("no write sample: {}", explain(&e)))?;
        futures_util::pin_mut!(sink);
        for chunk in joined[written..end].chunks(FIRST_BATCH) {
            sink.send(bytes::Bytes::copy_from_slice(chunk))
                .await
                .map_err(|e| format!("no write sample: {}", explain(&e)))?;
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| format!("no write sample: {}", explain(&e)))?;
        written = end;
        batch = (batch * 2).min(MAX_BATCH);
    }
    let write_rate = written as f64 / started.elapsed().as_secs_f64().max(0.001);
    // Nothing of the probe stays on the target.
    tx.rollback()
        .await
        .map_err(|e| format!("no write sample: {}", explain(&e)))?;
    if read == 0 || written == 0 {
        return Err(format!(
            "no throughput sample: {table} gave {} to read and {} were written in {}",
            bytes_human(read as u64),
            bytes_human(written as u64),
            crate::clock::short(SAMPLE_FOR)
        ));
    }
    Ok(Some((read_rate, write_rate)))
}

/// Where the row that holds byte `at` ends (just past its newline), or the end of `data`.
fn row_end(data: &[u8], at: usize) -> usize {
    let at = at.saturating_sub(1).min(data.len());
    match memchr::memchr(b'\n', &data[at..]) {
        Some(i) => at + i + 1,
        None => data.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_batch_ends_with_a_whole_row() {
        let data = b"1\ta\n22\tbb\n333\tccc\n";
        assert_eq!(row_end(data, 1), 4);
        assert_eq!(row_end(data, 4), 4);
        assert_eq!(row_end(data, 5), 10);
        assert_eq!(row_end(data, 10), 10);
        assert_eq!(row_end(data, 11), 18);
        assert_eq!(row_end(data, 100), 18);
        // Every cut falls after a newline: a COPY ending there ends between rows.
        for at in 1..=data.len() {
            let end = row_end(data, at);
            assert_eq!(data[end - 1], b'\n', "{at}");
            assert!(end >= at);
        }
    }
}
