//! Heroku Scheduler's jobs. Scheduler has no public API, so its jobs come from a file the
//! operator fills (`scheduler.toml`, beside the runbook `cutover init` writes). `init` writes
//! its template with the jobs it found (app.json's `cron` entries, the convention Dokku reads)
//! and reads it back on the next run; each job becomes an EventBridge Scheduler schedule.
//!
//! A job's `every` is what Scheduler's dashboard offers: `"10m"` (every 10 minutes),
//! `"hourly at :MM"`, `"daily at HH:MM"` (UTC); or `cron = "M H DOM MON DOW"` (five fields).

/// The longest job name: its schedule is `APP-NAME`, at most 64 characters with an app name of
/// at most 28.
const MAX_NAME: usize = 35;

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

/// Day-of-week names: Unix cron counts 0 (and 7) as Sunday, EventBridge 1 as Sunday; names
/// mean the same to both.
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A Unix day-of-week field with names for numbers (`1-5` → `MON-FRI`, `0,6` → `SUN,SAT`);
/// a range that wraps past Saturday, or a step, is refused rather than guessed.
fn day_names(field: &str) -> Result<String, String> {
    let day = |n: &str| -> Result<&'static str, String> {
        if let Some(name) = DAYS.iter().find(|d| d.eq_ignore_ascii_case(n)) {
            return Ok(name);
        }
        match n.parse::<usize>() {
            Ok(7) => Ok("SUN"),
            Ok(i) if i < 7 => Ok(DAYS[i]),
            _ => Err(format!("day of week {n:?}")),
        }
    };
    // A day as Unix counts it: 0..=7, Sunday both 0 and 7.
    let number = |n: &str| -> Result<usize, String> {
        if let Some(i) = DAYS.iter().position(|d| d.eq_ignore_ascii_case(n)) {
            return Ok(i);
        }
        day(n)?;
        n.parse::<usize>().map_err(|_| format!("day of week {n:?}"))
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        if part.contains('/') {
            return Err(format!(
                "day of week {part:?}: a step; list the days instead"
            ));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("day of week {part:?}: a range that runs backwards"));
                }
                match (a % 7, b) {
                    // 0-7 and 0-6: the whole week.
                    (0, 6 | 7) => out.push("SUN-SAT".to_string()),
                    // N-7: to Saturday, and Sunday.
                    (6, 7) => out.extend(["SAT".to_string(), "SUN".to_string()]),
                    (a, 7) => out.extend([format!("{}-SAT", DAYS[a]), "SUN".to_string()]),
                    (a, b) if a == b => out.push(DAYS[a].to_string()),
                    (a, b) => out.push(format!("{}-{}", DAYS[a], DAYS[b])),
                }
            }
            None => out.push(day(part)?.to_string()),
        }
    }
    let mut seen = Vec::new();
    for d in out {
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    Ok(seen.join(","))
}

/// EventBridge's six-field cron from a five-field one: day-of-month or day-of-week must be `?`,
/// and its days of the week are counted from 1 (Sunday): they are written as names.
pub fn cron_expression(five: &str) -> Result<String, String> {
    let f: Vec<&str> = five.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!(
            "cron {five:?}: five fields (minute hour day-of-month month day-of-week)"
        ));
    }
    let (dom, dow) = match (f[2], f[4]) {
        (dom, "*") => (dom.to_string(), "?".to_string()),
        ("*", dow) => (
            "?".to_string(),
            day_names(dow).map_err(|e| format!("cron {five:?}: {e}"))?,
        ),
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
        // The schedule is named `APP-NAME`: EventBridge takes 64 characters, the app's name 28.
        let name_ok = !entry.name.is_empty()
            && entry.name.len() <= MAX_NAME
            && entry
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            errors.push(format!(
                "job {:?}: a name of lower-case letters, digits and dashes (at most 35)",
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
        let job = format!(
            "[[job]]\nname = \"job-{}\"\ncommand = {}\ncron = {}\n",
            i + 1,
            quoted(command),
            quoted(schedule)
        );
        match cron_expression(schedule) {
            Ok(_) => out.push_str(&format!("\n# from app.json's cron\n{job}")),
            // Written for the operator to mend, commented out so the file still reads.
            Err(e) => out.push_str(&format!(
                "\n# from app.json's cron, not read ({e}): mend it and uncomment it\n{}",
                job.lines().map(|l| format!("# {l}\n")).collect::<String>()
            )),
        }
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
        // Unix's 1 is Monday; EventBridge's 1 is Sunday: names say it to both.
        assert_eq!(
            cron_expression("0 4 * * 1").as_deref(),
            Ok("cron(0 4 ? * MON *)")
        );
        assert_eq!(
            cron_expression("0 4 * * 0,7").as_deref(),
            Ok("cron(0 4 ? * SUN *)")
        );
        assert_eq!(
            cron_expression("0 4 * * 1-5").as_deref(),
            Ok("cron(0 4 ? * MON-FRI *)")
        );
        assert_eq!(
            cron_expression("0 4 * * 5-7").as_deref(),
            Ok("cron(0 4 ? * FRI-SAT,SUN *)")
        );
        assert_eq!(
            cron_expression("0 4 * * sat").as_deref(),
            Ok("cron(0 4 ? * SAT *)")
        );
        assert!(cron_expression("0 4 * * 6-2").is_err());
        assert!(
            cron_expression("0 4 * * 7-2").is_err(),
            "Unix cron refuses it too"
        );
        assert_eq!(
            cron_expression("0 4 * * 0-7").as_deref(),
            Ok("cron(0 4 ? * SUN-SAT *)")
        );
        assert_eq!(
            cron_expression("0 4 * * 6-7").as_deref(),
            Ok("cron(0 4 ? * SAT,SUN *)")
        );
        assert!(cron_expression("0 4 * * */2").is_err());
        assert!(cron_expression("0 4 * * 9").is_err());
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
        // A cron entry that cannot be read is written commented out, named; the file reads.
        let text = template("app", &[("0 4 1 * 1".into(), "x".into())]);
        assert!(
            text.contains("not read (cron \"0 4 1 * 1\": EventBridge cannot take both"),
            "{text}"
        );
        assert_eq!(parse(&text), Ok(vec![]));
        let long = format!(
            "[[job]]\nname = \"{}\"\ncommand = \"x\"\nevery = \"10m\"\n",
            "a".repeat(36)
        );
        assert!(parse(&long).is_err());
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
