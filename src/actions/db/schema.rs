//! What each database action kind takes and gives, as `cutover validate`, plans and screens
//! see it: parameters with their types and help, and outputs. No behaviour lives here.

use crate::runbook::{ActionSchema, ParamSpec, ParamType};

const SOURCE: ParamSpec = ParamSpec::required(
    "source",
    ParamType::String,
    "source database URL (Heroku), usually ${secret.HEROKU_DATABASE_URL}",
);
const TARGET: ParamSpec = ParamSpec::required(
    "target",
    ParamType::String,
    "target database URL (RDS), usually ${secret.RDS_DATABASE_URL}",
);
const CA_BUNDLE: ParamSpec = ParamSpec::optional(
    "ca_bundle",
    ParamType::String,
    "CA certificates (PEM) for sslmode=verify-full, e.g. the RDS global bundle",
);
const BIN_DIR: ParamSpec = ParamSpec::optional(
    "bin_dir",
    ParamType::String,
    "directory holding pg_dump and pg_restore (default, or \"\": PATH)",
);

pub(super) static PREFLIGHT: ActionSchema = ActionSchema {
    kind: "db.preflight",
    summary: "checks both databases and the local pg_dump/pg_restore before the move",
    params: &[
        SOURCE,
        TARGET,
        CA_BUNDLE,
        BIN_DIR,
        ParamSpec::optional(
            "warn_size_gb",
            ParamType::Integer,
            "warn when the source is larger (20: Heroku backups stop being suitable)",
        ),
        ParamSpec::optional(
            "long_transaction",
            ParamType::Duration,
            "a source transaction open longer than this is reported (5m)",
        ),
        ParamSpec::optional(
            "jobs",
            ParamType::Integer,
            "connections the copy will open on the target (1)",
        ),
        ParamSpec::optional(
            "maintenance_work_mem",
            ParamType::String,
            "the copy's, for the sample index builds (\"1GB\", db.copy's default)",
        ),
        ParamSpec::optional(
            "index_sample_rows",
            ParamType::Integer,
            "rows sampled per expensive index (HNSW, IVFFlat, GIN, GiST) to time its build on the target (4000; 0: none)",
        ),
    ],
    outputs: &[
        "source_version",
        "target_version",
        "source_bytes",
        "read_mib_s",
        "write_mib_s",
        "predicted_copy_secs",
        "index_builds",
    ],
    needs_operator_note: false,
};

pub(super) static EXTENSIONS: ActionSchema = ActionSchema {
    kind: "db.extensions",
    summary:
        "creates on the target every extension the source has (vector first) and compares versions",
    params: &[SOURCE, TARGET, CA_BUNDLE],
    outputs: &["extensions"],
    needs_operator_note: false,
};

pub(super) static COPY: ActionSchema = ActionSchema {
    kind: "db.copy",
    summary: "copies a database: table-parallel COPY on one snapshot with each table read back and compared (default), or pg_dump | pg_restore streamed or through a work directory",
    params: &[
        SOURCE,
        TARGET,
        CA_BUNDLE,
        BIN_DIR,
        ParamSpec::optional(
            "mode",
            ParamType::String,
            "\"parallel\" (default: schema by pg_dump/pg_restore, data by COPY streams through cutover, verified on the stream), \"stream\" (pg_dump -Fc | pg_restore) or \"directory\" (with work_dir)",
        ),
        ParamSpec::optional(
            "work_dir",
            ParamType::String,
            "directory-format dump here and run both sides with `jobs` (mode \"directory\")",
        ),
        ParamSpec::optional(
            "jobs",
            ParamType::Integer,
            "parallel COPY streams, or pg_dump/pg_restore jobs with work_dir (2)",
        ),
        ParamSpec::optional(
            "read_back",
            ParamType::Bool,
            "mode parallel: read each table back from the target and compare it as it lands (true); false leaves the comparison to db.verify with source_checksums",
        ),
        ParamSpec::optional(
            "index_jobs",
            ParamType::Integer,
            "parallel index and constraint builds after the data (mode parallel; default: jobs)",
        ),
        ParamSpec::optional(
            "on_existing",
            ParamType::String,
            "\"fail\" (default) or \"reset\": drop what a previous copy left in the target first",
        ),
        ParamSpec::optional(
            "maintenance_work_mem",
            ParamType::String,
            "for the restore's index builds (HNSW/IVFFlat), e.g. \"1GB\" (default)",
        ),
        ParamSpec::optional(
            "allow_errors",
            ParamType::StringList,
            "regular expressions of restore errors to tolerate (default: Heroku's extension comment and heroku_ext schema errors)",
        ),
    ],
    outputs: &[
        "bytes",
        "tables",
        "indexes",
        "tolerated_errors",
        "source_system_identifier",
        "target_system_identifier",
        "target_database",
        "source_writes",
        "source_baseline",
        "target_state",
        "throughput_mib_s",
        "checksums",
        "target_checksums",
        "table_secs",
        "data_secs",
    ],
    needs_operator_note: false,
};

pub(super) static VERIFY: ActionSchema = ActionSchema {
    kind: "db.verify",
    summary: "compares every table's rows and content checksum, sequences, extensions, indexes and a vector search",
    params: &[
        SOURCE,
        TARGET,
        CA_BUNDLE,
        ParamSpec::optional(
            "connections",
            ParamType::Integer,
            "queries run at once across both databases (4); 1 checks one table after another",
        ),
        ParamSpec::optional(
            "chunk_mb",
            ParamType::Integer,
            "tables larger than this are checked in parallel pieces (64)",
        ),
        ParamSpec::optional(
            "source_checksums",
            ParamType::String,
            "the source's per-table checksums a parallel db.copy took from its stream (`${steps.db-copy.outputs.checksums}`): the source's tables are not read again, only the target's",
        ),
        ParamSpec::optional(
            "target_checksums",
            ParamType::String,
            "with source_checksums: the target's, as the copy read each table back (`${steps.db-copy.outputs.target_checksums}`): no table is read again; sequences, extensions, indexes and the vector search are still checked",
        ),
    ],
    outputs: &[
        "tables",
        "rows",
        "report",
        "materialized_views",
        "large_objects",
    ],
    needs_operator_note: false,
};

pub(super) static IDLE: ActionSchema = ActionSchema {
    kind: "db.idle",
    summary: "proves a database unused before it is deleted: no other client over a window, no write since a baseline",
    params: &[
        ParamSpec::required(
            "url",
            ParamType::String,
            "the database about to be removed, usually ${secret.HEROKU_DATABASE_URL}",
        ),
        ParamSpec::optional(
            "window",
            ParamType::Duration,
            "how long no other client may be connected (60s)",
        ),
        ParamSpec::optional(
            "deadline",
            ParamType::Duration,
            "how long clients get to leave before the step fails naming them (3 × window)",
        ),
        ParamSpec::optional(
            "baseline",
            ParamType::String,
            "what the copy recorded of the source, ${steps.db-copy.outputs.source_baseline} (or its bare counters, source_writes): any table written since fails the step",
        ),
        ParamSpec::optional(
            "ignore_applications",
            ParamType::StringList,
            "application names of clients that do not count (e.g. the provider's monitoring)",
        ),
        CA_BUNDLE,
    ],
    outputs: &["clients", "written_tables"],
    needs_operator_note: false,
};

pub(super) static WRITES: ActionSchema = ActionSchema {
    kind: "db.writes",
    summary: "records a database's write counters, or counts the rows changed since recorded ones (what going back would lose)",
    params: &[
        ParamSpec::required("url", ParamType::String, "database URL"),
        ParamSpec::optional(
            "since",
            ParamType::String,
            "counters recorded earlier (this action's `counters`): count the rows changed since",
        ),
        ParamSpec::optional(
            "capture",
            ParamType::String,
            "a change capture's schema on this database: where it is installed, what a catch-up would carry (changes, rows, the oldest's age, the time predicted) is said instead of what would be lost",
        ),
        ParamSpec::optional(
            "applied_by",
            ParamType::String,
            "the catch-up step that carries the capture's changes: its position and rate, when it has run",
        ),
        CA_BUNDLE,
    ],
    outputs: &["counters", "changed_rows", "backlog"],
    needs_operator_note: false,
};

pub(super) static SQL: ActionSchema = ActionSchema {
    kind: "db.sql",
    summary: "runs SQL (a statement or a file) against a database and shows what it returns",
    params: &[
        ParamSpec::required("url", ParamType::String, "database URL"),
        ParamSpec::optional("sql", ParamType::String, "the statement(s)"),
        ParamSpec::optional(
            "file",
            ParamType::String,
            "a .sql file, relative to the runbook",
        ),
        CA_BUNDLE,
    ],
    outputs: &["rows"],
    needs_operator_note: false,
};

pub(super) static CAPTURE: ActionSchema = ActionSchema {
    kind: "db.capture",
    summary: "installs change capture on the source (a change log and triggers that record which rows changed, with the table owner's rights only), or removes it",
    params: &[
        ParamSpec::required(
            "url",
            ParamType::String,
            "the source database URL (Heroku), usually ${secret.HEROKU_DATABASE_URL}",
        ),
        ParamSpec::required(
            "mode",
            ParamType::String,
            "\"install\" (the log and the triggers; installing twice is harmless) or \"remove\" (all of it, checked gone in the catalogs)",
        ),
        ParamSpec::optional(
            "schema",
            ParamType::String,
            "the capture's own schema on the source (\"cutover_capture\")",
        ),
        ParamSpec::optional(
            "lock_timeout",
            ParamType::Duration,
            "how long each table's trigger creation may wait for its lock before it is tried again (2s)",
        ),
        ParamSpec::optional(
            "retries",
            ParamType::Integer,
            "tries again after a lock timeout, per table (5)",
        ),
        ParamSpec::optional(
            "without_key",
            ParamType::String,
            "a table with no primary key nor NOT NULL unique key: \"refuse\" (default: nothing is installed) or \"freeze\" (listed in whole_tables, to be copied whole inside the freeze)",
        ),
        ParamSpec::optional(
            "large_objects",
            ParamType::String,
            "large objects on the source (no trigger sees them): \"refuse\" (default: nothing is installed) or \"freeze\" (copied whole inside the freeze by the final catch-up)",
        ),
        ParamSpec::optional(
            "adopt",
            ParamType::String,
            "`mode = \"install\"`: the schema of a catch-up's guard on this database (\"cutover_capture\"): the writes it recorded by key (since the final catch-up into this database passed) are put at the head of the new log, so none made before the triggers went in is missed",
        ),
        ParamSpec::optional(
            "like",
            ParamType::String,
            "`mode = \"install\"`: another database's URL (Heroku's, for RDS's capture): only the tables it has too are followed; the others (created here by a migration at the cutover, say) are named and recorded as left out — a catch-up from here does not carry them",
        ),
        ParamSpec::optional(
            "target",
            ParamType::String,
            "mode = \"remove\": the target database URL too, to take away the guard db.catchup put there",
        ),
        CA_BUNDLE,
    ],
    outputs: &["schema", "tables", "whole_tables", "installed_at"],
    needs_operator_note: false,
};

pub(super) static CATCHUP: ActionSchema = ActionSchema {
    kind: "db.catchup",
    summary: "applies the captured changes to the target: the changed keys in batches, each re-read from the source and written in one target transaction; resumable",
    params: &[
        SOURCE,
        TARGET,
        ParamSpec::optional(
            "schema",
            ParamType::String,
            "the capture's schema on the source (\"cutover_capture\")",
        ),
        ParamSpec::optional(
            "batch",
            ParamType::Integer,
            "changes read and applied per target transaction (1000)",
        ),
        ParamSpec::optional(
            "until",
            ParamType::Any,
            "\"empty\" (default: the log read to its end) or a number: stop once the backlog is that small",
        ),
        ParamSpec::optional(
            "final",
            ParamType::Bool,
            "the freeze's database part (false): a freeze point, the schema compared with the one recorded at install, the log drained to zero with no write after the freeze point, the tables without a key and the large objects copied whole, sequences, materialized views, every changed row compared by key, no write on the target but the catch-up's; fails naming what differs",
        ),
        ParamSpec::optional(
            "lock_timeout",
            ParamType::Duration,
            "how long the guard's trigger creation on the target, and the final catch-up's lock of the change log (waiting for open writers), may wait (5s)",
        ),
        ParamSpec::optional(
            "retries",
            ParamType::Integer,
            "tries again after a lock timeout installing the target's guard, per table (5)",
        ),
        ParamSpec::optional(
            "resume",
            ParamType::String,
            "start where an earlier catch-up step stopped: its `resume` output, e.g. ${steps.db-catchup.outputs.resume} (without it a step starts at the beginning of the log; applying again is harmless, only slower)",
        ),
        ParamSpec::optional(
            "resume_step",
            ParamType::String,
            "the id of a catch-up step to start where it stopped, if it has run (a rollback's drain, which may come before that step ever ran)",
        ),
        ParamSpec::optional(
            "keep_guard",
            ParamType::Bool,
            "with `final = true`: leave the guard on the target once the check has passed (false), recording by key every write there from then on, for the capture installed there next to adopt (db.capture `adopt`)",
        ),
        ParamSpec::optional(
            "indexes",
            ParamType::String,
            "with `final = true`: \"compare\" (default: a table's index count differing fails the check) or \"own\" (the target keeps its own indexes — the way back, after an index a migration added on RDS: said, not failed)",
        ),
        ParamSpec::optional(
            "missing_capture",
            ParamType::String,
            "\"fail\" (default) or \"pass\": a source with no capture at all is nothing to carry, said so (a way back from a journal whose cutover installed none)",
        ),
        CA_BUNDLE,
    ],
    outputs: &[
        "position",
        "horizon",
        "applied",
        "backlog",
        "resume",
        "log_id",
        "source_baseline",
        "drained",
        "drain_secs",
        "checked_keys",
        "freeze_point",
        "backlog_oldest_secs",
        "applied_secs",
    ],
    needs_operator_note: false,
};
