//! Change capture and catch-up: the first capability of the online move (issue 27, items 1
//! and 3), on the model of Bucardo: triggers record only *which rows* changed (table, key,
//! transaction id), never their contents; applying re-reads each changed row's current version
//! from the source, so applying is idempotent and needs no commit order.
//!
//! - `install` — `db.capture`: `mode = "install"` puts a change log and one trigger function in
//!   a schema of its own on the source, and on every table the copy copies a row trigger
//!   (insert, update, delete) and a TRUNCATE trigger, with the table owner's rights only (no
//!   superuser, no `session_replication_role`, no event trigger); the tables it cannot follow
//!   are decided and named before anything is installed. `mode = "remove"` takes it all away
//!   and proves from the catalogs that nothing is left.
//! - `catchup` — `db.catchup`: applies the change log to the target in batches, one target
//!   transaction per batch, its position journaled after each batch so a re-run (after a kill)
//!   starts where the last one stopped.
//!
//! - `apply` — the batches `db.catchup` applies the log in (and the final catch-up drains it
//!   with); `locks` — a catalog change under a short `lock_timeout`, retried.
//! - `catalog` — what install follows, recorded in the capture's schema, compared at the freeze.
//! - `guard` — on the target, a record of writes by anyone but the catch-up.
//! - `freeze` — `db.catchup` with `final = true`: the freeze's database part (the freeze point,
//!   the drain, what is copied whole, sequences, materialized views, the check by key).
//!
//! Still to land here: the reverse direction after the cutover (RDS's changes carried back to
//! Heroku).
//!
//! May import: `connection`, `tools`, `common`, `checksum`, `extensions` and `copy` (its
//! snapshot, its figures and its journal records). `verify` and `guards` may import it; it
//! imports neither.

mod apply;
pub mod catalog;
pub mod catchup;
mod freeze;
pub mod guard;
pub mod install;
mod locks;
mod order;

/// The schema the capture lives in unless the step names another (the copy, the checks and the
/// guards leave this one out of the app's tables).
pub const DEFAULT_SCHEMA: &str = crate::actions::db::common::CAPTURE_SCHEMA;
/// The change log's table, inside the capture's schema.
const LOG: &str = "changes";
/// What the capture follows, recorded at install (see `catalog`).
const CATALOG: &str = "catalog";
/// On the target: the log of writes by anyone but the catch-up, its function, its triggers.
const GUARD_LOG: &str = "target_writes";
const GUARD_FUNCTION: &str = "guard";
const GUARD_ROW: &str = "cutover_capture_guard";
const GUARD_TRUNCATE: &str = "cutover_capture_guard_truncate";
/// On a target whose foreign keys stay on (Heroku, the way back): the rows the catch-up itself
/// changed there, per table, so `db.idle` can tell its writes from anyone else's.
pub const GUARD_TALLY: &str = "applied";
/// The trigger function, inside the capture's schema.
const FUNCTION: &str = "record_change";
/// The triggers' names on each followed table.
const ROW_TRIGGER: &str = "cutover_capture_row";
const TRUNCATE_TRIGGER: &str = "cutover_capture_truncate";

/// A capture schema name as the step gives it: a plain lower-case identifier, so that it
/// reads the same quoted or not and never needs escaping in the trigger function's body, and
/// starting with `cutover_capture`.
pub fn schema_name(given: Option<&str>) -> Result<String, crate::actions::Outcome> {
    let name = given.unwrap_or(DEFAULT_SCHEMA);
    // Every schema cutover keeps is named so: the copy, the checks and the counters leave
    // `cutover_capture*` out of the app's tables.
    let plain = name.starts_with(DEFAULT_SCHEMA)
        && name.len() < 60
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(name.to_string())
    } else {
        Err(crate::actions::Outcome::failed(format!(
            "`schema` = {name:?}: give a plain lower-case identifier (letters, digits, _) starting with {DEFAULT_SCHEMA} (cutover's schemas are left out of the app's tables by that name)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert_eq!(schema_name(None).ok().as_deref(), Some(DEFAULT_SCHEMA));
        assert_eq!(
            schema_name(Some("cutover_capture_back")).ok().as_deref(),
            Some("cutover_capture_back")
        );
        assert!(schema_name(Some("cap_2")).is_err(), "not cutover's prefix");
        assert!(schema_name(Some("Cap")).is_err());
        assert!(schema_name(Some("a\"; DROP")).is_err());
        assert!(schema_name(Some("")).is_err());
    }
}
