//! Heroku Scheduler's jobs. Scheduler has no public API, so its jobs come from a file the
//! operator fills (`scheduler.toml`, beside the runbook `cutover init` writes). `init` writes
//! its template with the jobs it found (app.json's `cron` entries, the convention Dokku reads)
//! and reads it back on the next run; each job becomes an EventBridge Scheduler schedule.
//!
//! A job's `every` is what Scheduler's dashboard offers: `"10m"` (every 10 minutes),
//! `"hourly at :MM"`, `"daily at HH:MM"` (UTC); or `cron = "M H DOM MON DOW"` (five fields).

/// One job, with its EventBridge schedule expression.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Job {
    pub name: String,
    pub command: String,
    /// `rate(10 minutes)` or `cron(M H DOM MON DOW YEAR)`.
    pub expression: String,
    /// As the file says it.
    pub every: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    job: Vec<Entry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    command: String,
    every: Option<String>,
    cron: Option<String>,
}

/// EventBridge's six-field cron from a five-field one: day-of-month or day-of-week must be `?`.
pub fn cron_expression(five: &str) -> Result<String, String> {
    let f: Vec<&str> = five.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!(
            "cron {five:?}: five fields (minute hour day-of-month month day-of-week)"
        ));
    }
    let (dom, dow) = match (f[2], f[4]) {
        (dom, "*") => (dom, "?"),
        ("*", dow) => ("?", dow),
        (_, _) => {
            return Err(format!(
            "cron {five:?}: EventBridge cannot take both a day of the month and a day of the week"
        ))
        }
    };
    Ok(format!("cron({} {} {dom} {} {dow} *)", f[0], f[1], f[3]))
}

/// `every` as Scheduler's dashboard says it, as an EventBridge expression.
pub fn every_expression(every: &str) -> Result<String, String> {
    let e = every.trim().to_ascii_lowercase();
    let two = |s: &str, max: u32| -> Option<u32> {
        (s.len() == 2 && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
            .filter(|n| *n <= max)
    };
    if e == "10m" || e == "every 10 minutes" {
        return Ok("rate(10 minutes)".to_string());
    }
    if let Some(m) = e.strip_prefix("hourly at :") {
        if let Some(m) = two(m, 59) {
            return Ok(format!("cron({m} * * * ? *)"));
        }
    }
    if let Some(t) = e.strip_prefix("daily at ") {
        if let Some((h, m)) = t.split_once(':') {
            if let (Some(h), Some(m)) = (two(h, 23), two(m, 59)) {
                return Ok(format!("cron({m} {h} * * ? *)"));
            }
        }
    }
    Err(format!(
        "every = {every:?}: Heroku Scheduler runs \"10m\", \"hourly at :MM\" or \"daily at HH:MM\" (UTC); or give cron = \"M H DOM MON DOW\""
    ))
}

/// Reads a jobs file; every bad entry is named (the file is the operator's: nothing guessed).
pub fn parse(text: &str) -> Result<Vec<Job>, String> {
    let file: File = toml::from_str(text).map_err(|e| format!("scheduler.toml: {e}"))?;
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for entry in file.job {
        let name_ok = !entry.name.is_empty()
            && entry.name.len() <= 40
            && entry
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            errors.push(format!(
                "job {:?}: a name of lower-case letters, digits and dashes (at most 40)",
                entry.name
            ));
            continue;
        }
        if jobs.iter().any(|j: &Job| j.name == entry.name) {
            errors.push(format!("job {:?} is there twice", entry.name));
            continue;
        }
        if entry.command.trim().is_empty() {
            errors.push(format!("job {:?}: no command", entry.name));
            continue;
        }
        let (expression, every) = match (&entry.every, &entry.cron) {
            (Some(e), None) => (every_expression(e), e.clone()),
            (None, Some(c)) => (cron_expression(c), format!("cron {c}")),
            _ => (
                Err("give `every` or `cron`, one of them".to_string()),
                String::new(),
            ),
        };
        match expression {
            Ok(expression) => jobs.push(Job {
                name: entry.name,
                command: entry.command,
                expression,
                every,
            }),
            Err(e) => errors.push(format!("job {:?}: {e}", entry.name)),
        }
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(format!("scheduler.toml: {}", errors.join("; ")))
    }
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// The template `init` writes: the jobs found (app.json's `cron`), else one commented example.
pub fn template(app: &str, found: &[(String, String)]) -> String {
    let mut out = format!(
        "# Heroku Scheduler's jobs for {app}. Scheduler has no API: copy each job from its dashboard\n\
         # (`heroku addons:open scheduler -a {app}`), then run `cutover init` again to write their\n\
         # EventBridge schedules. every: \"10m\", \"hourly at :MM\" or \"daily at HH:MM\" (UTC), or\n\
         # cron = \"M H DOM MON DOW\". Each job runs once, as an ECS task of the web service's image.\n"
    );
    if found.is_empty() {
        out.push_str(
            "\n# [[job]]\n# name = \"nightly-cleanup\"\n# command = \"bin/rails cleanup\"\n# every = \"daily at 03:30\"\n",
        );
    }
    for (i, (schedule, command)) in found.iter().enumerate() {
        out.push_str(&format!(
            "\n# from app.json's cron\n[[job]]\nname = \"job-{}\"\ncommand = {}\ncron = {}\n",
            i + 1,
            quoted(command),
            quoted(schedule)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedulers_frequencies_and_cron_become_eventbridge_expressions() {
        assert_eq!(every_expression("10m").as_deref(), Ok("rate(10 minutes)"));
        assert_eq!(
            every_expression("hourly at :30").as_deref(),
            Ok("cron(30 * * * ? *)")
        );
        assert_eq!(
            every_expression("Daily at 03:05").as_deref(),
            Ok("cron(5 3 * * ? *)")
        );
        assert!(every_expression("daily at 25:00").is_err());
        assert!(every_expression("weekly").is_err());
        assert_eq!(
            cron_expression("0 4 * * 1").as_deref(),
            Ok("cron(0 4 ? * 1 *)")
        );
        assert_eq!(
            cron_expression("*/15 * * * *").as_deref(),
            Ok("cron(*/15 * * * ? *)")
        );
        assert!(cron_expression("0 4 1 * 1").is_err());
        assert!(cron_expression("0 4 *").is_err());
    }

    #[test]
    fn a_jobs_file_reads_back_and_every_bad_entry_is_named() {
        let jobs = parse(&template(
            "app",
            &[("0 3 * * *".into(), "bin/rails \"x\"".into())],
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].command, "bin/rails \"x\"");
        assert_eq!(jobs[0].expression, "cron(0 3 * * ? *)");
        assert_eq!(parse(&template("app", &[])), Ok(vec![]));
        let bad = "[[job]]\nname = \"Bad Name\"\ncommand = \"x\"\nevery = \"10m\"\n\
                   [[job]]\nname = \"ok\"\ncommand = \"x\"\nevery = \"weekly\"\n\
                   [[job]]\nname = \"both\"\ncommand = \"x\"\nevery = \"10m\"\ncron = \"* * * * *\"\n";
        let err = parse(bad).err().unwrap_or_default();
        assert!(err.contains("\"Bad Name\""), "{err}");
        assert!(err.contains("job \"ok\": every = \"weekly\""), "{err}");
        assert!(
            err.contains("job \"both\": give `every` or `cron`"),
            "{err}"
        );
        assert!(parse("[[job]]\nname = \"x\"\nwhat = 1\n").is_err());
    }
}
