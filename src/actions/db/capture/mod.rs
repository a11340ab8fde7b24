//! Change capture and catch-up: where the online move and the lossless rollback will live.
//! Nothing is built here yet.
//!
//! What lands here: capturing the source's changes from the copy's snapshot on (logical
//! decoding from a slot created with the snapshot the parallel copy exports, or triggers into
//! a change table where the provider allows no replication slot), applying them to the target
//! until it has caught up (so the write freeze shrinks to the catch-up's tail), and the same in
//! the other direction after the cutover (RDS's changes carried back to Heroku, so a DNS
//! rollback loses nothing). The guards would then take their proof from the captured change
//! log instead of the statistics.
//!
//! May import: `connection`, `tools`, `common`, `checksum`, `extensions` and `copy` (its
//! snapshot, its figures and its journal records). `verify` and `guards` may import it; it
//! imports neither.
