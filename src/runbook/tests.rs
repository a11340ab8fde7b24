//! Parser and validation: every error names its line and column, all at once.

use super::*;
use crate::actions::Registry;

fn load(text: &str) -> Result<Runbook, LoadError> {
    Runbook::from_source(
        SourceFile::new("rb.toml", text.to_string()),
        &[],
        &Registry::builtin(),
    )
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Err(LoadError::Invalid(d)) => d
            .items
            .iter()
            .map(|i| {
                let loc = d.source.locate(i.span.start);
                format!("{}:{}: {}", loc.line, loc.column, i.message)
            })
            .collect(),
        Ok(_) => panic!("expected errors"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const HEAD: &str =
    "[runbook]\nname = \"n\"\napp = \"a\"\n[vars]\nx = \"1\"\n[[phase]]\nid = \"p\"\n";

#[test]
fn a_valid_runbook_loads_with_vars_filled_and_digests() {
    let rb = load(&format!(
        "{HEAD}[[phase.step]]\nid = \"a\"\ntitle = \"A ${{x}}\"\ndo = \"shell\"\nrun = \"echo ${{x}} $${{HOME}}\"\noutputs = [\"o\"]\n\
         [[phase.step]]\nid = \"b\"\ndo = \"http\"\nurl = \"http://h/${{steps.a.outputs.o}}\"\nneeds = [\"a\"]\ntimeout = \"5m\"\n\
         after = {{ step = \"a\", at_least = \"7d\" }}\n"
    ))
    .unwrap();
    assert_eq!(rb.steps.len(), 2);
    assert_eq!(rb.steps[0].title, "A 1");
    assert_eq!(rb.steps[0].line, 9);
    assert_eq!(
        rb.steps[1].timeout,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(
        rb.steps[1].after.as_ref().map(|a| a.at_least.as_secs()),
        Some(7 * 86400)
    );
    assert_eq!(rb.phases[0].steps, 0..2);
    assert_eq!(rb.steps[0].digest.len(), 16);
    assert_ne!(rb.steps[0].digest, rb.steps[1].digest);
}

#[test]
fn toml_syntax_errors_have_line_and_column() {
    let e = errors("[runbook]\nname = \"n\nap = 3\n");
    assert!(!e.is_empty());
    assert!(e[0].starts_with("2:"), "{e:?}");
    assert!(e[0].contains("invalid TOML"), "{e:?}");
}

#[test]
fn all_semantic_errors_are_reported_at_once_with_places() {
    let text = format!(
        "{HEAD}\
[[phase.step]]
id = \"a\"
do = \"shel\"
run = \"x\"

[[phase.step]]
id = \"b\"
do = \"shell\"
run = \"echo ${{nope}}\"
tiemout = \"5m\"
needs = [\"zzz\"]

[[phase.step]]
id = \"b\"
do = \"http\"
url = 5

[[phase.step]]
id = \"c\"
do = \"shell\"
run = \"rm -rf x\"
destructive = true
needs = [\"d\"]

[[phase.step]]
id = \"d\"
do = \"manual\"
needs = [\"c\"]
retries = \"many\"
"
    );
    let e = errors(&text);
    let expect = [
        "10:6: unknown action kind `shel`",
        "16:7: undefined variable `${nope}`",
        "17:1: unknown key `tiemout`",
        "18:10: step `b` needs unknown step `zzz`",
        "21:6: duplicate step id `b`",
        "23:7: `url` in step `b` must be a string, found integer",
        "26:1: step `c` is destructive but has no `confirm` phrase",
        "30:10: dependency cycle: c → d → c",
        "36:11: `retries` must be an integer from 0 to 100",
    ];
    for want in expect {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
}

#[test]
fn rendered_errors_show_file_line_column_and_the_line() {
    let Err(LoadError::Invalid(d)) = load(&format!(
        "{HEAD}[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"x\"\nretires = 2\n"
    )) else {
        panic!("expected errors");
    };
    let text = d.to_string();
    assert!(
        text.contains("rb.toml:12:1: error: unknown key `retires` in step `a` (action `shell`)"),
        "{text}"
    );
    assert!(text.contains("12 | retires = 2"), "{text}");
    assert!(text.contains("help: did you mean `retries`?"), "{text}");
    assert!(text.ends_with("rb.toml: 1 error"), "{text}");
}

#[test]
fn references_are_checked_against_secrets_outputs_and_needs() {
    let e = errors(&format!(
        "{HEAD}[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"x ${{secret.DB}}\"\noutputs = [\"o\"]\n\
         [[phase.step]]\nid = \"b\"\ndo = \"shell\"\nrun = \"${{steps.a.outputs.o}} ${{steps.a.outputs.zz}} ${{oops\"\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("11:7: undeclared secret `${secret.DB}`")),
        "{e:#?}"
    );
    assert!(e.iter().any(|m| m.contains("unterminated `${`")), "{e:#?}");
    let e = errors(&format!(
        "{HEAD}[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"x\"\noutputs = [\"o\"]\n\
         [[phase.step]]\nid = \"b\"\ndo = \"shell\"\nrun = \"${{steps.a.outputs.o}} ${{steps.a.outputs.zz}}\"\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.contains("step `b` uses an output of `a` but does not need it")),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|m| m.contains("step `a` has no output `zz`")),
        "{e:#?}"
    );
}

#[test]
fn var_overrides_change_values_and_digests_and_unknown_ones_are_refused() {
    let text = format!("{HEAD}[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"echo ${{x}}\"\n");
    let source = SourceFile::new("rb.toml", text);
    let base = Runbook::from_source(source.clone(), &[], &Registry::builtin()).unwrap();
    let changed =
        Runbook::from_source(source.clone(), &["x=2".into()], &Registry::builtin()).unwrap();
    assert_eq!(changed.vars["x"], "2");
    assert_ne!(base.steps[0].digest, changed.steps[0].digest);
    assert!(matches!(
        Runbook::from_source(source.clone(), &["nope=1".into()], &Registry::builtin()),
        Err(LoadError::UnknownVar(..))
    ));
    assert!(matches!(
        Runbook::from_source(source, &["novalue".into()], &Registry::builtin()),
        Err(LoadError::MalformedVar(..))
    ));
}

#[test]
fn variables_may_refer_to_each_other_but_not_in_a_loop() {
    let rb = load("[runbook]\nname = \"n\"\napp = \"a\"\n[vars]\nregion = \"us-east-1\"\nrepo = \"123.dkr.ecr.${region}.amazonaws.com\"\n[[phase]]\nid = \"p\"\n").unwrap();
    assert_eq!(rb.vars["repo"], "123.dkr.ecr.us-east-1.amazonaws.com");
    let e = errors("[runbook]\nname = \"n\"\napp = \"a\"\n[vars]\na = \"${b}\"\nb = \"${a}\"\n[[phase]]\nid = \"p\"\n");
    assert!(e.iter().any(|m| m.contains("loop")), "{e:#?}");
}

#[test]
fn the_bundled_runbook_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbook.toml");
    let rb = Runbook::load(&path, &[], &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rb.phases.len(), 6);
    for id in [
        "db-capture",
        "db-copy",
        "maintenance-on",
        "dns-cutover",
        "remove-heroku-postgres",
        "destroy-heroku-app",
        "delete-heroku-secrets",
    ] {
        let step = rb.step(id).unwrap_or_else(|| panic!("no step {id}"));
        assert!(
            step.destructive && step.confirm.is_some(),
            "{id} must be destructive with a phrase"
        );
    }
}

/// The bundled runbook moves online: inside the write freeze (opened by maintenance-on, which
/// stops the dynos) only the final catch-up, a pending migration, the write mark and the DNS
/// change — never the copy, the
/// verification, a snapshot, a deployment or an earlier catch-up.
#[test]
fn the_bundled_runbook_keeps_the_copy_and_the_aws_work_out_of_the_freeze() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbook.toml");
    let rb = Runbook::load(&path, &[], &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
    let freeze = rb
        .windows
        .iter()
        .find(|w| w.name == "write freeze")
        .unwrap_or_else(|| panic!("no write freeze"));
    assert_eq!(
        crate::window::inside(&rb, freeze),
        [
            "db-drain",
            "migrations",
            "rds-writes-mark",
            "rds-capture",
            "dns-cutover"
        ]
    );
    let drain = rb.step("db-drain").unwrap_or_else(|| panic!("no db-drain"));
    assert_eq!(drain.action.kind, "db.catchup");
    assert_eq!(
        drain.action.params.get("final"),
        Some(&serde_json::Value::Bool(true))
    );
    // Nothing writes RDS from Heroku once the domain points at AWS.
    for id in ["db-copy", "db-catchup", "db-catchup-2", "db-drain"] {
        let step = rb.step(id).unwrap_or_else(|| panic!("no {id}"));
        assert_eq!(step.refuse_after.as_deref(), Some("dns-cutover"), "{id}");
    }
    // The copy needs the capture: the triggers are in before its snapshot.
    let copy = rb.step("db-copy").unwrap_or_else(|| panic!("no db-copy"));
    assert!(copy.needs.contains(&"db-capture".to_string()));
}

/// The way back keeps every write: RDS's capture is in before the domain points at AWS (after
/// the migrations, whose schema it records); rolling the DNS back first stops writes on AWS and
/// drains RDS's backlog into Heroku, finally; the capture goes on Heroku again before Heroku
/// takes writes; closing the way back is destructive and comes before Heroku's database goes.
#[test]
fn the_bundled_runbook_goes_back_to_heroku_with_every_write() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbook.toml");
    let rb = Runbook::load(&path, &[], &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
    let step = |id: &str| rb.step(id).unwrap_or_else(|| panic!("no {id}"));
    let capture = step("rds-capture");
    assert_eq!(capture.action.kind, "db.capture");
    assert!(rb
        .transitive_needs("rds-capture")
        .contains(&"migrations".to_string()));
    assert!(step("dns-cutover")
        .needs
        .contains(&"rds-capture".to_string()));
    let back = step("dns-cutover")
        .rollback
        .clone()
        .unwrap_or_else(|| panic!("no rollback"));
    let kinds: Vec<&str> = back.first.iter().map(|f| f.action.kind.as_str()).collect();
    assert_eq!(kinds, ["elb.maintenance", "db.catchup"]);
    let drain = &back.first[1];
    assert_eq!(drain.via.as_deref(), Some("rds-tunnel"));
    for (name, value) in [
        ("final", serde_json::json!(true)),
        ("source", serde_json::json!("${secret.RDS_DATABASE_URL}")),
        ("target", serde_json::json!("${secret.HEROKU_DATABASE_URL}")),
        ("schema", capture.action.params["schema"].clone()),
        ("resume_step", serde_json::json!("db-catchup-back")),
    ] {
        assert_eq!(drain.action.params.get(name), Some(&value), "{name}");
    }
    assert_eq!(back.first[0].action.params["mode"], "on");
    // Heroku's capture again before Heroku serves: in the chain before the DNS goes back.
    let again = step("db-capture-remove")
        .rollback
        .clone()
        .and_then(|r| r.action)
        .unwrap_or_else(|| panic!("no rollback action"));
    assert_eq!(again.params["mode"], "install");
    assert!(step("db-capture-remove")
        .needs
        .contains(&"dns-cutover".to_string()));
    assert_eq!(step("alb-serving").action.params["mode"], "off");
    let close = step("rds-capture-remove");
    assert!(close.destructive && close.confirm.is_some());
    assert!(step("remove-heroku-postgres")
        .needs
        .contains(&"rds-capture-remove".to_string()));
}

#[test]
fn a_runbook_that_is_not_utf8_is_invalid_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbook.toml");
    std::fs::write(&path, b"[runbook]\nname = \"Gr\xfc\xdfe\"\n").unwrap();
    match Runbook::load(&path, &[], &Registry::builtin()) {
        Err(
            e @ LoadError::NotUtf8 {
                line: 2,
                column: 11,
                ..
            },
        ) => {
            assert!(e.to_string().ends_with(":2:11: the runbook is not valid UTF-8 (a byte that begins no UTF-8 character here); save it as UTF-8"), "{e}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("loaded"),
    }
    assert_eq!(position_of("añb\nxy".as_bytes(), 7), (2, 3));
}

#[test]
fn windows_name_existing_steps_and_close_after_they_open() {
    let steps = "[[phase.step]]\nid = \"a\"\ndo = \"shell\"\nrun = \"true\"\n\n\
                 [[phase.step]]\nid = \"b\"\ndo = \"shell\"\nrun = \"true\"\nneeds = [\"a\"]\n\n\
                 [[phase.step]]\nid = \"c\"\ndo = \"shell\"\nrun = \"true\"\n\n";
    let ok = load(&format!(
        "{HEAD}{steps}[[window]]\nname = \"freeze\"\nfrom = \"a\"\nto = \"b\"\n"
    ))
    .unwrap();
    assert_eq!(ok.windows.len(), 1);
    assert_eq!(ok.windows[0].from, "a");
    assert_eq!(crate::window::inside(&ok, &ok.windows[0]), vec!["b"]);

    let text = format!(
        "{HEAD}{steps}[[window]]\nname = \"freeze\"\nfrom = \"aa\"\nto = \"b\"\n\n\
         [[window]]\nname = \"other\"\nfrom = \"a\"\nto = \"c\"\n\n\
         [[window]]\nname = \"other\"\nfrom = \"a\"\nto = \"b\"\n\n\
         [[window]]\nname = \"half\"\nfrom = \"a\"\n"
    );
    let errs = errors(&text);
    let line = |needle: &str| text.lines().position(|l| l == needle).unwrap() + 1;
    assert!(
        errs.contains(&format!(
            "{}:8: window `freeze`: `from` names unknown step `aa`",
            line("from = \"aa\"")
        )),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{}:6:", line("to = \"c\"")))
                && e.contains("step `c` does not depend on `a`")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("duplicate window `other`")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("[[window]] has no `to`")),
        "{errs:#?}"
    );
}

#[test]
fn only_if_reads_an_output_of_a_step_it_needs_and_never_a_secret() {
    let steps = |only_if: &str| {
        format!(
            "{HEAD}[secrets]\nS = {{ env = \"S\" }}\n[[phase.step]]\nid = \"check\"\ndo = \"shell\"\nrun = \"true\"\noutputs = [\"code\"]\n\
             [[phase.step]]\nid = \"run\"\ndo = \"shell\"\nrun = \"true\"\nneeds = [\"check\"]\n{only_if}\n"
        )
    };
    let rb = load(&steps(
        "only_if = { value = \"${steps.check.outputs.code}\", equals = 1, why = \"it said so\" }",
    ))
    .unwrap();
    let condition = rb.steps[1].only_if.clone().unwrap();
    // `equals = 1` is the text "1": outputs are text.
    assert_eq!(condition.equals, "1");
    assert_eq!(
        condition.describe(),
        "runs only when check's code is 1 (it said so)"
    );
    assert_eq!(
        condition.skip_reason("0"),
        "not needed: check's code is 0; runs only when 1 (it said so)"
    );
    // The condition is part of what the step does; a step without one keeps its digest.
    let plain = load(&steps("")).unwrap();
    assert_ne!(plain.steps[1].digest, rb.steps[1].digest);
    assert_eq!(plain.steps[0].digest, rb.steps[0].digest);

    let e = errors(&steps(
        "only_if = { value = \"${x}-${secret.S}\", equals = \"1\" }",
    ));
    assert!(e.iter().any(|m| m.contains("reads a secret")), "{e:?}");
    let e = errors(&steps("only_if = { value = \"${x}\", equals = \"1\" }"));
    assert!(
        e.iter()
            .any(|m| m.contains("`only_if` of step `run` reads no step output")),
        "{e:?}"
    );
    let e = errors(&steps(
        "only_if = { value = \"${steps.check.outputs.nope}\", equals = \"1\", when = \"x\" }",
    ));
    assert!(
        e.iter()
            .any(|m| m.contains("step `check` has no output `nope`")),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.contains("`when`")), "{e:?}");
    let e = errors(&steps("only_if = \"yes\""));
    assert!(
        e.iter().any(|m| m.contains("`only_if` must be a table")),
        "{e:?}"
    );
}

#[test]
fn approvals_are_validated_and_need_aws() {
    let bad = "[runbook]\nname = \"n\"\napp = \"a\"\napprovals = 11\napproval_ttl = \"13h\"\napprovers = [\"bea\"]\n[[phase]]\nid = \"p\"\n[[phase.step]]\nid = \"s\"\ndo = \"shell\"\nrun = \"true\"\napprovals = -1\napprovers = [\"arn:aws:iam::1:user/*\", \"cal\"]\n";
    let e = errors(bad).join("\n");
    for needle in [
        "4:13: `approvals` of [runbook] must be an integer from 0 to 10",
        "5:16: `approval_ttl` must be from 1s to 12h",
        "6:14: approver `bea` is not an ARN pattern",
        "`approvals` of step `s` must be an integer from 0 to 10",
        "approver `cal` is not an ARN pattern",
    ] {
        assert!(e.contains(needle), "{needle}\n{e}");
    }
    let no_aws = "[runbook]\nname = \"n\"\napp = \"a\"\napprovals = 1\n[[phase]]\nid = \"p\"\n[[phase.step]]\nid = \"s\"\ndo = \"shell\"\nrun = \"true\"\ndestructive = true\nconfirm = \"go\"\n";
    assert!(errors(no_aws)
        .join("\n")
        .contains("approvals are proven by each operator's AWS identity"));
    // With [aws]: destructive steps take the runbook's count, others none unless they say.
    let ok = format!(
        "{}[[phase.step]]\nid = \"t\"\ndo = \"shell\"\nrun = \"true\"\napprovals = 2\napprovers = [\"arn:aws:iam::1:user/ops-*\"]\n",
        no_aws.replacen("[[phase]]", "[aws]\nregion = \"us-east-1\"\n[[phase]]", 1)
    );
    let rb = load(&ok).unwrap_or_else(|e| panic!("{e}"));
    let s = rb.step("s").unwrap();
    assert_eq!(rb.approval_policy(s).map(|p| p.count), Some(1));
    let t = rb.step("t").unwrap();
    let p = rb.approval_policy(t).unwrap();
    assert_eq!((p.count, p.approvers.len()), (2, 1));
    // A step's policy is part of what it is: its digest changes with it.
    assert_ne!(s.digest, t.digest);
}
