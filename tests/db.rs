//! The database move against two real PostgreSQL 16 + pgvector clusters started by scripts/test:
//! one plays Heroku (CUTOVER_TEST_PG_SOURCE, holding the app-like `app_fixture` database from
//! tests/fixtures/app-db.sql), one plays RDS (CUTOVER_TEST_PG_TARGET). Each test copies the
//! fixture into databases of its own and drives the steps through the `cutover` binary.

mod common;
use common::{code, text};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::moto::runtime;
use common::pg::{self, client, Clusters};
use common::{Project, Runbook};

/// A project whose runbook has these steps in one phase `db`, its secrets SOURCE and TARGET
/// from the environment, given these URLs, and the clusters' PostgreSQL 16 tools first on PATH.
fn project(source: &str, target: &str, steps: &str) -> Project {
    let runbook = Runbook::new("db")
        .secret("SOURCE", r#"{ env = "T_SOURCE_URL" }"#)
        .secret("TARGET", r#"{ env = "T_TARGET_URL" }"#)
        .phase("db", None)
        .steps(steps);
    Project::new(&runbook)
        .env("T_SOURCE_URL", source)
        .env("T_TARGET_URL", target)
        .env("PATH", Clusters::from_env().path())
}

const PREFLIGHT: &str = "[[phase.step]]\nid = \"preflight\"\ndo = \"db.preflight\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\n\n";
const EXTENSIONS: &str = "[[phase.step]]\nid = \"extensions\"\ndo = \"db.extensions\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\n\n";
const COPY: &str = "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\n\n";
const VERIFY: &str = "[[phase.step]]\nid = \"verify\"\ndo = \"db.verify\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nchunk_mb = 4\n\n";

#[test]
fn preflight_extensions_copy_and_verify_pass_on_the_app_database() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("flow");
    runtime().block_on(async {
        // Older Heroku databases reach heroku_ext through the database's search_path.
        client(&source)
            .await
            .batch_execute("ALTER DATABASE s_flow SET search_path = public, heroku_ext")
            .await
            .unwrap();
    });
    let sql = "[[phase.step]]\nid = \"count\"\ndo = \"db.sql\"\nurl = \"${secret.TARGET}\"\nsql = \"SELECT count(*) AS users FROM public.users\"\n\n";
    // The same preflight with a smaller sample and less memory for the index builds than the
    // whole HNSW graph of `documents` needs (but more than its sample's).
    let spill = "[[phase.step]]\nid = \"preflight-spill\"\ndo = \"db.preflight\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nindex_sample_rows = 1000\nmaintenance_work_mem = \"16MB\"\n\n";
    let p = project(
        &source,
        &target,
        &format!("{PREFLIGHT}{spill}{EXTENSIONS}{COPY}{VERIFY}{sql}"),
    );
    for step in ["preflight", "preflight-spill"] {
        let out = p.run(&["run", step]);
        assert_eq!(
            code(&out),
            0,
            "{step}: {}\n{}",
            text(&out),
            p.run(&["log", step]).stdout()
        );
    }
    // The index sample built pgvector's HNSW index on the target, inside a transaction rolled
    // back: no scratch schema, and neither the extension nor its schema stayed behind.
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname IN ('cutover_probe', 'heroku_ext')) \
                  + (SELECT count(*) FROM pg_extension WHERE extname = 'vector')"
        ),
        "0"
    );
    let builds = |step: &str| -> Vec<serde_json::Value> {
        let log = p.run(&["log", step]).stdout();
        let line = log
            .lines()
            .find(|l| l.contains("output index_builds = "))
            .unwrap_or_else(|| panic!("no index_builds: {log}"));
        serde_json::from_str(line.split_once(" = ").unwrap().1).unwrap()
    };
    let whole = builds("preflight");
    assert_eq!(whole.len(), 1, "{whole:?}");
    let hnsw = &whole[0];
    assert_eq!(hnsw["index"], "public.documents_embedding_idx");
    assert_eq!(hnsw["kind"], "hnsw");
    assert_eq!(hnsw["rows"], 3000);
    // The whole table is the sample: built on an eighth, a quarter, a half and all of it.
    assert_eq!(
        hnsw["sample_rows"],
        serde_json::json!([375, 750, 1500, 3000])
    );
    let secs: Vec<f64> = serde_json::from_value(hnsw["sample_secs"].clone()).unwrap();
    assert!(secs.iter().all(|s| *s > 0.0), "{secs:?}");
    assert_eq!(hnsw["predicted_secs"].as_f64(), Some(secs[3]));
    let exponent = hnsw["exponent"].as_f64().unwrap();
    assert!((1.0..=2.0).contains(&exponent), "{exponent}");
    // 3000 embeddings of 1536 dimensions: a graph of megabytes, within 1 GB.
    let bytes = hnsw["index_bytes"].as_u64().unwrap();
    assert!(bytes > 3000 * 6144, "{bytes}");
    assert_eq!(hnsw["memory_bytes"], 1u64 << 30);
    let log = p.run(&["log", "preflight"]).stdout();
    assert!(
        log.contains("pass  index build")
            && log.contains("public.documents_embedding_idx (hnsw on public.documents, 3000 rows)")
            && log.contains("within maintenance_work_mem (1.0 GiB)"),
        "{log}"
    );
    // 1000 rows sampled, 16 MB of memory: the sample's graph fits, the table's does not. The
    // sample measured the build on disk too, and the prediction carries it.
    let spilled = &builds("preflight-spill")[0];
    assert_eq!(
        spilled["sample_rows"],
        serde_json::json!([125, 250, 500, 1000])
    );
    assert_eq!(spilled["memory_bytes"], 16u64 << 20);
    let factor = spilled["spill_factor"].as_f64().unwrap();
    assert!(factor >= 1.0, "{factor}");
    let secs: Vec<f64> = serde_json::from_value(spilled["sample_secs"].clone()).unwrap();
    let exponent = spilled["exponent"].as_f64().unwrap();
    let expected = secs[3] * 3f64.powf(exponent) * factor;
    assert!(
        (spilled["predicted_secs"].as_f64().unwrap() - expected).abs() < 1e-6 * expected.max(1.0),
        "{spilled}"
    );
    let log = p.run(&["log", "preflight-spill"]).stdout();
    assert!(
        log.contains("WARN  index build")
            && log
                .contains("more than maintenance_work_mem (16.0 MiB): pgvector builds it on disk"),
        "{log}"
    );
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('cutover_probe', 'heroku_ext')"
        ),
        "0"
    );

    for step in ["extensions", "copy", "verify", "count"] {
        let out = p.run(&["run", step]);
        assert_eq!(
            code(&out),
            0,
            "{step}: {}\n{}",
            text(&out),
            p.run(&["log", step]).stdout()
        );
    }

    let preflight = p.run(&["log", "preflight"]).stdout();
    assert!(preflight.contains("pass  source server"), "{preflight}");
    assert!(preflight.contains("PostgreSQL 16."), "{preflight}");
    assert!(
        preflight.contains("WARN  primary keys") && preflight.contains("public.page_views"),
        "{preflight}"
    );
    assert!(
        preflight.contains("WARN  heroku_ext") && preflight.contains("vector"),
        "{preflight}"
    );
    assert!(preflight.contains("pass  pg_dump"), "{preflight}");
    // The copy's speed, sampled: a figure for each side and a predicted copy time; the write
    // sample left nothing on the target (its transaction rolled back).
    assert!(
        preflight.contains("pass  copy speed") && preflight.contains("read "),
        "{preflight}"
    );
    for output in ["read_mib_s", "write_mib_s", "predicted_copy_secs"] {
        let line = preflight
            .lines()
            .find(|l| l.contains(&format!("output {output} = ")))
            .unwrap_or_else(|| panic!("{output}: {preflight}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 0.0, "{line}");
    }
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM pg_class WHERE relname = 'cutover_write_probe'"
        ),
        "0"
    );

    let extensions = p.run(&["log", "extensions"]).stdout();
    assert!(extensions.contains("schema heroku_ext"), "{extensions}");
    assert!(
        extensions.contains("search_path = public, heroku_ext set on the target"),
        "{extensions}"
    );

    let copy = p.run(&["log", "copy"]).stdout();
    assert!(
        copy.contains("tolerated restore error: ERROR:  schema \"heroku_ext\" already exists"),
        "{copy}"
    );
    // The parallel engine: one snapshot, each table read back and compared as it lands.
    assert!(
        copy.contains("snapshot ") && copy.contains(" exported"),
        "{copy}"
    );
    for (table, rows) in [
        ("public.documents", 3000),
        ("public.events", 250000),
        ("public.page_views", 50119),
        ("public.users", 20000),
    ] {
        assert!(
            copy.contains(&format!(
                "{table}: {rows} rows copied and read back, checksums equal"
            )),
            "{copy}"
        );
    }
    assert!(
        copy.contains("sequence(s) set to their values in the snapshot"),
        "{copy}"
    );

    let verify = p.run(&["log", "verify"]).stdout();
    for table in [
        "public.documents",
        "public.events",
        "public.page_views",
        "public.users",
    ] {
        let line = verify
            .lines()
            .find(|l| l.starts_with(&format!("» {table} ")))
            .unwrap_or_else(|| panic!("{table} not in the report:\n{verify}"));
        assert!(line.ends_with("match"), "{line}");
        if table == "public.documents" {
            assert_eq!(line.matches(" 3000 ").count(), 2, "{line}");
        }
    }
    assert!(verify.contains("same 10 ids in the same order"), "{verify}");
    assert!(p.run(&["log", "count"]).stdout().contains("20000"));

    // What the journal keeps: the outputs, never a URL's password.
    let journal = p.read(".cutover/journal.jsonl");
    assert!(journal.contains("\"rows\""), "{journal}");
    let password = common::var("CUTOVER_TEST_PG_PASSWORD");
    assert!(!journal.contains(&password));
    assert!(!copy.contains(&password) && !verify.contains(&password));

    assert_eq!(
        pg::scalar(&target, "SELECT count(*) FROM public.events"),
        "250000"
    );
    assert_eq!(
        pg::scalar(&target, "SELECT last_value FROM public.invoice_number_seq"),
        "4242"
    );
}

/// One fault, injected into a fresh copy of a verified target; verify must fail naming it.
struct Fault {
    name: &'static str,
    sql: &'static str,
    expect: &'static [&'static str],
}

const FAULTS: [Fault; 9] = [
    Fault {
        name: "changed",
        sql: "UPDATE users SET display_name = display_name || '.' WHERE id = 17",
        expect: &["public.users: content checksum differs"],
    },
    Fault {
        name: "deleted",
        sql: "DELETE FROM events WHERE id = 123456",
        expect: &["public.events: 250000 rows on the source, 249999 on the target"],
    },
    Fault {
        name: "duplicated",
        sql: "INSERT INTO page_views SELECT * FROM page_views WHERE path = '/p/7' LIMIT 1",
        expect: &["public.page_views: 50119 rows on the source, 50120 on the target"],
    },
    Fault {
        name: "swapped",
        sql: "UPDATE users u SET display_name = o.display_name FROM users o \
              WHERE (u.id, o.id) IN ((5, 6), (6, 5))",
        expect: &["public.users: content checksum differs"],
    },
    Fault {
        name: "vector",
        sql: "UPDATE documents SET embedding = \
              ((embedding::real[])[1:1535] || ARRAY[0.5::real])::heroku_ext.vector WHERE id = 42",
        expect: &["public.documents: content checksum differs"],
    },
    Fault {
        name: "sequence",
        sql: "SELECT setval('invoice_number_seq', 1000)",
        expect: &["sequence public.invoice_number_seq: behind on the target (1000 < 4242)"],
    },
    Fault {
        name: "extension",
        sql: "DROP EXTENSION vector CASCADE",
        expect: &["extension vector 0.8", "missing on the target"],
    },
    Fault {
        name: "large_object",
        sql: "SELECT lo_put(424242, 1000, '\\x00'::bytea)",
        expect: &["large objects: content checksum differs"],
    },
    Fault {
        name: "matview",
        sql: "REFRESH MATERIALIZED VIEW busiest_users WITH NO DATA",
        expect: &["public.busiest_users: materialized view not populated on the target"],
    },
];

#[test]
fn verify_catches_every_injected_fault_and_names_the_table() {
    let pg = Clusters::from_env();
    let (source, base) = pg.databases("faultbase");
    let p = project(&source, &base, &format!("{EXTENSIONS}{COPY}{VERIFY}"));
    for step in ["extensions", "copy", "verify"] {
        let out = p.run(&["run", step]);
        assert_eq!(
            code(&out),
            0,
            "{step}: {}\n{}",
            text(&out),
            p.run(&["log", step]).stdout()
        );
    }
    let status: serde_json::Value =
        serde_json::from_slice(&p.run(&["status", "--json"]).stdout).unwrap();
    let recorded = status["phases"][0]["steps"][1]["outputs"]["checksums"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        recorded.contains("\"public.events\":{\"rows\":250000"),
        "{recorded}"
    );
    for fault in &FAULTS {
        let db = format!("t_fault_{}", fault.name);
        let target = pg::url_for(&pg.target, &db);
        pg::run_sql(
            &pg.target,
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        );
        pg::run_sql(
            &pg.target,
            &format!("CREATE DATABASE {db} TEMPLATE t_faultbase"),
        );
        pg::run_sql(&target, fault.sql);
        // Both ways: reading the source again, and against the checksums the parallel copy
        // took from the source's stream (only the target is read).
        let recorded_verify = format!(
            "[[phase.step]]\nid = \"verify\"\ndo = \"db.verify\"\nsource = \"${{secret.SOURCE}}\"\ntarget = \"${{secret.TARGET}}\"\nsource_checksums = '{recorded}'\n\n"
        );
        for (how, runbook) in [
            ("rescan", VERIFY.to_string()),
            ("recorded", recorded_verify),
        ] {
            let f = project(&source, &target, &runbook);
            let out = f.run(&["run", "verify"]);
            assert_eq!(code(&out), 1, "{} ({how}): {}", fault.name, text(&out));
            let said = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                f.run(&["log", "verify"]).stdout()
            );
            if how == "recorded" {
                assert!(
                    said.contains("only") || said.contains("reading back"),
                    "{said}"
                );
            }
            for expected in fault.expect {
                assert!(
                    said.contains(expected),
                    "{} ({how}): {expected:?} not in\n{said}",
                    fault.name
                );
            }
        }
    }
}

#[test]
fn a_copy_killed_halfway_is_refused_then_reset_and_copied_to_a_verified_result() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("killed");
    let reset_copy = "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\non_existing = \"reset\"\ndestructive = true\nconfirm = \"reset t_killed\"\n\n";
    let plain_copy = "[[phase.step]]\nid = \"copy-again\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\n\n";
    let p = project(
        &source,
        &target,
        &format!("{reset_copy}{plain_copy}{VERIFY}"),
    );
    let mut child = p
        .command(&["run", "copy", "--confirm", "reset t_killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill everything once the restore has started loading data: cutover, pg_dump, pg_restore
    // (as a crash of the operator's machine would).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the copy never started loading");
        let loaded = pg::scalar(
            &target,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 't_killed' AND query LIKE 'COPY %'",
        );
        if loaded != "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its children first (pg_dump and pg_restore lead their own process groups), then itself.
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &child.id().to_string()])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    pg::run_sql(&pg.target,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 't_killed' AND pid <> pg_backend_pid()",
    );

    // The driver and its children are gone: the kernel released the lock, nothing to unlock.
    // A copy without a reset policy refuses to restore over what the killed one left, naming
    // the target as the journal recorded it — even once every table is gone, since a
    // half-restore leaves more than tables (types, functions, schemas).
    let out = p.run(&["run", "copy-again"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        said.contains("t_killed is dirty: step `copy` stopped while restoring into it"),
        "{said}"
    );
    runtime().block_on(async {
        client(&target)
            .await
            .batch_execute(
                "DO $$ DECLARE r record; BEGIN FOR r IN SELECT schemaname, tablename FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') LOOP \
                 EXECUTE format('DROP TABLE %I.%I CASCADE', r.schemaname, r.tablename); END LOOP; END $$",
            )
            .await
            .unwrap();
    });
    let out = p.run(&["run", "copy-again"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is dirty"),
        "{}",
        text(&out)
    );

    // The confirmation names the target's host and database before the phrase is typed.
    let out = p.run(&["run", "copy"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("It will: parallel COPY"), "{said}");
    assert!(
        said.contains("127.0.0.1:") && said.contains("/t_killed"),
        "{said}"
    );
    assert!(said.contains("first drops every table"), "{said}");

    // The interrupted step runs again (its phrase typed again), resets and copies.
    let out = p.run(&["run", "copy", "--confirm", "reset t_killed"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    let log = p.run(&["log", "copy"]).stdout();
    assert!(log.contains("an earlier attempt left"), "{log}");
    let out = p.run(&["run", "verify"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "verify"]).stdout()
    );
    // Whole again: the other copy step now refuses for the tables, not for dirt.
    let out = p.run(&["run", "copy-again"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("the target already holds"), "{said}");
    assert!(!said.contains("dirty"), "{said}");
}

#[test]
fn directory_mode_copies_in_parallel_and_verifies() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("dirmode");
    let copy = "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nwork_dir = \"dump\"\njobs = 2\n\n";
    let p = project(&source, &target, &format!("{copy}{VERIFY}"));
    let out = p.run(&["run", "copy"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    assert!(p
        .run(&["log", "copy"])
        .stdout()
        .contains("pg_dump -Fd -j 2"));
    // The dump held the data: it is gone once restored.
    assert!(!p.path().join("dump/copy.dump").exists());
    let out = p.run(&["run", "verify"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "verify"]).stdout()
    );
}

#[test]
fn a_non_owner_restore_tolerates_only_the_allowed_errors_and_shows_them() {
    let pg = Clusters::from_env();
    let (source, _) = pg.databases("nonowner");
    // As on RDS: the extension is created by a more privileged role, the app's role restores.
    pg::run_sql(
        &pg.target,
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gengar_app') THEN \
         CREATE ROLE gengar_app LOGIN PASSWORD 'app-pass-7'; END IF; END $$",
    );
    pg::run_sql(&pg.target, "ALTER DATABASE t_nonowner OWNER TO gengar_app");
    runtime().block_on(async {
        let t = client(&pg::url_for(&pg.target, "t_nonowner")).await;
        t.batch_execute(
            "CREATE SCHEMA heroku_ext AUTHORIZATION gengar_app; CREATE EXTENSION vector WITH SCHEMA heroku_ext; \
             ALTER SCHEMA public OWNER TO gengar_app",
        )
        .await
        .unwrap();
    });
    let base = pg.target.clone();
    let host = base.rsplit_once('@').unwrap().1.rsplit_once('/').unwrap().0;
    let target = format!("postgres://gengar_app:app-pass-7@{host}/t_nonowner?sslmode=disable");
    let strict = "[[phase.step]]\nid = \"strict\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nallow_errors = []\n\n";
    // The pg_dump | pg_restore path, still selectable.
    let reset = "[[phase.step]]\nid = \"copy-reset\"\ndo = \"db.copy\"\nmode = \"stream\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\non_existing = \"reset\"\n\n";
    let p = project(&source, &target, &format!("{strict}{COPY}{reset}{VERIFY}"));
    let out = p.run(&["run", "strict"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not on the allow-list"),
        "{}",
        text(&out)
    );
    // The refused restore left the target dirty: a copy without reset is refused, naming it.
    let out = p.run(&["run", "copy"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("t_nonowner is dirty: step `strict` stopped while restoring into it"),
        "{}",
        text(&out)
    );
    let out = p.run(&["run", "copy-reset"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy-reset"]).stdout()
    );
    assert!(p
        .run(&["log", "copy-reset"])
        .stdout()
        .contains("processing data for table"));
    let log = p.run(&["log", "copy-reset"]).stdout();
    assert!(
        log.contains("tolerated restore error: ERROR:  must be owner of extension vector | COMMENT ON EXTENSION vector"),
        "{log}"
    );
    let out = p.run(&["run", "verify"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "verify"]).stdout()
    );
}

#[test]
fn unreachable_wrong_password_and_missing_pg_dump_fail_clearly() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("bad");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = project(
        &format!("postgres://postgres:x@127.0.0.1:{closed}/app"),
        &target,
        PREFLIGHT,
    );
    let out = p.run(&["run", "preflight"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("source: cannot connect to postgres@127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("nothing listens there"), "{err}");

    let wrong = source.replacen(
        &common::var("CUTOVER_TEST_PG_PASSWORD"),
        "not-the-password",
        1,
    );
    let p = project(&wrong, &target, PREFLIGHT);
    let out = p.run(&["run", "preflight"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("rotated"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    let copy = "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nbin_dir = \"empty\"\n\n";
    let p = project(&source, &target, copy);
    std::fs::create_dir(p.path().join("empty")).unwrap();
    let out = p.run(&["run", "copy"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump is not in"), "{err}");

    // Not on PATH at all: the message says what to install.
    let p = project(&source, &target, COPY);
    let out = p
        .command(&["run", "copy"])
        .env("PATH", p.path().join("nothing-here"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump is not installed"), "{err}");
    assert!(err.contains("postgresql-client-16"), "{err}");
}

/// The decommission guard on a real server: quiet database passes; a client that stays is named
/// (application, address — never its query); a write after the copy's counters fails it.
#[test]
fn db_idle_passes_when_unused_and_names_a_client_or_a_write() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("idle");
    let copy = "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\n\n";
    let idle = "[[phase.step]]\nid = \"idle\"\ndo = \"db.idle\"\nurl = \"${secret.SOURCE}\"\nwindow = \"2s\"\ndeadline = \"4s\"\nbaseline = \"${steps.copy.outputs.source_writes}\"\nneeds = [\"copy\"]\n\n";
    let p = project(&source, &target, &format!("{copy}{idle}"));
    let out = p.run(&["run", "copy"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    let status = p.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let outputs = &json["phases"][0]["steps"][0]["outputs"];
    let writes: std::collections::BTreeMap<String, i64> =
        serde_json::from_str(outputs["source_writes"].as_str().unwrap()).unwrap();
    assert!(writes.contains_key("public.events"), "{writes:?}");
    assert_ne!(
        outputs["source_system_identifier"], outputs["target_system_identifier"],
        "two clusters, two identities"
    );

    // Quiet: passes.
    let out = p.run(&["run", "idle"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "idle"]).stdout()
    );

    // A client that stays connected (an app still pointed at the old database) is named.
    let rt = runtime();
    let (stayer, conn) = rt
        .block_on(tokio_postgres::connect(
            &format!("{source}&application_name=forgotten-worker"),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    let handle = rt.spawn(conn);
    rt.block_on(stayer.batch_execute("SELECT 'secret query text'"))
        .unwrap();
    let out = p.run(&["run", "idle"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("still in use") && said.contains("forgotten-worker from 127.0.0.1"),
        "{said}"
    );
    assert!(!p
        .run(&["log", "idle"])
        .stdout()
        .contains("secret query text"));
    drop(stayer);
    handle.abort();
    drop(rt);
    std::thread::sleep(Duration::from_millis(300));

    // A write after the copy's counters: those rows are not on the target. On a runtime of its
    // own, dropped at once: the session ends (and its statistics reach the shared counters).
    runtime().block_on(async {
        let c = client(&source).await;
        c.batch_execute(
            "INSERT INTO events (user_id, kind, occurred_at) VALUES (1, 'late', now())",
        )
        .await
        .unwrap();
    });
    // Statistics reach the shared counters when the writer's session ends (it has).
    let out = p.run(&["run", "idle"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("written after the baseline")
            && text(&out).contains("public.events (1 row change(s) counted)"),
        "{}",
        text(&out)
    );
}

/// db.copy reads both servers' identities first: a target that is the source — the same URL,
/// or the same database through another host name — is refused before anything is written.
#[test]
fn a_copy_onto_its_own_source_is_refused_by_identity() {
    let pg = Clusters::from_env();
    let (source, _) = pg.databases("selfcopy");
    let other_name = source.replace("127.0.0.1", "localhost");
    assert_ne!(other_name, source);
    for target in [source.clone(), other_name] {
        let reset_copy = "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\non_existing = \"reset\"\ndestructive = true\nconfirm = \"reset\"\n\n";
        let p = project(&source, &target, reset_copy);
        let out = p.run(&["run", "copy", "--confirm", "reset"]);
        assert_eq!(code(&out), 1, "{}", text(&out));
        assert!(
            text(&out).contains("the target is the source"),
            "{}",
            text(&out)
        );
    }
    // Untouched: every table of the fixture is still there with its rows.
    let rows = pg::scalar(&source, "SELECT count(*) FROM events");
    assert_eq!(rows, "250000");
}

/// TLS through a forwarded port: RDS's certificate is checked for RDS's own host name while
/// the connection goes to a loopback port (libpq's `host` + `hostaddr`, the same split for
/// tokio-postgres). The server is the rehearsal's TLS front (this PostgreSQL build has no
/// TLS of its own) with a certificate for `rds.test.internal` from a test CA.
#[test]
fn tls_through_a_forwarded_port_is_verified_for_the_real_host_name() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(repo.join("scripts/pg-cluster"))
        .arg("cert")
        .arg(work.path().join("ca"))
        .arg(work.path().join("rds"))
        .arg("rds.test.internal")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let ca = work.path().join("ca/ca.pem");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pg = Clusters::from_env();
    let target = pg.target.clone();
    let upstream = target
        .rsplit_once('@')
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .0
        .to_string();
    struct Front(std::process::Child);
    impl Drop for Front {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _front = Front(
        Command::new("python3")
            .arg(repo.join("scripts/rehearsal/standin.py"))
            .args(["rds-tls", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &upstream])
            .arg("--cert")
            .arg(work.path().join("rds.pem"))
            .arg("--key")
            .arg(work.path().join("rds.key"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the TLS front never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let password = common::var("CUTOVER_TEST_PG_PASSWORD");
    let forwarded: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let url_for_name = |name: &str| {
        let mut url = cutover::actions::db::DbUrl::parse(
            &format!(
                "postgres://postgres:{password}@{name}:5432/postgres?sslmode=verify-full&sslrootcert={}",
                ca.display()
            ),
            None,
        )
        .unwrap();
        url.via = Some(forwarded);
        url
    };

    // tokio-postgres (what preflight, verify and the decommission guard use).
    runtime().block_on(async {
        let client = url_for_name("rds.test.internal").connect().await.unwrap();
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        let wrong = url_for_name("wrong.test.internal").connect().await;
        let Err(error) = wrong else {
            panic!("a certificate for another name is refused");
        };
        assert!(error.contains("wrong.test.internal"), "{error}");
        assert!(
            error.to_lowercase().contains("certificate") || error.contains("NotValidForName"),
            "{error}"
        );
    });

    // libpq (pg_dump, pg_restore): the environment cutover gives them, through psql from the
    // same TLS-capable client directory the rehearsal uses.
    let bin = Command::new(repo.join("scripts/pg-cluster"))
        .arg("tls-bin")
        .output()
        .unwrap();
    assert!(bin.status.success(), "{}", text(&bin));
    let psql = Path::new(String::from_utf8_lossy(&bin.stdout).trim()).join("psql");
    let run_psql = |name: &str| {
        Command::new(&psql)
            .env_clear()
            .envs(url_for_name(name).libpq_env())
            .args(["-X", "-A", "-t", "-c", "SELECT 'through tls'"])
            .output()
            .unwrap()
    };
    let ok = run_psql("rds.test.internal");
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "through tls");
    let wrong = run_psql("wrong.test.internal");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains("does not match host name \"wrong.test.internal\""),
        "{}",
        text(&wrong)
    );
}

/// A table the target cannot take (here an event trigger on the target changes a column's type
/// as the schema is restored): the step fails naming the table and PostgreSQL's message, and
/// reports nothing as copied that was not.
#[test]
fn a_table_whose_copy_fails_fails_the_step_naming_it() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("badtable");
    runtime().block_on(async {
        client(&target)
            .await
            .batch_execute(
                "CREATE FUNCTION cutover_test_break_events() RETURNS event_trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.events') THEN \
                 ALTER TABLE public.events ALTER COLUMN kind TYPE integer USING 0; END IF; END $$; \
                 CREATE EVENT TRIGGER cutover_test_break_events ON ddl_command_end WHEN TAG IN ('CREATE TABLE') \
                 EXECUTE FUNCTION cutover_test_break_events()",
            )
            .await
            .unwrap();
    });
    let p = project(&source, &target, &format!("{EXTENSIONS}{COPY}"));
    assert_eq!(code(&p.run(&["run", "extensions"])), 0);
    let out = p.run(&["run", "copy"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        said.contains("public.events: ") && said.contains("invalid input syntax for type integer"),
        "{said}"
    );
    let log = p.run(&["log", "copy"]).stdout();
    assert!(
        !log.contains("public.events: 250000 rows copied"),
        "nothing reported copied that was not: {log}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&p.run(&["status", "--json"]).stdout).unwrap();
    let outputs = &status["phases"][0]["steps"][1]["outputs"];
    assert!(outputs.get("checksums").is_none(), "{outputs:#}");
    assert!(
        outputs["target_state"]
            .as_str()
            .is_some_and(|s| s.contains("\"dirty\":true")),
        "{outputs:#}"
    );
}

/// One snapshot: while the copy runs, a writer on the source inserts a row into two tables in
/// each transaction; on the target every such pair is whole or absent.
#[test]
fn the_copy_is_of_one_snapshot_while_the_source_takes_writes() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("snapshot");
    let p = project(&source, &target, &format!("{EXTENSIONS}{COPY}"));
    assert_eq!(code(&p.run(&["run", "extensions"])), 0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let source = source.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let c = client(&source).await;
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    c.batch_execute(&format!(
                        "BEGIN; \
                         INSERT INTO events (user_id, kind, payload, occurred_at) VALUES (1, 'marker-{n}', NULL, now()); \
                         INSERT INTO page_views (path, viewed_at) VALUES ('/marker/{n}', now()); \
                         COMMIT"
                    ))
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                n
            })
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let out = p.run(&["run", "copy"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    runtime().block_on(async {
        let markers = |sql: &'static str| {
            let target = target.clone();
            async move {
                let c = client(&target).await;
                let mut v: Vec<String> = c
                    .query(sql, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect();
                v.sort();
                v
            }
        };
        let in_events =
            markers("SELECT substr(kind, 8) FROM events WHERE kind LIKE 'marker-%'").await;
        let in_views =
            markers("SELECT substr(path, 9) FROM page_views WHERE path LIKE '/marker/%'").await;
        assert_eq!(in_events, in_views, "a transaction split across the copy");
        assert!(
            !in_events.is_empty(),
            "some writes happened before the snapshot"
        );
        assert!(
            (in_events.len() as u64) < written,
            "some writes happened after it ({} of {written} copied)",
            in_events.len()
        );
    });
}

/// The write-count warning of the DNS rollback, with real PostgreSQL: rows the app changed on
/// the new database after the cutover's counters are counted, per table, before the rollback's
/// phrase is asked — and said plainly as what going back loses.
#[test]
fn a_dns_rollback_counts_the_rows_changed_since_the_cutover_before_its_phrase() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("writes");
    // "target" is the new database here: the counters at the cutover, then the rollback of
    // the cutover (a harmless shell action) warned by the rows changed since.
    let steps = "[[phase.step]]\nid = \"mark\"\ndo = \"db.writes\"\nurl = \"${secret.SOURCE}\"\n\n\
[[phase.step]]\nid = \"cutover\"\ndo = \"shell\"\nrun = \"echo aws > record.txt\"\ndestructive = true\nconfirm = \"cut over\"\nneeds = [\"mark\"]\n\
rollback = { do = \"shell\", run = \"echo heroku > record.txt\", warn = { do = \"db.writes\", url = \"${secret.SOURCE}\", since = \"${steps.mark.outputs.counters}\" } }\n";
    let p = project(&source, &target, steps);
    let out = p.run(&["run", "mark"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.run(&["run", "cutover", "--confirm", "cut over"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let undo = ["rollback", "cutover", "--note", "AWS fails"];
    let out = p.run(&undo);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("no row changed since the cutover: going back loses nothing"),
        "{}",
        text(&out)
    );

    // The app writes: 3 inserts and 2 updates in two tables, from sessions that end (their
    // statistics reach the shared counters then).
    runtime().block_on(async {
        let c = client(&source).await;
        c.batch_execute(
            "INSERT INTO events (user_id, kind, occurred_at) SELECT 1, 'after-cutover', now() FROM generate_series(1, 3); \
             UPDATE users SET email = email WHERE id IN (1, 2)",
        )
        .await
        .unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = p.run(&undo);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("WARNING: 5 row(s) changed on this database since the cutover (public.events 3, public.users 2)")
            && text(&out).contains("going back to it loses them"),
        "{}",
        text(&out)
    );
    let mut confirmed = undo.to_vec();
    confirmed.extend(["--confirm", "roll back cutover"]);
    let out = p.run(&confirmed);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("WARNING: 5 row(s)"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(p.path().join("record.txt")).unwrap(),
        "heroku\n"
    );
}

/// The copy's statement of what the source held when it read it: `source_baseline` (counters,
/// the statistics' reset time, the server's start, and each table's content from the snapshot).
const IDLE_ON_BASELINE: &str = "[[phase.step]]\nid = \"idle\"\ndo = \"db.idle\"\nurl = \"${secret.SOURCE}\"\nwindow = \"2s\"\ndeadline = \"6s\"\nbaseline = \"${steps.copy.outputs.source_baseline}\"\nneeds = [\"copy\"]\n\n";

/// One write on the source, from a session that ends at once (its statistics reach the shared
/// counters when it does).
fn write_once(url: &str, sql: &str) {
    runtime().block_on(async {
        client(url).await.batch_execute(sql).await.unwrap();
    });
}

/// Waits (up to a minute) until the shared statistics show `column` of `table` at `value`: a
/// session's counts reach them when it ends, a moment after its client has gone.
fn wait_for_counter(url: &str, table: &str, column: &str, value: i64) {
    let sql = format!(
        "SELECT coalesce((SELECT {column} FROM pg_stat_user_tables WHERE relname = '{table}'), 0)"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: i64 = pg::scalar(url, &sql).parse().unwrap();
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table}.{column} is {now}, not {value}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The statistics reset after the copy (`pg_stat_reset()`, as a restart without a clean
/// shutdown or a Heroku failover also does): the counters start below the baseline, and a
/// later write must still be seen — the step fails naming the reset and the table.
#[test]
fn db_idle_after_a_statistics_reset_and_a_write_fails_naming_the_reset() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("idlereset");
    // The app wrote before the copy: the baseline's counters are above zero.
    write_once(&source, "UPDATE events SET kind = kind WHERE id <= 100");
    wait_for_counter(&source, "events", "n_tup_upd", 100);
    let p = project(&source, &target, &format!("{COPY}{IDLE_ON_BASELINE}"));
    let out = p.run(&["run", "copy"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    // Nothing happened yet: passes.
    let out = p.run(&["run", "idle"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "idle"]).stdout()
    );

    write_once(&source, "SELECT pg_stat_reset()");
    write_once(
        &source,
        "INSERT INTO events (user_id, kind, occurred_at) VALUES (1, 'after-reset', now())",
    );
    // The world: the counters are below the baseline now (1 against 100), and the row is on
    // the source only.
    wait_for_counter(&source, "events", "n_tup_ins", 1);
    assert_eq!(
        pg::scalar(
            &source,
            "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = 'events'"
        ),
        "1"
    );
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM events WHERE kind = 'after-reset'"
        ),
        "0"
    );
    let out = p.run(&["run", "idle"]);
    assert_eq!(
        code(&out),
        1,
        "{}\n{}",
        text(&out),
        p.run(&["log", "idle"]).stdout()
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let said = stderr
        .lines()
        .find(|l| l.starts_with("==> idle: failed"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        said.contains("statistics were reset")
            && said.contains("public.events (250001 rows now, 250000 in the copy)"),
        "{said}"
    );
    // Only the table written is named: the others hold what the copy read.
    assert!(!said.contains("public.users"), "{said}");
}

/// A pooled session (one connection kept open, as an app's pool keeps it) writes every 100 ms
/// until the freeze, then stops — with some of its writes not yet in the shared statistics (a
/// session flushes them at most once a second, or 10 s after it goes idle). The copy reads the
/// counters then: the guard must not take those writes for writes after the copy. One write
/// after the freeze must still fail it, naming the table.
#[test]
fn db_idle_after_a_copy_under_steady_writes_passes_and_one_write_after_fails() {
    use std::sync::mpsc;
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("idlepool");
    let p = project(&source, &target, &format!("{COPY}{IDLE_ON_BASELINE}"));
    let (stop, stop_rx) = mpsc::channel::<()>();
    let (stopped_tx, stopped) = mpsc::channel::<u64>();
    let (close, close_rx) = mpsc::channel::<()>();
    let writer = {
        let source = source.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let pooled = client(&source).await;
                let insert = |n: u64| format!("INSERT INTO page_views (path, viewed_at) VALUES ('/pooled/{n}', now())");
                let mut n = 0u64;
                while stop_rx.try_recv().is_err() {
                    n += 1;
                    pooled.batch_execute(&insert(n)).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The freeze: no write after this loop. It ends with writes still pending in
                // the session (the shared counter below what it wrote): one more right after
                // a flush stays pending, as at most one flush a second is made. (On a machine
                // too loaded for that, it gives up: the guard must pass either way.)
                for _ in 0..50 {
                    let flushed: i64 = client(&source)
                        .await
                        .query_one(
                            "SELECT coalesce((SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'page_views'), 0)",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    if (flushed as u64) < n {
                        break;
                    }
                    n += 1;
                    pooled.batch_execute(&insert(n)).await.unwrap();
                }
                stopped_tx.send(n).unwrap();
                // The session stays open, idle, through the copy (the dynos keep their pool).
                let _ = close_rx.recv();
                drop(pooled);
            })
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.send(()).unwrap();
    let written = stopped.recv().unwrap();
    let out = p.run(&["run", "copy"]);
    close.send(()).unwrap();
    writer.join().unwrap();
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    // Every acknowledged write is in the copy.
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM page_views WHERE path LIKE '/pooled/%'"
        ),
        written.to_string()
    );
    let out = p.run(&["run", "idle"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "idle"]).stdout()
    );

    // One write after the freeze: named.
    write_once(
        &source,
        "INSERT INTO page_views (path, viewed_at) VALUES ('/after-the-freeze', now())",
    );
    let out = p.run(&["run", "idle"]);
    assert_eq!(
        code(&out),
        1,
        "{}\n{}",
        text(&out),
        p.run(&["log", "idle"]).stdout()
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let said = stderr
        .lines()
        .find(|l| l.starts_with("==> idle: failed"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        said.contains("written after the copy")
            && said.contains(&format!(
                "public.page_views ({} rows now, {} in the copy)",
                50119 + written + 1,
                50119 + written
            )),
        "{said}"
    );
    assert!(!said.contains("public.events"), "{said}");
}

/// What a copy of the tables alone leaves out: materialized views (a schema-only dump creates
/// them empty) and large objects. Both are on the target after the copy, and db.verify — on the
/// copy's checksums, as the bundled runbook runs it — compares them.
#[test]
fn materialized_views_and_large_objects_are_copied_and_verified() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("mvlo");
    let verify = "[[phase.step]]\nid = \"verify\"\ndo = \"db.verify\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nsource_checksums = \"${steps.copy.outputs.checksums}\"\ntarget_checksums = \"${steps.copy.outputs.target_checksums}\"\nneeds = [\"copy\"]\n\n";
    let p = project(&source, &target, &format!("{EXTENSIONS}{COPY}{verify}"));
    for step in ["extensions", "copy", "verify"] {
        let out = p.run(&["run", step]);
        assert_eq!(
            code(&out),
            0,
            "{step}: {}\n{}",
            text(&out),
            p.run(&["log", step]).stdout()
        );
    }
    for sql in [
            "SELECT count(*) || ' ' || sum(n) || ' ' || max(last_at) FROM user_activity",
            "SELECT count(*) || ' ' || sum(n) FROM busiest_users",
            "SELECT count(*) FROM pg_largeobject_metadata",
            "SELECT md5(lo_get(424242)) || ' ' || length(lo_get(424242)) || ' ' || length(lo_get(424243))",
            "SELECT obj_description(424242, 'pg_largeobject')",
        ] {
        let want = pg::scalar(&source, sql);
        assert!(!want.is_empty(), "{sql}");
        assert_eq!(pg::scalar(&target, sql), want, "{sql}");
    }
    assert_eq!(
        pg::scalar(&target, "SELECT count(*) FROM busiest_users"),
        "10000"
    );
    let copy = p.run(&["log", "copy"]).stdout();
    assert!(
        copy.contains("2 materialized view(s) refreshed")
            && copy.contains("2 large object(s) copied"),
        "{copy}"
    );
    let verify = p.run(&["log", "verify"]).stdout();
    assert!(
        verify.contains("» public.user_activity ") && verify.contains("» public.busiest_users "),
        "{verify}"
    );
    assert!(
        verify.contains("large objects: 2 on each side, content checksums equal"),
        "{verify}"
    );
}

/// A role that owns its database and a table with FORCE ROW LEVEL SECURITY, whose policy shows
/// it only some rows.
fn rls_database(role: &str, database: &str, bypass: bool) -> String {
    let pg = Clusters::from_env();
    let password = "rls-pass-5";
    pg::run_sql(
        &pg.source,
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
             CREATE ROLE {role} LOGIN PASSWORD '{password}'; END IF; END $$; \
             ALTER ROLE {role} {}",
            if bypass { "BYPASSRLS" } else { "NOBYPASSRLS" }
        ),
    );
    pg::run_sql(
        &pg.source,
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    );
    pg::run_sql(
        &pg.source,
        &format!("CREATE DATABASE {database} OWNER {role}"),
    );
    let base = pg.source.clone();
    let host = base.rsplit_once('@').unwrap().1.rsplit_once('/').unwrap().0;
    let url = format!("postgres://{role}:{password}@{host}/{database}?sslmode=disable");
    runtime().block_on(async {
        client(&url)
            .await
            .batch_execute(
                "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL); \
                 INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 500) g; \
                 ALTER TABLE notes ENABLE ROW LEVEL SECURITY; \
                 ALTER TABLE notes FORCE ROW LEVEL SECURITY; \
                 CREATE POLICY some_notes ON notes USING (id % 5 = 0)",
            )
            .await
            .unwrap();
    });
    // What the role sees through its policy: a fifth, unless it bypasses it.
    assert_eq!(
        pg::scalar(&url, "SELECT count(*) FROM notes"),
        if bypass { "500" } else { "100" }
    );
    url
}

/// The copy reads with row-level security off. Run as the table's owner, which FORCE ROW LEVEL
/// SECURITY subjects to its own policy, it cannot read every row: it refuses before writing
/// anything, naming the table and what the role needs — where it used to copy the fifth the
/// policy shows and call the copy equal.
#[test]
fn a_force_rls_table_its_owner_cannot_read_whole_is_refused_naming_it() {
    let pg = Clusters::from_env();
    let source = rls_database("rls_owner", "s_rlsforce", false);
    let target = pg::url_for(&pg.target, "t_rlsforce");
    pg::run_sql(
        &pg.target,
        "DROP DATABASE IF EXISTS t_rlsforce WITH (FORCE)",
    );
    pg::run_sql(&pg.target, "CREATE DATABASE t_rlsforce");
    let p = project(&source, &target, COPY);
    let out = p.run(&["run", "copy"]);
    assert_eq!(
        code(&out),
        1,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        said.contains("public.notes") && said.contains("BYPASSRLS") && said.contains("FORCE"),
        "{said}"
    );
    // Nothing was written: no table on the target, and the journal does not call it dirty.
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    assert!(
        !p.read(".cutover/journal.jsonl")
            .contains("\\\"dirty\\\":true"),
        "{}",
        p.read(".cutover/journal.jsonl")
    );
}

/// The same table read by an owner with BYPASSRLS: every row is copied, the policy and FORCE
/// come along, and db.verify agrees.
#[test]
fn a_force_rls_table_read_by_a_bypassrls_owner_is_copied_whole_and_verified() {
    let pg = Clusters::from_env();
    let source = rls_database("rls_bypass", "s_rlsbypass", true);
    let target = pg::url_for(&pg.target, "t_rlsbypass");
    pg::run_sql(
        &pg.target,
        "DROP DATABASE IF EXISTS t_rlsbypass WITH (FORCE)",
    );
    pg::run_sql(&pg.target, "CREATE DATABASE t_rlsbypass");
    let p = project(&source, &target, &format!("{COPY}{VERIFY}"));
    for step in ["copy", "verify"] {
        let out = p.run(&["run", step]);
        assert_eq!(
            code(&out),
            0,
            "{step}: {}\n{}",
            text(&out),
            p.run(&["log", step]).stdout()
        );
    }
    assert_eq!(
        pg::scalar(&target, "SELECT count(*) || ' ' || sum(id) FROM notes"),
        "500 125250"
    );
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE relname = 'notes'"
        ),
        "true"
    );
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM pg_policies WHERE tablename = 'notes'"
        ),
        "1"
    );
}

/// A TCP forwarder on loopback that passes what the client sends at `rate` bytes a second (the
/// answers unthrottled): a link slower than the write sample's time budget, as the Session
/// Manager tunnel of a real run can be. A stand-in: no real part on this machine is that slow.
fn throttling_forwarder(upstream: String, rate: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut client_back, mut server_back) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_back, &mut client_back);
                let _ = client_back.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                let started = Instant::now();
                let mut sent = 0usize;
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// The preflight's write sample through a link slower than its 2 s budget (1 MiB/s; the sample
/// holds up to 32 MiB): it stops at a row boundary and still gives a figure — where it used to
/// end the COPY mid-row and lose the figure ("missing data for column").
#[test]
fn the_write_sample_through_a_link_slower_than_its_budget_gives_a_figure() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("slowlink");
    let upstream = pg
        .target
        .rsplit_once('@')
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .0
        .to_string();
    let rate = 1 << 20;
    let port = throttling_forwarder(upstream, rate);
    let slow_target = target.replacen(
        &format!(
            ":{}/",
            target
                .rsplit_once(':')
                .unwrap()
                .1
                .split_once('/')
                .unwrap()
                .0
        ),
        &format!(":{port}/"),
        1,
    );
    assert_ne!(slow_target, target);
    let preflight = "[[phase.step]]\nid = \"preflight\"\ndo = \"db.preflight\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nindex_sample_rows = 0\n\n";
    let p = project(&source, &slow_target, preflight);
    let out = p.run(&["run", "preflight"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "preflight"]).stdout()
    );
    let log = p.run(&["log", "preflight"]).stdout();
    assert!(
        log.contains("pass  copy speed") && !log.contains("no write sample"),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("output write_mib_s = "))
        .unwrap_or_else(|| panic!("no write figure: {log}"));
    let mib_s: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // Measured through the link: above nothing, and not above what the link lets through
    // (generously: the rate is an average over a few batches).
    assert!(mib_s > 0.0 && mib_s <= 3.0, "{line}");
    // The sample's scratch table was rolled back.
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM pg_class WHERE relname = 'cutover_write_probe'"
        ),
        "0"
    );
}

/// The checksums a copy journals belong to that copy. A second attempt that reset the target
/// and failed part-way, then marked done by hand, leaves the first attempt's figures in the
/// journal: db.verify (on them, as the bundled runbook runs it) must not pass on them — the
/// target holds the failed attempt's tables, one of them empty.
#[test]
fn verify_does_not_pass_on_the_checksums_of_an_earlier_copy() {
    let pg = Clusters::from_env();
    let source = pg::url_for(&pg.source, "s_stale");
    let target = pg::url_for(&pg.target, "t_stale");
    for (cluster, db) in [(&pg.source, "s_stale"), (&pg.target, "t_stale")] {
        pg::run_sql(
            cluster,
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        );
        pg::run_sql(cluster, &format!("CREATE DATABASE {db}"));
    }
    runtime().block_on(async {
        // No index, sequence or vector: what db.verify checks besides the tables' figures
        // holds whatever the copy left, so only the figures decide.
        client(&source)
            .await
            .batch_execute(
                "CREATE TABLE accounts (id int, name text); \
                 INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 1000) g; \
                 CREATE TABLE ledger (account int, amount numeric); \
                 INSERT INTO ledger SELECT g % 1000, g * 1.5 FROM generate_series(1, 500) g",
            )
            .await
            .unwrap();
    });
    let copy = "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\non_existing = \"reset\"\n\n";
    let verify = "[[phase.step]]\nid = \"verify\"\ndo = \"db.verify\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nsource_checksums = \"${steps.copy.outputs.checksums}\"\ntarget_checksums = \"${steps.copy.outputs.target_checksums}\"\nneeds = [\"copy\"]\n\n";
    let p = project(&source, &target, &format!("{copy}{verify}"));
    for step in ["copy", "verify"] {
        let out = p.run(&["run", step]);
        assert_eq!(
            code(&out),
            0,
            "{step}: {}\n{}",
            text(&out),
            p.run(&["log", step]).stdout()
        );
    }
    // The second attempt: a constraint the target's rows cannot meet makes `ledger`'s COPY
    // fail after the reset dropped what the first attempt copied.
    runtime().block_on(async {
        client(&source)
            .await
            .batch_execute(
                "ALTER TABLE ledger ADD CONSTRAINT only_on_the_source CHECK (current_database() <> 't_stale')",
            )
            .await
            .unwrap();
    });
    let out = p.run(&["run", "copy"]);
    assert_eq!(
        code(&out),
        1,
        "{}\n{}",
        text(&out),
        p.run(&["log", "copy"]).stdout()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("public.ledger"),
        "{}",
        text(&out)
    );
    let out = p.run(&["mark", "copy", "done", "--note", "fixed by hand"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The world: the first attempt's rows are gone from the target; the ledger is empty there.
    assert_eq!(pg::scalar(&target, "SELECT count(*) FROM ledger"), "0");
    let out = p.run(&["run", "verify"]);
    assert_eq!(
        code(&out),
        1,
        "{}\n{}",
        text(&out),
        p.run(&["log", "verify"]).stdout()
    );
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.run(&["log", "verify"]).stdout()
    );
    assert!(
        said.contains("public.ledger: 500 rows on the source, 0 on the target"),
        "{said}"
    );
    assert!(
        said.contains("not of the copy on the target now") && said.contains("dirty"),
        "{said}"
    );
}

/// A source database owned by `role`, a login role with no other right (as Heroku's default
/// credential: it owns the database and its tables, and is no superuser), the `vector`
/// extension created by the cluster's superuser as Heroku does; and an empty target. Returns
/// the role's source URL and the target's URL.
/// A fresh database `db` on the cluster at `admin`, owned by the login role `role` (created
/// when missing, never a superuser), with `vector` created by the superuser.
fn database_owned_by(admin: &str, db: &str, role: &str, password: &str) {
    pg::run_sql(
        admin,
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
             CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION PASSWORD '{password}'; END IF; END $$"
        ),
    );
    pg::run_sql(admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    pg::run_sql(admin, &format!("CREATE DATABASE {db} OWNER {role}"));
    pg::run_sql(&pg::url_for(admin, db), "CREATE EXTENSION vector");
}

fn owned_databases(name: &str, role: &str) -> (String, String) {
    let password = "capture-pass-7";
    let src = format!("s_{name}");
    let tgt = format!("t_{name}");
    let pg = Clusters::from_env();
    database_owned_by(&pg.source, &src, role, password);
    pg::run_sql(
        &pg.target,
        &format!("DROP DATABASE IF EXISTS {tgt} WITH (FORCE)"),
    );
    pg::run_sql(&pg.target, &format!("CREATE DATABASE {tgt}"));
    pg::run_sql(&pg::url_for(&pg.target, &tgt), "CREATE EXTENSION vector");
    let host = pg
        .source
        .rsplit_once('@')
        .unwrap()
        .1
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    (
        format!("postgres://{role}:{password}@{host}/{src}?sslmode=disable"),
        pg::url_for(&pg.target, &tgt),
    )
}

/// The same tables and rows on both sides, as a copy would have left them.
const CAPTURED_TABLES: &str = "\
    CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, \
        doc jsonb, embedding vector(3), name_len int GENERATED ALWAYS AS (length(name)) STORED); \
    CREATE TABLE tags (code text PRIMARY KEY, label text); \
    CREATE TABLE scratch (id int PRIMARY KEY, v text); \
    CREATE TABLE by_email (email text NOT NULL UNIQUE, n int); \
    INSERT INTO items (name, doc, embedding) SELECT 'item ' || g, jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)), \
        ARRAY[g, g / 2.0, -g]::real[]::vector FROM generate_series(1, 200) g; \
    INSERT INTO tags SELECT 'tag-' || g, 'label ' || g FROM generate_series(1, 10) g; \
    INSERT INTO scratch SELECT g, 'row ' || g FROM generate_series(1, 30) g; \
    INSERT INTO by_email SELECT 'u' || g || '@example.com', g FROM generate_series(1, 20) g;";

/// A table's content as one value (every column, generated ones included), for comparing sides.
fn table_sum(url: &str, table: &str) -> String {
    pg::scalar(url, &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"),
    )
}

const CAPTURE: &str = "[[phase.step]]\nid = \"capture\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"install\"\n\n";
const CAPTURE_FREEZE: &str = "[[phase.step]]\nid = \"capture-freeze\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"install\"\nwithout_key = \"freeze\"\n\n";
const UNCAPTURE: &str = "[[phase.step]]\nid = \"uncapture\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"remove\"\n\n";
const CAPTURE_AGAIN: &str = "[[phase.step]]\nid = \"capture-again\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"install\"\n\n";
const CATCHUP_AGAIN: &str = "[[phase.step]]\nid = \"catchup-again\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\n\n";
const CATCHUP: &str = "[[phase.step]]\nid = \"catchup\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nbatch = 40\n\n";

/// What the catalogs hold of the capture: its schema, its triggers, its function.
fn capture_leftovers(url: &str) -> String {
    pg::scalar(
        url,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'cutover_capture') || '/' || \
                (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'cutover_capture%') || '/' || \
                (SELECT count(*) FROM pg_proc WHERE proname = 'record_change')",
    )
}

/// Installed by the table owner (no superuser), the capture follows inserts, updates (one
/// changing a primary key), deletes and a TRUNCATE on tables with jsonb, vector, generated and
/// identity columns; catch-up leaves every table equal to the source's; removal leaves nothing
/// in the catalogs.
#[test]
fn capture_as_the_owner_then_catchup_makes_every_table_equal_and_remove_leaves_nothing() {
    let (source, target) = owned_databases("capture", "capture_owner");
    runtime().block_on(async {
        client(&source)
            .await
            .batch_execute(CAPTURED_TABLES)
            .await
            .unwrap();
        client(&target)
            .await
            .batch_execute(CAPTURED_TABLES)
            .await
            .unwrap();
    });
    assert_eq!(
        (pg::scalar(
            &source,
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )),
        "false"
    );
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE}{CAPTURE_AGAIN}{CATCHUP}{CATCHUP_AGAIN}{UNCAPTURE}"),
    );
    let out = p.run(&["run", "capture"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "capture"]).stdout()
    );
    // Installing again is harmless: one trigger of each kind per table, one log.
    let out = p.run(&["run", "capture-again"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "capture-again"]).stdout()
    );
    assert_eq!(capture_leftovers(&source), "1/8/1");
    let log = p.run(&["log", "capture"]).stdout();
    assert!(log.contains("public.tags: followed by (code)"), "{log}");
    assert!(log.contains("lock waited"), "{log}");

    runtime().block_on(async {
        client(&source)
            .await
            .batch_execute(
                "INSERT INTO items (name, doc, embedding) SELECT 'new ' || g, jsonb_build_object('new', g), \
                     ARRAY[g, g, g]::real[]::vector FROM generate_series(1, 50) g; \
                 UPDATE items SET doc = doc || '{\"updated\": true}', name = name || '!' WHERE id % 7 = 0; \
                 UPDATE items SET embedding = '[0.5, 0.25, 0.125]' WHERE id = 3; \
                 DELETE FROM items WHERE id % 11 = 0; \
                 UPDATE tags SET code = 'tag-3-renamed' WHERE code = 'tag-3'; \
                 DELETE FROM tags WHERE code = 'tag-5'; \
                 INSERT INTO tags VALUES ('tag-new', NULL); \
                 TRUNCATE scratch; \
                 INSERT INTO scratch VALUES (1000, 'after the truncate'); \
                 UPDATE by_email SET n = n + 100 WHERE n < 5; \
                 UPDATE by_email SET email = 'moved@example.com' WHERE n = 10;",
            )
            .await
            .unwrap();
    });
    // The log holds keys, never row contents.
    assert_eq!(
        (pg::scalar(&source, "SELECT count(*) FROM cutover_capture.changes WHERE key::text LIKE '%new %' OR key::text LIKE '%label%'"
        )),
        "0"
    );
    assert_eq!(
        (pg::scalar(&source, "SELECT count(*) FROM cutover_capture.changes WHERE tbl = 'public.tags' AND key->>'code' IN ('tag-3', 'tag-3-renamed')"
        )),
        "2"
    );
    for table in ["items", "tags", "scratch", "by_email"] {
        assert_ne!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    let out = p.run(&["run", "catchup"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "catchup"]).stdout()
    );
    for table in ["items", "tags", "scratch", "by_email"] {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    assert_eq!(
        (pg::scalar(&target, "SELECT v FROM scratch")),
        "after the truncate"
    );
    // Applying again is harmless.
    let out = p.run(&["run", "catchup-again"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "catchup-again"]).stdout()
    );
    for table in ["items", "tags", "scratch", "by_email"] {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }

    let out = p.run(&["run", "uncapture"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "uncapture"]).stdout()
    );
    assert_eq!(capture_leftovers(&source), "0/0/0");
    // The app writes as before.
    runtime().block_on(async {
        client(&source)
            .await
            .batch_execute("INSERT INTO tags VALUES ('after-remove', 'x')")
            .await
            .unwrap();
    });
}

/// A table with no key is named before anything is installed (no schema, no trigger); with
/// `without_key = "freeze"` it is listed in `whole_tables` and the others are followed.
#[test]
fn a_table_without_a_key_is_refused_before_anything_is_installed_or_listed_whole() {
    let (source, target) = owned_databases("capture_nokey", "capture_owner_nokey");
    runtime().block_on(async {
        client(&source)
            .await
            .batch_execute(&format!(
                "{CAPTURED_TABLES} CREATE TABLE loose (a int, b text); \
                 CREATE TABLE nullable_unique (email text UNIQUE)"
            ))
            .await
            .unwrap();
    });
    let p = project(&source, &target, &format!("{CAPTURE}{CAPTURE_FREEZE}"));
    let out = p.run(&["run", "capture"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = format!("{}{}", text(&out), p.run(&["log", "capture"]).stdout());
    assert!(said.contains("public.loose"), "{said}");
    assert!(said.contains("public.nullable_unique"), "{said}");
    assert_eq!(capture_leftovers(&source), "0/0/0");

    let out = p.run(&["run", "capture-freeze"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "capture-freeze"]).stdout()
    );
    assert_eq!(capture_leftovers(&source), "1/8/1");
    let journal = p.journal();
    let whole = journal
        .lines()
        .find(|l| l.contains("whole_tables"))
        .unwrap_or_default();
    assert!(
        whole.contains("public.loose") && whole.contains("public.nullable_unique"),
        "{journal}"
    );
    assert_eq!(
        (pg::scalar(&source, "SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('loose'::regclass, 'nullable_unique'::regclass)"
        )),
        "0"
    );
}

/// Catch-up killed (SIGKILL) while a large backlog applies, then run again: it completes,
/// nothing is lost, and the journal shows both attempts.
#[test]
fn a_catchup_killed_mid_run_resumes_and_loses_nothing() {
    let (source, target) = owned_databases("capture_kill", "capture_owner_kill");
    let ddl = "CREATE TABLE big (id int PRIMARY KEY, payload text, doc jsonb)";
    runtime().block_on(async {
        client(&source).await.batch_execute(ddl).await.unwrap();
        client(&target).await.batch_execute(ddl).await.unwrap();
    });
    let catchup = "[[phase.step]]\nid = \"catchup\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nbatch = 200\n\n";
    let p = project(&source, &target, &format!("{CAPTURE}{catchup}"));
    let out = p.run(&["run", "capture"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "capture"]).stdout()
    );
    runtime().block_on(async {
        let c = client(&source).await;
        for part in 0..10 {
            c.batch_execute(&format!(
                "INSERT INTO big SELECT g, repeat('x', 50) || g, jsonb_build_object('g', g) \
                   FROM generate_series({} + 1, {} + 6000) g",
                part * 6000,
                part * 6000
            ))
            .await
            .unwrap();
        }
        c.batch_execute("UPDATE big SET payload = 'changed' WHERE id % 3 = 0; DELETE FROM big WHERE id % 10 = 0")
            .await
            .unwrap();
    });
    kill_catchup_once_rows_land(&p, &target, "big");
    // Killed before the end: the target does not hold the source's rows yet.
    assert_ne!(table_sum(&source, "big"), table_sum(&target, "big"));

    let out = p.run(&["run", "catchup"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "catchup"]).stdout()
    );
    assert_eq!(table_sum(&source, "big"), table_sum(&target, "big"));
    let journal = p.journal();
    let attempts = journal
        .lines()
        .filter(|l| l.contains("\"catchup\"") && l.contains("\"started\""))
        .count();
    assert!(attempts >= 2, "{journal}");
    let log = p.run(&["log", "catchup"]).stdout();
    assert!(
        log.contains("(an earlier attempt, or `resume`): starting after it"),
        "{log}"
    );
}

/// The tables of the online move, on the source only (the copy makes them on the target): the
/// captured ones, a partitioned table, a table without a key (copied whole in the freeze), a
/// sequence, a materialized view and a large object.
const MOVED_TABLES: &str = "\
    CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, \
        doc jsonb, embedding vector(3), name_len int GENERATED ALWAYS AS (length(name)) STORED); \
    CREATE TABLE tags (code text PRIMARY KEY, label text); \
    CREATE TABLE scratch (id int PRIMARY KEY, v text); \
    CREATE TABLE by_email (email text NOT NULL UNIQUE, n int); \
    CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at); \
    CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
    CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
    CREATE TABLE loose (a int, b text); \
    CREATE SEQUENCE invoice_seq; \
    INSERT INTO items (name, doc, embedding) SELECT 'item ' || g, jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)), \
        ARRAY[g, g / 2.0, -g]::real[]::vector FROM generate_series(1, 200) g; \
    INSERT INTO tags SELECT 'tag-' || g, 'label ' || g FROM generate_series(1, 10) g; \
    INSERT INTO scratch SELECT g, 'row ' || g FROM generate_series(1, 30) g; \
    INSERT INTO by_email SELECT 'u' || g || '@example.com', g FROM generate_series(1, 20) g; \
    INSERT INTO events SELECT g, date '2024-03-01' + (g % 200), 'e' || g FROM generate_series(1, 300) g; \
    INSERT INTO loose SELECT g, 'l' || g FROM generate_series(1, 20) g; \
    SELECT setval('invoice_seq', 100); \
    CREATE MATERIALIZED VIEW tag_count AS SELECT count(*) AS n, max(label) AS last FROM tags; \
    SELECT lo_from_bytea(4242, 'a large object');";

const MOVED: [&str; 8] = [
    "items",
    "tags",
    "scratch",
    "by_email",
    "events",
    "events_2024",
    "events_2025",
    "loose",
];

const CAPTURE_ALL: &str = "[[phase.step]]\nid = \"capture\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"install\"\nwithout_key = \"freeze\"\nlarge_objects = \"freeze\"\n\n";
const CAPTURE_REFUSING: &str = "[[phase.step]]\nid = \"capture-refusing\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"install\"\nwithout_key = \"freeze\"\n\n";
const DRAIN: &str = "[[phase.step]]\nid = \"drain\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nfinal = true\nbatch = 40\nlock_timeout = \"60s\"\nresume = \"${steps.catchup.outputs.resume}\"\nneeds = [\"catchup\"]\n\n";
const VERIFY_COPY: &str = "[[phase.step]]\nid = \"verify-copy\"\ndo = \"db.verify\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nsource_checksums = \"${steps.copy.outputs.checksums}\"\nneeds = [\"copy\"]\n\n";
const UNCAPTURE_BOTH: &str = "[[phase.step]]\nid = \"uncapture\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nmode = \"remove\"\n\n";
const IDLE_ON_DRAIN: &str = "[[phase.step]]\nid = \"idle\"\ndo = \"db.idle\"\nurl = \"${secret.SOURCE}\"\nwindow = \"2s\"\ndeadline = \"6s\"\nbaseline = \"${steps.drain.outputs.source_baseline}\"\nneeds = [\"drain\"]\n\n";

/// What the target's catalogs hold of the capture or its guard: schema, triggers, functions.
fn guard_leftovers(url: &str) -> String {
    pg::scalar(
        url,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'cutover_capture') || '/' || \
                (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'cutover_capture%') || '/' || \
                (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'cutover_capture')",
    )
}

/// Runs a step, asserting it succeeded (its log shown if not).
/// Starts the `catchup` step and SIGKILLs it once the first rows of `table` are on the target
/// (it must still be running then: a catch-up that ended first proves nothing).
fn kill_catchup_once_rows_land(p: &Project, target: &str, table: &str) {
    let mut child = p
        .command(&["run", "catchup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "the catch-up never started applying"
        );
        let landed: i64 = pg::scalar(target, &format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap();
        if landed > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the catch-up ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
}

fn run_ok(p: &Project, step: &str) {
    let out = p.run(&["run", step]);
    assert_eq!(
        code(&out),
        0,
        "{step}: {}\n{}",
        text(&out),
        p.run(&["log", step]).stdout()
    );
}

/// Runs a step, asserting it failed; what it said (stderr and its log).
fn run_failing(p: &Project, step: &str) -> String {
    let out = p.run(&["run", step]);
    let said = format!("{}\n{}", text(&out), p.run(&["log", step]).stdout());
    assert_eq!(code(&out), 1, "{step}: {said}");
    said
}

/// The source's writes of the app, one round `n`: inserts, updates (one moving a row to another
/// partition), deletes, a TRUNCATE every 25th round, in tables with jsonb, vector, identity and
/// generated columns, a partitioned table, a table without a key, and a sequence.
fn app_writes(n: u64) -> String {
    app_write_transactions(n).join(" ")
}

/// [`app_writes`] as the writer sends them: the row changes in one transaction, the view's
/// refresh and the truncate each in their own. (One transaction holding the view's ACCESS
/// EXCLUSIVE lock while it waits for the table's would deadlock with the copy's ACCESS SHARE
/// locks, taken in another order — PostgreSQL then cancels one of the two.)
fn app_write_transactions(n: u64) -> Vec<String> {
    let rows = format!(
        "INSERT INTO items (name, doc, embedding) VALUES ('w {n}', jsonb_build_object('w', {n}), '[{n}, 0.5, -1]'); \
         UPDATE items SET doc = doc || jsonb_build_object('u', {n}), name = name || '.' WHERE id = {u}; \
         DELETE FROM items WHERE id = {d}; \
         UPDATE tags SET label = 'w {n}' WHERE code = 'tag-{t}'; \
         INSERT INTO by_email VALUES ('w{n}@example.com', {n}) ON CONFLICT (email) DO UPDATE SET n = excluded.n + 1; \
         INSERT INTO events VALUES (1000 + {n}, date '2025-01-01' + {p}, 'w'); \
         UPDATE events SET at = date '2025-06-01' + {p}, v = 'moved' WHERE id = {n}; \
         INSERT INTO loose VALUES ({n}, 'w'); \
         SELECT nextval('invoice_seq');",
        u = n % 200 + 1,
        d = n % 97 + 150,
        t = n % 10 + 1,
        p = n % 150
    );
    let scratch = if n % 25 == 0 {
        format!("TRUNCATE scratch; INSERT INTO scratch VALUES ({n}, 'after a truncate');")
    } else {
        format!("INSERT INTO scratch VALUES (100000 + {n}, 'w') ON CONFLICT DO NOTHING;")
    };
    vec![
        rows,
        "REFRESH MATERIALIZED VIEW tag_count;".to_string(),
        scratch,
    ]
}

/// A writer of `app_writes` on the source until told to stop; returns how many rounds it made.
struct Writer {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<u64>,
}

impl Writer {
    fn start(url: &str, from: u64) -> Writer {
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let url = url.to_string();
        let handle = std::thread::spawn(move || {
            runtime().block_on(async {
                let c = client(&url).await;
                let mut n = from;
                while stop_rx.try_recv().is_err() {
                    n += 1;
                    for sql in app_write_transactions(n) {
                        c.batch_execute(&sql).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                n - from
            })
        });
        Writer { stop, handle }
    }

    fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.handle.join().unwrap()
    }
}

/// Every moved table, the sequence, the view and the large object the same on both sides.
fn assert_moved_equal(source: &str, target: &str) {
    for table in MOVED {
        assert_eq!(
            table_sum(source, table),
            table_sum(target, table),
            "{table}"
        );
    }
    for sql in [
        "SELECT last_value || '/' || is_called FROM invoice_seq",
        "SELECT last_value || '/' || is_called FROM items_id_seq",
        "SELECT n || '/' || last FROM tag_count",
        "SELECT md5(lo_get(4242))",
    ] {
        assert_eq!(pg::scalar(source, sql), pg::scalar(target, sql), "{sql}");
    }
}

/// Item 1 of issue 27: a copy made after the capture went in carries neither its log, its
/// catalog, its function nor its triggers to the target (parallel and streamed), and
/// db.verify and db.preflight do not count its schema among the app's.
#[test]
fn a_copy_after_the_capture_carries_none_of_it_to_the_target() {
    let (source, target) = owned_databases("capture_copy", "capture_owner_copy");
    pg::run_sql(&source, MOVED_TABLES);
    let stream_target = {
        let pg = Clusters::from_env();
        pg::run_sql(
            &pg.target,
            "DROP DATABASE IF EXISTS t_capture_copy_stream WITH (FORCE)",
        );
        pg::run_sql(&pg.target, "CREATE DATABASE t_capture_copy_stream");
        pg::run_sql(
            &pg::url_for(&pg.target, "t_capture_copy_stream"),
            "CREATE EXTENSION vector",
        );
        pg::url_for(&pg.target, "t_capture_copy_stream")
    };
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_ALL}{PREFLIGHT}{COPY}{VERIFY}"),
    );
    run_ok(&p, "capture");
    pg::run_sql(
        &source,
        "UPDATE tags SET label = 'logged' WHERE code = 'tag-1'; REFRESH MATERIALIZED VIEW tag_count",
    );
    assert_eq!(
        pg::scalar(&source, "SELECT count(*) FROM cutover_capture.changes"),
        "1"
    );
    run_ok(&p, "preflight");
    run_ok(&p, "copy");
    assert_eq!(guard_leftovers(&target), "0/0/0");
    assert_moved_equal(&source, &target);
    run_ok(&p, "verify");
    let said = p.run(&["log", "verify"]).stdout();
    assert!(!said.contains("cutover_capture"), "{said}");

    let streamed = project(
        &source,
        &stream_target,
        "[[phase.step]]\nid = \"copy\"\ndo = \"db.copy\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nmode = \"stream\"\n\n",
    );
    run_ok(&streamed, "copy");
    assert_eq!(guard_leftovers(&stream_target), "0/0/0");
    assert_eq!(
        table_sum(&source, "items"),
        table_sum(&stream_target, "items")
    );
}

/// Issue 27 items 2 to 4, the whole online move as the owner: capture, a copy while the app
/// writes, a catch-up while it writes, the final catch-up once it stopped; then every table,
/// sequence, view and large object equals the source's, db.verify passes, removing the capture
/// leaves nothing on either side, and db.idle on the final catch-up's baseline passes — and
/// names a write made after it.
#[test]
fn the_online_move_under_writes_ends_equal_and_leaves_nothing_behind() {
    let (source, target) = owned_databases("capture_move", "capture_owner_move");
    pg::run_sql(&source, MOVED_TABLES);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_ALL}{COPY}{VERIFY_COPY}{CATCHUP}{DRAIN}{VERIFY}{UNCAPTURE_BOTH}{IDLE_ON_DRAIN}"),
    );
    run_ok(&p, "capture");
    let log = p.run(&["log", "capture"]).stdout();
    assert!(log.contains("public.loose"), "{log}");
    assert!(log.contains("large object"), "{log}");

    let writer = Writer::start(&source, 0);
    std::thread::sleep(Duration::from_millis(300));
    run_ok(&p, "copy");
    // As the bundled runbook's db-verify: on the copy's checksums (of its snapshot), while the
    // source takes writes.
    run_ok(&p, "verify-copy");
    run_ok(&p, "catchup");
    // The catch-up guards the target: every table the capture knows (the partitions, not
    // their parent; the table without a key too).
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'cutover_capture_guard'"
        ),
        "7"
    );
    let rounds = writer.stop();
    assert!(rounds > 10, "{rounds}");
    // The last writes before the freeze, after the catch-up: the drain applies them.
    pg::run_sql(&source, &app_writes(1_000_000));
    assert_ne!(table_sum(&source, "items"), table_sum(&target, "items"));

    run_ok(&p, "drain");
    assert_moved_equal(&source, &target);
    // The drain started where the catch-up stopped (its `resume`).
    let log = p.run(&["log", "drain"]).stdout();
    assert!(log.contains("starting after it"), "{log}");
    let status: serde_json::Value =
        serde_json::from_slice(&p.run(&["status", "--json"]).stdout).unwrap();
    let outputs = &status["phases"][0]["steps"][4]["outputs"];
    assert!(
        outputs["drained"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{outputs}"
    );
    assert!(
        outputs["checked_keys"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0,
        "{outputs}"
    );
    assert!(
        outputs["freeze_point"].as_str().unwrap().contains(':'),
        "{outputs}"
    );
    assert!(
        outputs["source_baseline"]
            .as_str()
            .unwrap()
            .contains("\"counters\""),
        "{outputs}"
    );
    // The final catch-up took its guard off the target once it passed.
    assert_eq!(guard_leftovers(&target), "0/0/0");
    run_ok(&p, "verify");

    run_ok(&p, "uncapture");
    assert_eq!(capture_leftovers(&source), "0/0/0");
    assert_eq!(guard_leftovers(&target), "0/0/0");

    run_ok(&p, "idle");
    write_once(&source, "INSERT INTO tags VALUES ('after-the-freeze', 'x')");
    let said = run_failing(&p, "idle");
    // Said as what it is: a table the final catch-up followed by key has counters in the
    // baseline but no content to compare with.
    assert!(
        said.contains("public.tags (written since the baseline (its write counter moved"),
        "{said}"
    );
}

/// Large objects are refused by default (named, nothing installed); a schema change on the
/// source during the move fails the final catch-up naming it, before anything is applied.
#[test]
fn a_schema_change_during_the_move_fails_the_final_catchup_naming_it() {
    let (source, target) = owned_databases("capture_alter", "capture_owner_alter");
    pg::run_sql(&source, MOVED_TABLES);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_REFUSING}{CAPTURE_ALL}{COPY}{CATCHUP}{DRAIN}"),
    );
    let said = run_failing(&p, "capture-refusing");
    assert!(said.contains("1 large object(s)"), "{said}");
    assert_eq!(capture_leftovers(&source), "0/0/0");

    run_ok(&p, "capture");
    run_ok(&p, "copy");
    pg::run_sql(&source, &app_writes(1));
    run_ok(&p, "catchup");
    pg::run_sql(
        &source,
        "UPDATE tags SET label = 'pending' WHERE code = 'tag-2'; \
         ALTER TABLE tags ADD COLUMN extra int; \
         ALTER TABLE by_email ALTER COLUMN n TYPE bigint; \
         CREATE TABLE t2 (id int PRIMARY KEY)",
    );
    let said = run_failing(&p, "drain");
    for expected in [
        "public.tags: column extra added (integer)",
        "public.by_email: column n type changed (integer → bigint)",
        "table public.t2 created",
        "nothing was applied",
    ] {
        assert!(said.contains(expected), "{expected:?} not in {said}");
    }
    // Nothing applied: the change logged before the ALTER is not on the target (it holds
    // what the catch-up before applied).
    assert_eq!(
        pg::scalar(&target, "SELECT label FROM tags WHERE code = 'tag-2'"),
        "w 1"
    );
}

/// A transaction open on the source at the freeze point, committing once the final catch-up
/// has begun (a worker the freeze did not stop): the step fails naming the table and how many
/// changes; a re-run, with the writers stopped, takes a new freeze point and passes.
#[test]
fn a_write_after_the_freeze_point_is_named_and_fails_the_final_catchup() {
    let (source, target) = owned_databases("capture_late", "capture_owner_late");
    pg::run_sql(&source, MOVED_TABLES);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_ALL}{COPY}{CATCHUP}{DRAIN}"),
    );
    run_ok(&p, "capture");
    run_ok(&p, "copy");
    run_ok(&p, "catchup");
    let source_db = source.clone();
    let (began_tx, began) = std::sync::mpsc::channel::<()>();
    let (commit_tx, commit) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        runtime().block_on(async {
            let c = client(&source_db).await;
            c.batch_execute(
                "BEGIN; UPDATE events SET v = 'late' WHERE id IN (5, 6, 7); \
                 INSERT INTO tags VALUES ('late', 'x')",
            )
            .await
            .unwrap();
            began_tx.send(()).unwrap();
            commit.recv().unwrap();
            c.batch_execute("COMMIT").await.unwrap();
        })
    });
    began.recv().unwrap();
    let child = p
        .command(&["run", "drain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The final catch-up waits for the open writer to end before it checks: then it commits.
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg::scalar(
        &source,
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'cutover_capture.changes'::regclass",
    ) == "0"
    {
        assert!(Instant::now() < deadline, "the final catch-up never waited");
        std::thread::sleep(Duration::from_millis(50));
    }
    commit_tx.send(()).unwrap();
    holder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}\n{}", text(&out), p.run(&["log", "drain"]).stdout());
    assert_eq!(code(&out), 1, "{said}");
    assert!(
        said.contains(
            "writes after the freeze point: public.events_2024 (3 changes), public.tags (1 change)"
        ),
        "{said}"
    );
    // The writers stopped, a re-run passes on a new freeze point.
    run_ok(&p, "drain");
    assert_moved_equal(&source, &target);
}

/// The capture removed and installed again: its log's ids start over. A catch-up whose recorded
/// position is of the old log (its own from an earlier run, or another step's `resume`) does
/// not use it — it would skip the new log's first changes as "applied" — and says so; it
/// applies the new log from its start, and the tables end equal.
#[test]
fn a_capture_installed_again_is_caught_up_from_the_start_of_its_new_log() {
    let (source, target) = owned_databases("capture_again", "capture_owner_again");
    pg::run_sql(&source, MOVED_TABLES);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_ALL}{COPY}{CATCHUP}{UNCAPTURE_BOTH}"),
    );
    run_ok(&p, "capture");
    run_ok(&p, "copy");
    for n in 1..=30 {
        pg::run_sql(&source, &app_writes(n));
    }
    run_ok(&p, "catchup");
    let first: i64 = p.step("catchup")["outputs"]["position"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(first > 20, "{first}");
    run_ok(&p, "uncapture");
    run_ok(&p, "capture");
    // Fewer changes than the old position: the old code took them all as applied.
    for n in 31..=33 {
        pg::run_sql(&source, &app_writes(n));
    }
    run_ok(&p, "catchup");
    let log = p.run(&["log", "catchup"]).stdout();
    assert!(
        log.contains(
            "a recorded position is of a change log since removed and installed again: not used"
        ),
        "{log}"
    );
    // The tables the catch-up follows by key (the keyless one, the sequences, the view and the
    // large object are the final catch-up's).
    for table in MOVED.iter().filter(|t| **t != "loose") {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
}

/// A transaction in the middle of a write to a followed table whose change is not in the log
/// yet (a row trigger logs at the end of its statement; here a writer holding the table's
/// write lock, its statement not run) when the final catch-up locks the log: the log's lock is
/// granted (that writer holds nothing of the log), so only the in-flight check stops the freeze
/// from passing with a write that would commit right after it. Named with the session; once the
/// writer has ended, a re-run passes and every table is equal.
#[test]
fn a_write_in_flight_under_the_logs_lock_is_named_and_fails_the_final_catchup() {
    let (source, target) = owned_databases("capture_flight", "capture_owner_flight");
    pg::run_sql(&source, MOVED_TABLES);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_ALL}{COPY}{CATCHUP}{DRAIN}"),
    );
    run_ok(&p, "capture");
    run_ok(&p, "copy");
    run_ok(&p, "catchup");
    let source_db = source.clone();
    let (began_tx, began) = std::sync::mpsc::channel::<()>();
    let (write_tx, write) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        runtime().block_on(async {
            let c = client(&source_db).await;
            c.batch_execute(
                "SET application_name = 'worker.1'; BEGIN; LOCK TABLE tags IN ROW EXCLUSIVE MODE",
            )
            .await
            .unwrap();
            began_tx.send(()).unwrap();
            write.recv().unwrap();
            c.batch_execute("INSERT INTO tags VALUES ('in-flight', 'x'); COMMIT")
                .await
                .unwrap();
        })
    });
    began.recv().unwrap();
    let out = p.run(&["run", "drain"]);
    let said = format!("{}\n{}", text(&out), p.run(&["log", "drain"]).stdout());
    assert_eq!(code(&out), 1, "{said}");
    assert!(
        said.contains("writes in flight on the source after the freeze point: public.tags (written by worker.1, pid ")
            && said.contains("its change not logged yet"),
        "{said}"
    );
    // The write goes through once the freeze let go of the log; the writer ended, a re-run
    // passes on a new freeze point with the row on the target.
    write_tx.send(()).unwrap();
    writer.join().unwrap();
    run_ok(&p, "drain");
    assert_moved_equal(&source, &target);
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM tags WHERE code = 'in-flight'"
        ),
        "1"
    );
}

/// Rows changed on the target during the catch-up (the verify faults that apply: a changed, a
/// deleted, a swapped row, a vector changed; a sequence set back, a view emptied, a large
/// object changed; a row added to a table copied whole) — the final catch-up names every table
/// written and fails; the sequence, the view, the large object and the whole table it has set
/// again from the source, the rows written are queued for the next catch-up: a re-run (nothing
/// writing the target) passes and every table equals.
#[test]
fn writes_on_the_target_during_the_catchup_are_named_by_the_final_catchup() {
    let (source, target) = owned_databases("capture_guard", "capture_owner_guard");
    pg::run_sql(&source, MOVED_TABLES);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_ALL}{COPY}{CATCHUP}{DRAIN}"),
    );
    run_ok(&p, "capture");
    run_ok(&p, "copy");
    pg::run_sql(&source, &app_writes(1));
    run_ok(&p, "catchup");
    pg::run_sql(
        &target,
        "UPDATE tags SET label = label || '.' WHERE code = 'tag-7'; \
         DELETE FROM scratch WHERE id = 17; \
         UPDATE by_email b SET n = o.n FROM by_email o \
          WHERE (b.email, o.email) IN (('u5@example.com', 'u6@example.com'), ('u6@example.com', 'u5@example.com')); \
         UPDATE items SET embedding = '[0.5, 0.5, 0.5]' WHERE id = 42; \
         SELECT setval('invoice_seq', 3); \
         REFRESH MATERIALIZED VIEW tag_count WITH NO DATA; \
         SELECT lo_put(4242, 0, '\\x00'::bytea); \
         INSERT INTO loose VALUES (-1, 'on the target');",
    );
    let said = run_failing(&p, "drain");
    assert!(
        said.contains("writes on the target by someone other than the catch-up: public.by_email (2 changes), public.items (1 change), public.loose (1 change), public.scratch (1 change), public.tags (1 change)"),
        "{said}"
    );
    assert!(
        said.contains("queued to be set again from the source"),
        "{said}"
    );
    assert!(
        said.contains("public.scratch: 31 rows on the source, 30 on the target"),
        "{said}"
    );
    // Set again from the source before the check.
    for sql in [
        "SELECT last_value || '/' || is_called FROM invoice_seq",
        "SELECT n || '/' || last FROM tag_count",
        "SELECT md5(lo_get(4242))",
    ] {
        assert_eq!(pg::scalar(&source, sql), pg::scalar(&target, sql), "{sql}");
    }
    assert_eq!(table_sum(&source, "loose"), table_sum(&target, "loose"));
    run_ok(&p, "drain");
    assert_moved_equal(&source, &target);
}

/// The vector extension dropped on the target (verify's `extension` fault) takes the vector
/// column with it: the final catch-up names the table and its columns.
#[test]
fn an_extension_dropped_on_the_target_is_named_by_the_final_catchup() {
    let (source, target) = owned_databases("capture_ext", "capture_owner_ext");
    pg::run_sql(&source, MOVED_TABLES);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_ALL}{COPY}{CATCHUP}{DRAIN}"),
    );
    run_ok(&p, "capture");
    run_ok(&p, "copy");
    run_ok(&p, "catchup");
    pg::run_sql(&target, "DROP EXTENSION vector CASCADE");
    let said = run_failing(&p, "drain");
    assert!(
        said.contains("public.items: columns differ (id, name, doc, embedding on the source; id, name, doc on the target)"),
        "{said}"
    );
}

/// The final catch-up on the app-like fixture (250,000 events, 3,000 documents with
/// 1536-dimension vectors, a table without a key of 50,119 rows copied whole, two large
/// objects, two materialized views), after writes in several tables: it passes, db.verify
/// reading both sides passes, and its note gives the figures (printed).
#[test]
fn the_final_catchup_on_the_app_fixture_passes_and_verifies() {
    let pg = Clusters::from_env();
    let (source, target) = pg.databases("capture_fixture");
    let p = project(
        &source,
        &target,
        &format!("{EXTENSIONS}{CAPTURE_ALL}{COPY}{CATCHUP}{DRAIN}{VERIFY}"),
    );
    for step in ["extensions", "capture", "copy"] {
        run_ok(&p, step);
    }
    pg::run_sql(
        &source,
        "UPDATE users SET settings = settings || '{\"moved\": true}' WHERE id % 10 = 0; \
         INSERT INTO events (user_id, kind, payload, occurred_at) \
             SELECT g, 'login', '{}', now() FROM generate_series(1, 1000) g; \
         DELETE FROM events WHERE id % 500 = 0; \
         UPDATE documents SET embedding = NULL WHERE id % 300 = 0; \
         INSERT INTO page_views VALUES ('/new', now(), NULL); \
         SELECT nextval('invoice_number_seq'); \
         REFRESH MATERIALIZED VIEW user_activity; REFRESH MATERIALIZED VIEW busiest_users;",
    );
    run_ok(&p, "catchup");
    pg::run_sql(
        &source,
        "UPDATE events SET kind = 'export' WHERE id BETWEEN 1000 AND 1500",
    );
    run_ok(&p, "drain");
    run_ok(&p, "verify");
    let log = p.run(&["log", "drain"]).stdout();
    let note = log
        .lines()
        .find(|l| l.contains("drained ") && l.contains(" in all"))
        .unwrap_or_else(|| panic!("{log}"));
    eprintln!("the final catch-up on the fixture: {note}");
    assert!(
        note.contains("1 whole table(s) and 2 large object(s)"),
        "{note}"
    );
    assert_eq!(
        pg::scalar(&target, "SELECT count(*) FROM page_views"),
        pg::scalar(&source, "SELECT count(*) FROM page_views")
    );
}

/// Issue 28: a source owned by `role` (as `owned_databases`) and a target database owned by a
/// login role of the same name on the target cluster, no superuser (as Heroku's credential: it
/// owns its tables and may not set `session_replication_role`, so the target's foreign keys
/// and triggers stay live). `vector` created by the superusers. Returns both URLs, the role's.
fn live_target_databases(name: &str, role: &str) -> (String, String) {
    let (source, _) = owned_databases(name, role);
    let password = "capture-pass-7";
    let tgt = format!("t_{name}");
    let pg = Clusters::from_env();
    database_owned_by(&pg.target, &tgt, role, password);
    let host = pg
        .target
        .rsplit_once('@')
        .unwrap()
        .1
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    let target = format!("postgres://{role}:{password}@{host}/{tgt}?sslmode=disable");
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ),
        "false"
    );
    (source, target)
}

/// Parents and children (ON DELETE CASCADE, ON UPDATE CASCADE: the dangerous case on a live
/// target), a table referencing itself, a vector table, a jsonb table, and a pair emptied by
/// one TRUNCATE … CASCADE.
const LIVE_TABLES: &str = "\
    CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, doc jsonb); \
    CREATE TABLE child (id int PRIMARY KEY, \
        parent_id int NOT NULL REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE, v text); \
    CREATE TABLE node (id int PRIMARY KEY, up int REFERENCES node (id), v text); \
    CREATE TABLE vecs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, embedding vector(3), name text); \
    CREATE TABLE docs (code text PRIMARY KEY, body jsonb NOT NULL); \
    CREATE TABLE kinds (id int PRIMARY KEY, label text); \
    CREATE TABLE things (id int PRIMARY KEY, kind_id int NOT NULL REFERENCES kinds (id), v text); \
    CREATE TABLE owners (id int PRIMARY KEY, name text); \
    CREATE TABLE pets (id int PRIMARY KEY, owner_id int REFERENCES owners (id), name text); \
    CREATE TABLE albums (id int PRIMARY KEY, title text); \
    CREATE TABLE tracks (id int PRIMARY KEY, \
        album_id int NOT NULL REFERENCES albums (id) DEFERRABLE INITIALLY DEFERRED, title text); \
    INSERT INTO owners SELECT g, 'o' || g FROM generate_series(1, 4) g; \
    INSERT INTO pets SELECT g, g, 'pet' || g FROM generate_series(1, 4) g; \
    INSERT INTO albums SELECT g, 'a' || g FROM generate_series(1, 3) g; \
    INSERT INTO tracks SELECT g, g % 3 + 1, 't' || g FROM generate_series(1, 15) g; \
    INSERT INTO parent SELECT g, 'p' || g, jsonb_build_object('g', g) FROM generate_series(1, 20) g; \
    INSERT INTO child SELECT g, (g % 20) + 1, 'c' || g FROM generate_series(1, 60) g; \
    INSERT INTO node VALUES (1, NULL, 'root'), (2, 1, 'a'), (3, 2, 'b'); \
    INSERT INTO vecs (embedding, name) SELECT ARRAY[g, g, g]::real[]::vector, 'v' || g FROM generate_series(1, 10) g; \
    INSERT INTO docs SELECT 'd' || g, jsonb_build_object('g', g) FROM generate_series(1, 10) g; \
    INSERT INTO kinds SELECT g, 'k' || g FROM generate_series(1, 5) g; \
    INSERT INTO things SELECT g, g % 5 + 1, 't' || g FROM generate_series(1, 15) g;";

const LIVE: [&str; 11] = [
    "parent", "child", "node", "vecs", "docs", "kinds", "things", "owners", "pets", "albums",
    "tracks",
];

/// The source's writes, one transaction each: parents updated (their children must survive on
/// the target), children inserted under new parents, a parent deleted with its children
/// (cascade on the source), a child deleted then its parent, children moved to another parent
/// then theirs deleted, a parent's key changed (cascaded to its children), a child pointed at a
/// parent inserted 3 changes later (never in the child's batch), rows of a table referencing itself inserted children
/// first by key, vectors, jsonb, a TRUNCATE … CASCADE refilled; a child moved to another
/// parent and its parent deleted in one transaction (twice, so that one pair shares a batch of
/// 3), and a parent deleted before its 5 children (a foreign key INITIALLY DEFERRED on the
/// source): its batch cannot hold all their deletes.
const LIVE_WRITES: [&str; 20] = [
    "UPDATE pets SET owner_id = 2 WHERE id = 1; DELETE FROM owners WHERE id = 1",
    "UPDATE pets SET owner_id = 4 WHERE id = 3; DELETE FROM owners WHERE id = 3",
    "BEGIN; DELETE FROM albums WHERE id = 2; DELETE FROM tracks WHERE album_id = 2; COMMIT",
    "UPDATE parent SET name = name || '!', doc = doc || '{\"u\": 1}' WHERE id <= 5",
    "INSERT INTO parent VALUES (100, 'new', '{}'), (101, 'new 2', '{\"n\": 2}'); \
     INSERT INTO child VALUES (1000, 100, 'under new'), (1001, 101, 'x'), (1002, 100, 'y')",
    "DELETE FROM parent WHERE id = 7",
    "DELETE FROM child WHERE id = 28",
    "DELETE FROM parent WHERE id = 9",
    "UPDATE child SET parent_id = 100 WHERE parent_id = 11; DELETE FROM parent WHERE id = 11",
    "UPDATE parent SET id = 200 WHERE id = 12",
    "INSERT INTO child VALUES (2000, 1, 'early')",
    "UPDATE docs SET body = body || '{\"between\": 1}' WHERE code IN ('d5', 'd6', 'd7')",
    "INSERT INTO parent VALUES (300, 'late parent', NULL); UPDATE child SET parent_id = 300 WHERE id = 2000",
    "INSERT INTO node VALUES (30, NULL, 'r2'); INSERT INTO node VALUES (20, 30, 'm'); INSERT INTO node VALUES (10, 20, 'leaf')",
    "DELETE FROM node WHERE id = 3; DELETE FROM node WHERE id = 2",
    "INSERT INTO vecs (embedding, name) VALUES ('[0.5, 0.25, 0.125]', 'new vec'); \
     UPDATE vecs SET embedding = '[9, 9, 9]' WHERE id = 3; DELETE FROM vecs WHERE id = 4",
    "UPDATE docs SET body = body || '{\"changed\": true}' WHERE code IN ('d1', 'd2'); \
     DELETE FROM docs WHERE code = 'd3'; INSERT INTO docs VALUES ('d-new', '{\"a\": [1, 2]}')",
    "TRUNCATE kinds CASCADE",
    "INSERT INTO kinds VALUES (1, 'again'), (2, 'again 2'); INSERT INTO things VALUES (1, 2, 'after'), (2, 1, 'after')",
    "UPDATE child SET v = 'touched' WHERE parent_id IN (1, 2, 3)",
];

/// What a live target's foreign keys say: each one still there and validated, and the rows
/// none of them finds a parent for (none).
fn foreign_keys_hold(target: &str) -> (String, String) {
    (
        pg::scalar(
            target,
            "SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint WHERE contype = 'f'",
        ),
        pg::scalar(
            target,
            "SELECT (SELECT count(*) FROM child c WHERE NOT EXISTS (SELECT 1 FROM parent p WHERE p.id = c.parent_id)) \
                  + (SELECT count(*) FROM node c WHERE c.up IS NOT NULL AND NOT EXISTS (SELECT 1 FROM node p WHERE p.id = c.up)) \
                  + (SELECT count(*) FROM things c WHERE NOT EXISTS (SELECT 1 FROM kinds p WHERE p.id = c.kind_id)) \
                  + (SELECT count(*) FROM pets c WHERE c.owner_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM owners p WHERE p.id = c.owner_id)) \
                  + (SELECT count(*) FROM tracks c WHERE NOT EXISTS (SELECT 1 FROM albums p WHERE p.id = c.album_id))",
        ),
    )
}

const LIVE_FKS: &str = "child_parent_id_fkey:true,node_up_fkey:true,pets_owner_id_fkey:true,\
                        things_kind_id_fkey:true,tracks_album_id_fkey:true";

/// Issue 28, the reverse catch-up: into a target whose role may not set
/// `session_replication_role` (its foreign keys and triggers stay live), in batches of 3 so the
/// boundaries split transactions, every table lands equal to the source's, no child of an
/// updated parent is lost to the cascade, and every foreign key is still there and holds.
#[test]
fn a_catchup_into_a_target_with_live_foreign_keys_keeps_them_and_lands_every_row() {
    let (source, target) = live_target_databases("live_fk", "live_owner");
    pg::run_sql(&source, LIVE_TABLES);
    pg::run_sql(&target, LIVE_TABLES);
    // The target's role may not switch its triggers and foreign keys off.
    runtime().block_on(async {
        let c = client(&target).await;
        let refused = c
            .batch_execute("SET session_replication_role = replica")
            .await
            .unwrap_err();
        assert!(
            format!("{refused:?}").contains("permission denied"),
            "{refused:?}"
        );
    });
    let catchup = "[[phase.step]]\nid = \"catchup\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nbatch = 3\n\n";
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE}{catchup}{CATCHUP_AGAIN}"),
    );
    run_ok(&p, "capture");
    for sql in LIVE_WRITES {
        pg::run_sql(&source, sql);
    }
    assert_eq!(
        pg::scalar(&source, "SELECT count(*) FROM child WHERE parent_id = 200"),
        "3"
    );
    for table in [
        "parent", "child", "node", "kinds", "things", "pets", "tracks",
    ] {
        assert_ne!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    run_ok(&p, "catchup");
    for table in LIVE {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    assert_eq!(
        foreign_keys_hold(&target),
        (LIVE_FKS.to_string(), "0".to_string())
    );
    // The children of the updated parents survived, the moved ones followed their parent.
    assert_eq!(
        pg::scalar(&target, "SELECT count(*) FROM child WHERE parent_id <= 5"),
        "15"
    );
    assert_eq!(
        pg::scalar(&target, "SELECT count(*) FROM child WHERE parent_id = 200"),
        "3"
    );
    assert_eq!(
        pg::scalar(&target, "SELECT parent_id FROM child WHERE id = 2000"),
        "300"
    );
    let log = p.run(&["log", "catchup"]).stdout();
    assert!(
        log.contains("the target's triggers and foreign keys stay on"),
        "{log}"
    );
    assert!(
        log.contains("public.node references itself (node_up_fkey)"),
        "{log}"
    );
    // The catch-up wrote nothing the target's guard counts as someone else's.
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM cutover_capture.target_writes"
        ),
        "0"
    );

    // More writes, and a second catch-up in larger batches: harmless, equal again.
    pg::run_sql(
        &source,
        "UPDATE parent SET doc = '{\"again\": true}' WHERE id IN (1, 100, 200); \
         DELETE FROM parent WHERE id = 2; INSERT INTO child VALUES (3000, 300, 'more')",
    );
    run_ok(&p, "catchup-again");
    for table in LIVE {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    assert_eq!(
        foreign_keys_hold(&target),
        (LIVE_FKS.to_string(), "0".to_string())
    );
}

/// The claim the reverse catch-up relies on for a table referencing itself through a foreign
/// key that is not DEFERRABLE: PostgreSQL checks it at the end of the statement, so one
/// statement may insert a child before its parent and delete a parent before its child.
#[test]
fn a_self_reference_holds_at_the_end_of_one_statement() {
    let (_, target) = live_target_databases("self_ref", "self_ref_owner");
    pg::run_sql(
        &target,
        "CREATE TABLE node (id int PRIMARY KEY, up int REFERENCES node (id), v text)",
    );
    pg::run_sql(
        &target,
        "INSERT INTO node SELECT * FROM (VALUES (10, 20, 'leaf'), (20, 30, 'mid'), (30, NULL, 'root')) v(id, up, v) ORDER BY id",
    );
    assert_eq!(pg::scalar(&target, "SELECT count(*) FROM node"), "3");
    pg::run_sql(
        &target,
        "INSERT INTO node SELECT * FROM (VALUES (5, 6, 'a'), (6, 30, 'b')) v(id, up, v) ORDER BY id \
         ON CONFLICT (id) DO UPDATE SET up = EXCLUDED.up, v = EXCLUDED.v",
    );
    pg::run_sql(&target, "DELETE FROM node WHERE id IN (30, 20, 10, 6, 5)");
    assert_eq!(pg::scalar(&target, "SELECT count(*) FROM node"), "0");
    // Two statements in that order fail: the check is the statement's, not the transaction's.
    runtime().block_on(async {
        let c = client(&target).await;
        let failed = c
            .batch_execute("BEGIN; INSERT INTO node VALUES (1, 2, 'x'); INSERT INTO node VALUES (2, NULL, 'y'); COMMIT")
            .await
            .unwrap_err();
        assert!(format!("{failed:?}").contains("node_up_fkey"), "{failed:?}");
    });
}

/// A cycle of foreign keys that are not DEFERRABLE between two tables of a batch fails the
/// reverse catch-up naming them, before anything is written; once they are DEFERRABLE on the
/// target, the catch-up lands both tables.
#[test]
fn a_foreign_key_cycle_is_named_before_anything_is_written() {
    let (source, target) = live_target_databases("fk_cycle", "fk_cycle_owner");
    let ddl = "CREATE TABLE a (id int PRIMARY KEY, b_id int, v text); \
               CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id), v text); \
               ALTER TABLE a ADD CONSTRAINT a_b_id_fkey FOREIGN KEY (b_id) REFERENCES b (id); \
               CREATE TABLE plain (id int PRIMARY KEY, v text)";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE}{CATCHUP}{CATCHUP_AGAIN}"),
    );
    run_ok(&p, "capture");
    pg::run_sql(
        &source,
        "INSERT INTO plain VALUES (1, 'x'); INSERT INTO a VALUES (1, NULL, 'a'); \
         INSERT INTO b VALUES (1, 1, 'b'); UPDATE a SET b_id = 1 WHERE id = 1",
    );
    let said = run_failing(&p, "catchup");
    assert!(
        said.contains("foreign keys form a cycle: public.a → public.b → public.a: the reverse catch-up cannot order it — make one of them DEFERRABLE"),
        "{said}"
    );
    for table in ["a", "b", "plain"] {
        assert_eq!(
            pg::scalar(&target, &format!("SELECT count(*) FROM {table}")),
            "0",
            "{table}"
        );
    }
    pg::run_sql(
        &target,
        "ALTER TABLE a ALTER CONSTRAINT a_b_id_fkey DEFERRABLE; \
         ALTER TABLE b ALTER CONSTRAINT b_a_id_fkey DEFERRABLE",
    );
    run_ok(&p, "catchup-again");
    for table in ["a", "b", "plain"] {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    let log = p.run(&["log", "catchup-again"]).stdout();
    assert!(
        log.contains("all DEFERRABLE, checked at the batch's commit"),
        "{log}"
    );
}

/// The reverse catch-up killed (SIGKILL) while a backlog of parents and children applies to a
/// target whose foreign keys stay live, then run again: it completes, every row lands, and
/// every foreign key holds.
#[test]
fn a_reverse_catchup_killed_mid_run_resumes_and_loses_nothing() {
    let (source, target) = live_target_databases("live_kill", "live_owner_kill");
    let ddl = "CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, doc jsonb); \
               CREATE TABLE child (id int PRIMARY KEY, \
                   parent_id int NOT NULL REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE, v text); \
               CREATE TABLE node (id int PRIMARY KEY, up int REFERENCES node (id), v text); \
               CREATE TABLE kinds (id int PRIMARY KEY, label text); \
               CREATE TABLE things (id int PRIMARY KEY, kind_id int NOT NULL REFERENCES kinds (id), v text); \
               CREATE TABLE owners (id int PRIMARY KEY, name text); \
               CREATE TABLE pets (id int PRIMARY KEY, owner_id int REFERENCES owners (id), name text); \
               CREATE TABLE albums (id int PRIMARY KEY, title text); \
               CREATE TABLE tracks (id int PRIMARY KEY, \
                   album_id int NOT NULL REFERENCES albums (id) DEFERRABLE INITIALLY DEFERRED, title text)";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let catchup = "[[phase.step]]\nid = \"catchup\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nbatch = 200\n\n";
    let p = project(&source, &target, &format!("{CAPTURE}{catchup}"));
    run_ok(&p, "capture");
    runtime().block_on(async {
        let c = client(&source).await;
        for part in 0..10 {
            c.batch_execute(&format!(
                "INSERT INTO parent SELECT g, 'p' || g, jsonb_build_object('g', g) FROM generate_series({b} + 1, {b} + 500) g; \
                 INSERT INTO child SELECT g, {b} + 1 + g % 500, 'c' || g FROM generate_series({c} + 1, {c} + 1500) g",
                b = part * 500,
                c = part * 1500
            ))
            .await
            .unwrap();
        }
        c.batch_execute(
            "UPDATE parent SET name = name || '!' WHERE id % 3 = 0; \
             DELETE FROM parent WHERE id % 10 = 0; \
             UPDATE child SET parent_id = 1 WHERE id % 7 = 0 AND parent_id % 10 <> 0; \
             DELETE FROM child WHERE id % 11 = 0",
        )
        .await
        .unwrap();
    });
    kill_catchup_once_rows_land(&p, &target, "child");
    assert_ne!(table_sum(&source, "child"), table_sum(&target, "child"));

    run_ok(&p, "catchup");
    for table in ["parent", "child"] {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    assert_eq!(
        foreign_keys_hold(&target),
        (LIVE_FKS.to_string(), "0".to_string())
    );
    let journal = p.journal();
    let attempts = journal
        .lines()
        .filter(|l| l.contains("\"catchup\"") && l.contains("\"started\""))
        .count();
    assert!(attempts >= 2, "{journal}");
    let log = p.run(&["log", "catchup"]).stdout();
    assert!(
        log.contains("(an earlier attempt, or `resume`): starting after it"),
        "{log}"
    );
}

/// A TRUNCATE on the source becomes `DELETE` on a live target, children first; a table the
/// capture does not follow (no key) that still references the truncated rows there is named,
/// with the row, and nothing of the batch is written.
#[test]
fn a_truncate_still_referenced_on_a_live_target_is_named() {
    let (source, target) = live_target_databases("live_trunc", "live_owner_trunc");
    let ddl = "CREATE TABLE kinds (id int PRIMARY KEY, label text); \
               CREATE TABLE things (id int PRIMARY KEY, kind_id int NOT NULL REFERENCES kinds (id), v text); \
               CREATE TABLE notes (kind_id int REFERENCES kinds (id), v text); \
               INSERT INTO kinds SELECT g, 'k' || g FROM generate_series(1, 5) g; \
               INSERT INTO things SELECT g, g % 5 + 1, 't' || g FROM generate_series(1, 15) g; \
               INSERT INTO notes VALUES (2, 'a note')";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(
        &source,
        &target,
        &format!("{CAPTURE_FREEZE}{CATCHUP}{CATCHUP_AGAIN}"),
    );
    run_ok(&p, "capture-freeze");
    pg::run_sql(
        &source,
        "UPDATE things SET v = 'before' WHERE id = 1; TRUNCATE kinds CASCADE; \
         INSERT INTO kinds VALUES (1, 'again'); INSERT INTO things VALUES (1, 1, 'after')",
    );
    let said = run_failing(&p, "catchup");
    assert!(
        said.contains("public.kinds was truncated on the source, but public.notes (not truncated) still references its rows on the target: the row (2,\"a note\") (notes_kind_id_fkey)"),
        "{said}"
    );
    assert_eq!(pg::scalar(&target, "SELECT count(*) FROM kinds"), "5");
    assert_eq!(pg::scalar(&target, "SELECT count(*) FROM things"), "15");
    // Emptied on the target as on the source: the truncation lands, children first.
    pg::run_sql(&target, "DELETE FROM notes");
    run_ok(&p, "catchup-again");
    for table in ["kinds", "things"] {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
}

/// The limit said in `apply::live_batch`: two rows of one batch exchanging a unique value other
/// than their key collide on a live target (the first upserted meets the other's old value);
/// the step fails naming the table, the keys and the value, and writes nothing of the batch.
#[test]
fn a_unique_value_exchanged_inside_one_batch_is_named_on_a_live_target() {
    let (source, target) = live_target_databases("live_unique", "live_owner_unique");
    let ddl = "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL UNIQUE); \
               INSERT INTO users VALUES (1, 'a@example.com'), (2, 'b@example.com')";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(&source, &target, &format!("{CAPTURE}{CATCHUP}"));
    run_ok(&p, "capture");
    pg::run_sql(
        &source,
        "UPDATE users SET email = 'tmp' WHERE id = 1; \
         UPDATE users SET email = 'a@example.com' WHERE id = 2; \
         UPDATE users SET email = 'b@example.com' WHERE id = 1",
    );
    let said = run_failing(&p, "catchup");
    assert!(
        said.contains("writing the changed rows of public.users (key {\"id\": 1}, {\"id\": 2})")
            && said.contains("users_email_key"),
        "{said}"
    );
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT string_agg(id || email, ',' ORDER BY id) FROM users"
        ),
        "1a@example.com,2b@example.com"
    );
}

/// A `db.catchup` step with its own batch size.
fn catchup_batch(batch: i64) -> String {
    format!("[[phase.step]]\nid = \"catchup\"\ndo = \"db.catchup\"\nsource = \"${{secret.SOURCE}}\"\ntarget = \"${{secret.TARGET}}\"\nbatch = {batch}\n\n")
}

/// A composite key whose column order in the catalog (tenant, id) is not jsonb's (id, tenant):
/// the keys the log records and those the foreign keys add to a batch are one table's keys, in
/// one upsert. A row referencing itself (not DEFERRABLE) through (tenant, parent) is logged
/// before its parent, in batches of 1: the parent joins the child's batch, and both must land
/// in one statement (two, and the child's fails at its end, on every re-run).
#[test]
fn a_composite_key_in_another_order_than_jsonb_lands_in_one_statement() {
    let (source, target) = live_target_databases("live_order", "live_owner_order");
    let ddl = "CREATE TABLE tree (tenant text NOT NULL, id int NOT NULL, parent int, v text, \
                   PRIMARY KEY (tenant, id), \
                   CONSTRAINT tree_up FOREIGN KEY (tenant, parent) REFERENCES tree (tenant, id)); \
               INSERT INTO tree VALUES ('a', 1, NULL, 'root')";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(&source, &target, &format!("{CAPTURE}{}", catchup_batch(1)));
    run_ok(&p, "capture");
    pg::run_sql(
        &source,
        "INSERT INTO tree SELECT * FROM (VALUES ('a', 10, 20, 'child'), ('a', 20, 1, 'parent')) v(t, i, p, v) ORDER BY i; \
         UPDATE tree SET v = 'root!' WHERE tenant = 'a' AND id = 1",
    );
    run_ok(&p, "catchup");
    assert_eq!(table_sum(&source, "tree"), table_sum(&target, "tree"));
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT count(*) FROM tree c WHERE c.parent IS NOT NULL AND NOT EXISTS \
               (SELECT 1 FROM tree p WHERE p.tenant = c.tenant AND p.id = c.parent)"
        ),
        "0"
    );
}

/// A parent keyed by (id, created_at timestamptz), written by an app whose session is not in
/// UTC (the log spells the key in its time zone, the target in UTC): children moved to another
/// parent and their old parent deleted in one transaction. The old parent is deleted after
/// the children moved (ON DELETE CASCADE would take them, and their own children with them):
/// every row survives on the target.
#[test]
fn a_parent_keyed_by_a_timestamptz_is_deleted_after_its_children_moved() {
    let (source, target) = live_target_databases("live_tz", "live_owner_tz");
    let ddl = "CREATE TABLE tp (id int NOT NULL, created_at timestamptz NOT NULL, name text, \
                   PRIMARY KEY (id, created_at)); \
               CREATE TABLE tc (id int PRIMARY KEY, pid int NOT NULL, pat timestamptz NOT NULL, v text, \
                   FOREIGN KEY (pid, pat) REFERENCES tp (id, created_at) ON DELETE CASCADE); \
               CREATE TABLE tg (id int PRIMARY KEY, cid int NOT NULL REFERENCES tc (id) ON DELETE CASCADE, v text); \
               INSERT INTO tp VALUES (1, '2026-01-01 00:00:00+00', 'one'), (2, '2026-02-01 12:30:00.5+00', 'two'); \
               INSERT INTO tc SELECT g, 1, '2026-01-01 00:00:00+00', 'c' || g FROM generate_series(1, 3) g; \
               INSERT INTO tg SELECT g, g % 3 + 1, 'g' || g FROM generate_series(1, 6) g";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(&source, &target, &format!("{CAPTURE}{CATCHUP}"));
    run_ok(&p, "capture");
    pg::run_sql(
        &source,
        "SET TimeZone = 'America/New_York'; \
         BEGIN; UPDATE tc SET pid = 2, pat = '2026-02-01 12:30:00.5+00' WHERE pid = 1; \
         DELETE FROM tp WHERE id = 1; COMMIT",
    );
    assert!(
        pg::scalar(
            &source,
            "SELECT string_agg(key::text, ' ') FROM cutover_capture.changes WHERE tbl = 'public.tp'"
        )
        .contains("-05:00"),
        "the log does not spell the key in the app's time zone"
    );
    run_ok(&p, "catchup");
    for table in ["tp", "tc", "tg"] {
        assert_eq!(
            table_sum(&source, table),
            table_sum(&target, table),
            "{table}"
        );
    }
    assert_eq!(pg::scalar(&target, "SELECT count(*) FROM tg"), "6");
}

/// A key value equal to the target's but spelled otherwise (numeric 1.0 → 1.00) lands as the
/// source spells it: the upsert sets the key's columns too.
#[test]
fn a_key_spelled_otherwise_lands_as_the_source_spells_it_on_a_live_target() {
    let (source, target) = live_target_databases("live_spell", "live_owner_spell");
    let ddl = "CREATE TABLE amounts (k numeric PRIMARY KEY, v text); \
               INSERT INTO amounts VALUES (1.0, 'one'), (2.0, 'two')";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(&source, &target, &format!("{CAPTURE}{CATCHUP}"));
    run_ok(&p, "capture");
    pg::run_sql(
        &source,
        "UPDATE amounts SET k = 1.00 WHERE k = 1; UPDATE amounts SET k = 2.000, v = 'two!' WHERE k = 2",
    );
    run_ok(&p, "catchup");
    assert_eq!(
        pg::scalar(
            &target,
            "SELECT string_agg(k::text || v, ',' ORDER BY k) FROM amounts"
        ),
        "1.00one,2.000two!"
    );
    assert_eq!(table_sum(&source, "amounts"), table_sum(&target, "amounts"));
}

/// A chain of 1,500 rows referencing each other (ON DELETE CASCADE), deleted at its head: the
/// batch that holds the head's delete follows the chain down through the target, 1,500 rounds
/// (no cap), saying its progress, and once that the foreign key's columns have no index there.
#[test]
fn a_cascade_deeper_than_a_thousand_rounds_lands_on_a_live_target() {
    let (source, target) = live_target_databases("live_deep", "live_owner_deep");
    let ddl = "CREATE TABLE chain (id int PRIMARY KEY, up int REFERENCES chain (id) ON DELETE CASCADE, v text); \
               INSERT INTO chain SELECT g, nullif(g - 1, 0), 'c' || g FROM generate_series(1, 1500) g; \
               CREATE TABLE other (id int PRIMARY KEY, v text)";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(&source, &target, &format!("{CAPTURE}{}", catchup_batch(10)));
    run_ok(&p, "capture");
    // The head deleted, the cascade takes the rest on the source: the head's delete is logged
    // first, and its batch of 10 holds 10 of the 1,500.
    pg::run_sql(
        &source,
        "DELETE FROM chain WHERE id = 1; INSERT INTO other VALUES (1, 'x')",
    );
    assert_eq!(
        pg::scalar(
            &source,
            "SELECT key::text FROM cutover_capture.changes WHERE tbl = 'public.chain' ORDER BY id LIMIT 1"
        ),
        "{\"id\": 1}"
    );
    run_ok(&p, "catchup");
    assert_eq!(pg::scalar(&target, "SELECT count(*) FROM chain"), "0");
    assert_eq!(table_sum(&source, "other"), table_sum(&target, "other"));
    let log = p.run(&["log", "catchup"]).stdout();
    assert!(
        log.contains("the batch's foreign keys lead on: round 1400 of parents and children"),
        "{log}"
    );
    let unindexed = "public.chain has no index on the columns of its foreign key chain_up_fkey (up) to public.chain";
    assert_eq!(log.matches(unindexed).count(), 1, "{log}");
}

/// A table whose key is a DEFERRABLE primary key (ON CONFLICT cannot use it as an arbiter):
/// its rows are updated by key and the missing ones inserted, in one statement, on a live
/// target.
#[test]
fn a_deferrable_key_lands_on_a_live_target() {
    let (source, target) = live_target_databases("live_defer", "live_owner_defer");
    let ddl = "CREATE TABLE accounts (id int PRIMARY KEY DEFERRABLE, name text, n int); \
               INSERT INTO accounts SELECT g, 'a' || g, g FROM generate_series(1, 5) g";
    pg::run_sql(&source, ddl);
    pg::run_sql(&target, ddl);
    let p = project(&source, &target, &format!("{CAPTURE}{CATCHUP}"));
    run_ok(&p, "capture");
    pg::run_sql(
        &source,
        "UPDATE accounts SET name = name || '!' WHERE id <= 2; \
         INSERT INTO accounts VALUES (6, 'six', 6), (7, 'seven', 7); \
         DELETE FROM accounts WHERE id = 3; UPDATE accounts SET n = 70 WHERE id = 7",
    );
    run_ok(&p, "catchup");
    assert_eq!(
        table_sum(&source, "accounts"),
        table_sum(&target, "accounts")
    );
    let log = p.run(&["log", "catchup"]).stdout();
    assert!(
        log.contains("public.accounts: its key (id) is a DEFERRABLE constraint on the target"),
        "{log}"
    );
}

/// Issue 28, the way back on the databases: a capture on "RDS" in a schema of its own, the
/// forward capture installed on "Heroku" again (as the way back does before Heroku takes
/// writes), Heroku's role unable to switch its foreign keys off. RDS's writes (foreign keys,
/// a vector table, jsonb, a TRUNCATE) are carried back by a catch-up and then a final drain:
/// every table equal, Heroku's sequences not behind RDS's, and nothing of it logged by
/// Heroku's own capture (the triggers skip cutover's transactions). The warning says what a way
/// back carries, and then at what rate. `db.idle` on Heroku knows the catch-up's writes as
/// cutover's; another writer's it names, and the final drain names and mends. A source with no
/// capture at all passes with `missing_capture = "pass"`, saying what it could not carry.
#[test]
fn the_way_back_carries_every_write_on_rds_into_heroku_and_logs_none_of_it_there() {
    let (rds, heroku) = live_target_databases("way_back", "way_back_owner");
    pg::run_sql(&rds, LIVE_TABLES);
    pg::run_sql(&heroku, LIVE_TABLES);
    let steps = "\
[[phase.step]]\nid = \"capture-back\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"install\"\nschema = \"cutover_capture_back\"\nlike = \"${secret.TARGET}\"\n\n\
[[phase.step]]\nid = \"capture-heroku\"\ndo = \"db.capture\"\nurl = \"${secret.TARGET}\"\nmode = \"install\"\n\n\
[[phase.step]]\nid = \"mark\"\ndo = \"db.writes\"\nurl = \"${secret.TARGET}\"\n\n\
[[phase.step]]\nid = \"warn\"\ndo = \"db.writes\"\nurl = \"${secret.SOURCE}\"\ncapture = \"cutover_capture_back\"\napplied_by = \"back\"\n\n\
[[phase.step]]\nid = \"back\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nschema = \"cutover_capture_back\"\nbatch = 3\n\n\
[[phase.step]]\nid = \"idle\"\ndo = \"db.idle\"\nurl = \"${secret.TARGET}\"\nwindow = \"1s\"\ndeadline = \"20s\"\nbaseline = \"${steps.mark.outputs.counters}\"\nneeds = [\"mark\"]\n\n\
[[phase.step]]\nid = \"drain\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nschema = \"cutover_capture_back\"\nfinal = true\nresume_step = \"back\"\nindexes = \"own\"\nlock_timeout = \"60s\"\n\n\
[[phase.step]]\nid = \"nothing\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nschema = \"cutover_capture_none\"\nfinal = true\nmissing_capture = \"pass\"\n\n";
    // A table only RDS has (a migration at the cutover made it): left out, named.
    pg::run_sql(
        &rds,
        "CREATE TABLE only_rds (id serial PRIMARY KEY, v text)",
    );
    let p = project(&rds, &heroku, steps);
    p.ok(&["run", "capture-back"])
        .says("left out (not in the other database): public.only_rds");
    for step in ["capture-heroku", "mark"] {
        run_ok(&p, step);
    }
    for sql in LIVE_WRITES {
        pg::run_sql(&rds, sql);
    }
    pg::run_sql(&rds, "INSERT INTO only_rds (v) VALUES ('stays on RDS')");
    let out = p.ok(&["run", "warn"]);
    out.says("row(s) made on this database since the cutover are not in the old database yet")
        .says("no catch-up has run this way yet")
        .says("Not carried (the old database has no such table, the capture left them out): public.only_rds — their rows stay on this database only");
    assert!(!out.text().contains("Nothing is lost"), "{}", out.text());
    run_ok(&p, "back");
    for table in LIVE {
        assert_eq!(table_sum(&rds, table), table_sum(&heroku, table), "{table}");
    }
    assert_eq!(
        foreign_keys_hold(&heroku),
        (LIVE_FKS.to_string(), "0".to_string())
    );
    let heroku_log = "SELECT count(*) FROM cutover_capture.changes";
    assert_eq!(
        pg::scalar(&heroku, heroku_log),
        "0",
        "the catch-up's writes logged on Heroku"
    );
    let tally: i64 = pg::scalar(&heroku, "SELECT sum(n) FROM cutover_capture_back.applied")
        .parse()
        .unwrap();
    assert!(tally > 0, "{tally}");
    p.ok(&["run", "warn"]).says("nothing to carry back");
    // `cutover status` shows the backlog of the way back, as the catch-up left it.
    let backlogs = p.status()["backlogs"].clone();
    assert_eq!(backlogs.as_array().map(Vec::len), Some(1), "{backlogs:#}");
    assert_eq!(backlogs[0]["direction"], "SOURCE → TARGET");
    assert_eq!(backlogs[0]["step"], "back");
    assert_eq!(backlogs[0]["changes"], 0);
    p.ok(&["status"])
        .says("backlog SOURCE → TARGET: nothing waiting (as `back` left it");

    // Heroku was written only by the catch-up: db.idle knows its writes as cutover's.
    let out = p.run(&["run", "idle"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out),
        p.run(&["log", "idle"]).stdout()
    );
    assert!(p
        .run(&["log", "idle"])
        .stdout()
        .contains("all cutover's own catch-up's"));

    // More on RDS, and someone else writes on Heroku.
    pg::run_sql(
        &rds,
        "UPDATE parent SET doc = '{\"later\": 1}' WHERE id IN (1, 100); \
         INSERT INTO vecs (embedding, name) VALUES ('[1, 2, 3]', 'later')",
    );
    p.ok(&["run", "warn"])
        .says("3 change(s) to 3 row(s)")
        .says("changes/s (`back`'s last run)");
    pg::run_sql(
        &heroku,
        "UPDATE docs SET body = '{\"hand\": 1}' WHERE code = 'd1'",
    );
    let why = run_failing(&p, "idle");
    assert!(
        why.contains("public.docs") && why.contains("by someone else"),
        "{why}"
    );
    let why = run_failing(&p, "drain");
    assert!(
        why.contains(
            "writes on the target by someone other than the catch-up: public.docs (1 change)"
        ),
        "{why}"
    );
    // Run again: the hand-written row is set again from RDS, and everything is equal. An index a
    // migration added on RDS is RDS's own: said, not a difference (`indexes = "own"`).
    pg::run_sql(&rds, "CREATE INDEX docs_body_g ON docs ((body ->> 'g'))");
    p.ok(&["run", "drain"])
        .says("not carried (left out at install: the target has no such table): public.only_rds");
    assert!(p.run(&["log", "drain"]).stdout().contains(
        "public.docs: 2 index(es) on the source, 1 on the target — the target keeps its own"
    ));
    for table in LIVE {
        assert_eq!(table_sum(&rds, table), table_sum(&heroku, table), "{table}");
    }
    // Heroku's capture logged the hand write (someone else's), none of the drain's.
    assert_eq!(pg::scalar(&heroku, heroku_log), "1");
    let sequence = "SELECT last_value FROM vecs_id_seq";
    assert!(
        pg::scalar(&heroku, sequence).parse::<i64>().unwrap()
            >= pg::scalar(&rds, sequence).parse::<i64>().unwrap(),
        "Heroku's sequence behind RDS's"
    );
    assert_eq!(
        pg::scalar(
            &heroku,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'cutover_capture_back'"
        ),
        "0",
        "the guard taken off Heroku once the drain passed"
    );
    p.ok(&["run", "nothing"])
        .says("nothing carried: the source has no change capture (cutover_capture_none)");
}

/// Issue 28: no write on RDS goes unrecorded between the freeze's final catch-up and RDS's own
/// capture. The final catch-up with `keep_guard` leaves its guard on RDS; a write there after it
/// (a migration's backfill, the app's cron) is recorded by key; RDS's capture installed with
/// `adopt` puts it at the head of its log; the way back's drain carries it to Heroku.
#[test]
fn a_write_on_rds_between_the_drain_and_its_capture_is_adopted_and_carried_back() {
    let (heroku, rds) = owned_databases("adopt", "adopt_owner");
    let tables = "CREATE TABLE docs (code text PRIMARY KEY, body jsonb NOT NULL); \
                  CREATE TABLE hits (n int); \
                  INSERT INTO docs SELECT 'd' || g, jsonb_build_object('g', g) FROM generate_series(1, 10) g; \
                  INSERT INTO hits VALUES (1), (2);";
    pg::run_sql(&heroku, tables);
    pg::run_sql(&rds, tables);
    let steps = "\
[[phase.step]]\nid = \"capture\"\ndo = \"db.capture\"\nurl = \"${secret.SOURCE}\"\nmode = \"install\"\nwithout_key = \"freeze\"\n\n\
[[phase.step]]\nid = \"drain\"\ndo = \"db.catchup\"\nsource = \"${secret.SOURCE}\"\ntarget = \"${secret.TARGET}\"\nfinal = true\nkeep_guard = true\nlock_timeout = \"60s\"\n\n\
[[phase.step]]\nid = \"rds-capture\"\ndo = \"db.capture\"\nurl = \"${secret.TARGET}\"\nmode = \"install\"\nschema = \"cutover_capture_back\"\nwithout_key = \"freeze\"\nadopt = \"cutover_capture\"\nlike = \"${secret.SOURCE}\"\n\n\
[[phase.step]]\nid = \"back\"\ndo = \"db.catchup\"\nsource = \"${secret.TARGET}\"\ntarget = \"${secret.SOURCE}\"\nschema = \"cutover_capture_back\"\nfinal = true\nlock_timeout = \"60s\"\n\n";
    let p = project(&heroku, &rds, steps);
    run_ok(&p, "capture");
    run_ok(&p, "drain");
    let guarded = "SELECT count(*) FROM pg_trigger WHERE tgname = 'cutover_capture_guard'";
    assert_eq!(pg::scalar(&rds, guarded), "2", "the guard stays on RDS");
    assert!(p
        .run(&["log", "drain"])
        .stdout()
        .contains("the guard stays on the target"));
    // The app's cron on RDS, before RDS's capture is in.
    pg::run_sql(
        &rds,
        "UPDATE docs SET body = '{\"cron\": 1}' WHERE code = 'd1'; DELETE FROM docs WHERE code = 'd2'; \
         UPDATE docs SET code = 'd3x' WHERE code = 'd3'; INSERT INTO hits VALUES (3)",
    );
    // d1, d2, and d3's key change as two: the new key written, the old one gone.
    p.ok(&["run", "rds-capture"])
        .says("4 earlier write(s) adopted from cutover_capture");
    let log = p.run(&["log", "rds-capture"]).stdout();
    assert!(
        log.contains("not adopted (on tables the log does not follow — copied whole, or left out — or without a key): public.hits (1)"),
        "{log}"
    );
    // Its work done, the guard is gone from RDS: the capture records every write from here.
    assert_eq!(pg::scalar(&rds, guarded), "0");
    run_ok(&p, "back");
    for table in ["docs", "hits"] {
        assert_eq!(table_sum(&rds, table), table_sum(&heroku, table), "{table}");
    }
    assert_eq!(
        pg::scalar(&heroku, "SELECT body::text FROM docs WHERE code = 'd1'"),
        "{\"cron\": 1}"
    );
}
