//! Rows hashed as the copy hashes its stream, shared by the copy, `db.verify` and `db.idle`:
//! a table's row count and an order-independent checksum of its rows' COPY text (the wrapping
//! sum of xxh3 of each row), and the journal's form of those figures, tied to the target table
//! they are of. Imports only `connection` and `common`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio_postgres::Client;

use crate::actions::db::common::{col, count_large_objects, query, USER_RELATION};
use crate::actions::db::connection::{explain, DbUrl};
use crate::actions::{ActionContext, Outcome};

/// Rows and the order-independent checksum of their text (wrapping sum of xxh3 of each row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    pub rows: u64,
    pub sum: u64,
}

impl Checksum {
    pub fn add(&mut self, other: Checksum) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// A table's figures as the journal keeps them (the copy's `checksums` and `target_checksums`):
/// the checksum, and the target table it belongs to — `SYSTEM_IDENTIFIER/OID` of the table the
/// copy created and filled. A later copy or a reset creates new tables, so figures of an
/// earlier copy are seen not to describe what the target holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    pub rows: u64,
    pub sum: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Recorded {
    pub fn checksum(&self) -> Checksum {
        Checksum {
            rows: self.rows,
            sum: self.sum,
        }
    }
}

/// How the journal names a target table: its server's system identifier and its OID.
pub fn target_table(server: &str, oid: u32) -> String {
    format!("{server}/{oid}")
}

/// Figures tied to the target tables they are of.
pub fn recorded(
    sums: &BTreeMap<String, Checksum>,
    server: &str,
    oids: &BTreeMap<String, u32>,
) -> BTreeMap<String, Recorded> {
    sums.iter()
        .map(|(name, sum)| {
            (
                name.clone(),
                Recorded {
                    rows: sum.rows,
                    sum: sum.sum,
                    target: oids.get(name).map(|oid| target_table(server, *oid)),
                },
            )
        })
        .collect()
}

/// Hashes COPY text rows as they stream by (a row ends at a newline; a newline inside a
/// value is escaped, so a raw one only ends rows), carrying a row cut between chunks.
#[derive(Default)]
pub struct RowHasher {
    carry: Vec<u8>,
    pub checksum: Checksum,
}

impl RowHasher {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                None => {
                    self.carry.extend_from_slice(chunk);
                    return;
                }
                Some(end) => {
                    self.carry.extend_from_slice(&chunk[..end]);
                    let row = std::mem::take(&mut self.carry);
                    self.row(&row);
                    chunk = &chunk[end + 1..];
                }
            }
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            self.row(&chunk[start..end]);
            start = end + 1;
        }
        self.carry.extend_from_slice(&chunk[start..]);
    }

    fn row(&mut self, row: &[u8]) {
        self.checksum.rows += 1;
        self.checksum.sum = self
            .checksum
            .sum
            .wrapping_add(xxhash_rust::xxh3::xxh3_64(row));
    }

    /// The checksum, or an error when the stream ended inside a row.
    pub fn finish(self) -> Result<Checksum, String> {
        if self.carry.is_empty() {
            Ok(self.checksum)
        } else {
            Err("the stream ended inside a row".into())
        }
    }
}

/// The columns a copy copies and hashes, per table (`schema.table` → quoted, comma-separated;
/// generated columns are not copied).
pub async fn copied_columns(client: &Client) -> Result<BTreeMap<String, String>, Outcome> {
    let rows = query(
        client,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname), {COLUMNS} \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND {USER_RELATION}"
        ),
        "listing the tables' columns",
    )
    .await?;
    rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
}

/// A table's copied columns (over `pg_class c`).
pub const COLUMNS: &str = "coalesce((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a \
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '')";

/// A table's rows as a server holds them (`columns` of `name`, quoted), hashed as the copy
/// hashes the source's stream.
pub async fn read_back(client: &Client, name: &str, columns: &str) -> Result<Checksum, String> {
    if columns.is_empty() {
        return Ok(Checksum::default());
    }
    hash_rows(client, &format!("SELECT {columns} FROM ONLY {name}")).await
}

/// The rows a query returns, through COPY, hashed.
pub async fn hash_rows(client: &Client, select: &str) -> Result<Checksum, String> {
    let out = client
        .copy_out(&format!("COPY ({select}) TO STDOUT"))
        .await
        .map_err(|e| explain(&e))?;
    futures_util::pin_mut!(out);
    let mut hasher = RowHasher::default();
    while let Some(chunk) = out.next().await {
        hasher.feed(&chunk.map_err(|e| explain(&e))?);
    }
    hasher.finish()
}

/// Tables (by weight, `schema.table`) of one database hashed row by row as a parallel copy
/// hashes its stream, over `connections` connections reading every row (row-level security
/// off). A table the database does not have is left out of the answer.
pub async fn hash_tables(
    ctx: &ActionContext,
    url: &DbUrl,
    wanted: Vec<(u64, String)>,
    connections: usize,
) -> Result<BTreeMap<String, Checksum>, Outcome> {
    let client = url
        .connect_all_rows()
        .await
        .map_err(|e| Outcome::failed(format!("database: {e}")))?;
    let columns = copied_columns(&client).await?;
    let mut work = Vec::new();
    for (weight, name) in wanted {
        if let Some(cols) = columns.get(&name) {
            work.push((weight, name, cols.clone()));
        }
    }
    work.sort();
    let queue = Arc::new(Mutex::new(work));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let queue = queue.clone();
        let url = url.clone();
        workers.spawn(async move {
            let client = url.connect_all_rows().await?;
            let mut out = Vec::new();
            loop {
                let Some((_, name, columns)) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return Ok::<_, String>(out);
                };
                let sum = read_back(&client, &name, &columns)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                out.push((name, sum));
            }
        });
    }
    let mut sums = BTreeMap::new();
    loop {
        let joined = tokio::select! {
            j = workers.join_next() => j,
            () = ctx.cancel.cancelled() => {
                workers.abort_all();
                return Err(Outcome::Cancelled);
            }
        };
        match joined {
            None => break,
            Some(Ok(Ok(done))) => sums.extend(done),
            Some(Ok(Err(e))) => return Err(Outcome::failed(format!("reading back: {e}"))),
            Some(Err(e)) => return Err(Outcome::failed(format!("reading back: {e}"))),
        }
    }
    Ok(sums)
}

/// How many large objects a database holds, and the checksum of their contents: per MiB of
/// each, a 64-bit hash of (object, chunk number, the chunk's MD5), summed — only digests are
/// carried, whatever the objects' sizes.
pub async fn large_objects(client: &Client) -> Result<(u64, i128), Outcome> {
    let count = count_large_objects(client).await?;
    if count == 0 {
        return Ok((0, 0));
    }
    let rows = query(
        client,
        "WITH RECURSIVE chunk(lo, n, len, h) AS (              SELECT m.oid, 0::bigint, length(p), md5(p)                FROM pg_catalog.pg_largeobject_metadata m, LATERAL pg_catalog.lo_get(m.oid, 0, 1048576) p            UNION ALL              SELECT c.lo, c.n + 1, length(p), md5(p)                FROM chunk c, LATERAL pg_catalog.lo_get(c.lo, (c.n + 1) * 1048576, 1048576) p               WHERE c.len = 1048576)          SELECT coalesce(sum(('x' || substr(md5(lo::text || ':' || n || ':' || h), 1, 16))::bit(64)::bigint), 0)::text            FROM chunk",
        "reading the large objects",
    )
    .await?;
    let text: String = match rows.first() {
        Some(row) => col(row, 0)?,
        None => "0".to_string(),
    };
    let sum = text
        .parse::<i128>()
        .map_err(|e| Outcome::failed(format!("large objects: checksum {text:?}: {e}")))?;
    Ok((count, sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_hashed_whole_however_the_stream_is_cut() {
        let text = b"1\talice\n2\tbob\\nsmith\n3\t\\N\n";
        let mut whole = RowHasher::default();
        whole.feed(text);
        let whole = whole.finish().unwrap();
        assert_eq!(whole.rows, 3);
        for cut in 1..text.len() {
            let mut parts = RowHasher::default();
            parts.feed(&text[..cut]);
            parts.feed(&text[cut..]);
            assert_eq!(parts.finish().unwrap(), whole, "cut at {cut}");
        }
        // Order does not matter; a changed, missing, duplicated or swapped value does.
        let mut reordered = RowHasher::default();
        reordered.feed(b"3\t\\N\n1\talice\n2\tbob\\nsmith\n");
        assert_eq!(reordered.finish().unwrap(), whole);
        for other in [
            &b"1\talice\n2\tbob\\nsmith\n3\tx\n"[..],
            b"1\talice\n2\tbob\\nsmith\n",
            b"1\talice\n1\talice\n2\tbob\\nsmith\n3\t\\N\n",
            b"1\tbob\\nsmith\n2\talice\n3\t\\N\n",
        ] {
            let mut h = RowHasher::default();
            h.feed(other);
            assert_ne!(h.finish().unwrap(), whole);
        }
        let mut cut = RowHasher::default();
        cut.feed(b"1\talice\n2\tbo");
        assert!(cut.finish().is_err());
    }
}
