//! The guards: proofs read off a live database before an irreversible move.
//!
//! - `idle` — `db.idle`, before the source is deleted: no other client for a window, and no
//!   table written since the copy (the copy's `baseline`, compared by counters and, where they
//!   cannot decide, by content against the copy's figures).
//! - `writes` — `db.writes`, what a DNS rollback would lose: the rows changed since recorded
//!   counters.
//!
//! May import: `connection`, `common`, `checksum`, and the copy's `baseline` (what the copy
//! recorded of its source). Nothing imports the guards but the dispatch in `db`.

pub mod idle;
pub mod writes;
