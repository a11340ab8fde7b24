//! What `cutover init` reads of a Heroku app, and what each part becomes on AWS. Every fact
//! names its source (`API …`, `Procfile`); where the API and the repository disagree, both are
//! said. What cannot be decided here (an add-on cutover does not move, a size Fargate lacks) is
//! listed as a decision for the operator — never dropped.

use std::path::Path;

use serde_json::Value;

use super::api::{segment, Api, ApiError};
use super::repo::{self, Build};
use super::sizes::{self, Fargate};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Process {
    #[serde(rename = "type")]
    pub kind: String,
    pub command: Option<String>,
    /// Dynos running it (the formation), if it is scaled at all.
    pub quantity: Option<u32>,
    pub size: Option<String>,
    /// Where each of its facts came from.
    pub from: Vec<String>,
    /// What it becomes on AWS.
    pub becomes: String,
    /// Its Fargate task size, for a scaled process.
    pub fargate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Addon {
    pub name: String,
    pub service: String,
    pub plan: String,
    /// The config vars it sets (names).
    pub config_vars: Vec<String>,
    pub attachments: Vec<String>,
    pub becomes: String,
    /// What Heroku bills for it a month (the API's `billed_price`), if it says.
    pub monthly_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Domain {
    pub hostname: String,
    pub certificate: Option<String>,
    pub becomes: String,
}

impl Addon {
    /// Heroku Redis or Key-Value Store.
    pub fn is_redis(&self) -> bool {
        matches!(
            self.service.as_str(),
            "heroku-redis" | "heroku-key-value-store"
        )
    }
}

/// The app's shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Shape {
    pub app: String,
    pub region: Option<String>,
    pub stack: Option<String>,
    pub buildpacks: Vec<String>,
    pub processes: Vec<Process>,
    /// Names only.
    pub config_vars: Vec<String>,
    pub addons: Vec<Addon>,
    pub domains: Vec<Domain>,
    /// What the repository says about building it (none without a repository).
    pub build: Option<Build>,
    pub disagreements: Vec<String>,
    pub decisions: Vec<String>,
    /// Dyno size (lower case) → its monthly price, as the API's dyno sizes say.
    pub dyno_prices: std::collections::BTreeMap<String, f64>,
}

/// A monthly price in USD from the API's `{cents, unit}`, when it is per month.
fn monthly(v: Option<&Value>) -> Option<f64> {
    let v = v?;
    (v.get("unit").and_then(Value::as_str) == Some("month"))
        .then(|| v.get("cents").and_then(Value::as_f64))
        .flatten()
        .map(|c| c / 100.0)
}

/// `type: command` lines of a Procfile (comments and blank lines skipped).
pub fn procfile(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (kind, command) = l.split_once(':')?;
            let kind = kind.trim();
            (!kind.is_empty()
                && kind
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .then(|| (kind.to_string(), command.trim().to_string()))
        })
        .collect()
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_str().map(str::to_string)
}

/// Reads the app through the API and, when `repo` holds one, its Procfile; maps it.
pub async fn read(api: &Api, app: &str, repo: Option<&Path>) -> Result<Shape, ApiError> {
    let a = segment(app);
    let missing = format!("Heroku has no app {app} that this token can see");
    let info = api.get(&format!("/apps/{a}"), &missing).await?;
    let buildpacks = api
        .get(&format!("/apps/{a}/buildpack-installations"), &missing)
        .await?;
    let formation = api.get(&format!("/apps/{a}/formation"), &missing).await?;
    // The latest release with a slug: its process types (`release` among them: the formation
    // never lists it).
    let releases = api
        .page(
            &format!("/apps/{a}/releases"),
            "version ..; order=desc, max=10",
            &missing,
        )
        .await?;
    let slug = releases
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|r| text(r, &["slug", "id"]));
    let process_types = match &slug {
        Some(id) => api
            .get(
                &format!("/apps/{a}/slugs/{}", segment(id)),
                &format!("the slug {id} of {app}'s latest release"),
            )
            .await?
            .get("process_types")
            .cloned()
            .unwrap_or(Value::Null),
        None => Value::Null,
    };
    let config_vars = api.config_var_names(app).await?;
    let addons = api.get(&format!("/apps/{a}/addons"), &missing).await?;
    let attachments = api
        .get(&format!("/apps/{a}/addon-attachments"), &missing)
        .await?;
    let domains = api.get(&format!("/apps/{a}/domains"), &missing).await?;
    // Prices: only for the cost comparison; an API that does not say leaves the table's.
    let dyno_sizes = api
        .get("/dyno-sizes", "Heroku's dyno sizes")
        .await
        .unwrap_or(Value::Null);
    let dyno_prices = dyno_sizes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                text(d, &["name"])?.to_ascii_lowercase(),
                monthly(d.get("cost"))?,
            ))
        })
        .collect();

    let mut disagreements = Vec::new();
    let mut decisions = Vec::new();
    let buildpack_names: Vec<String> = buildpacks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| text(b, &["buildpack", "name"]).or_else(|| text(b, &["buildpack", "url"])))
        .collect();
    let build = repo.map(|dir| repo::read(dir, &buildpack_names));
    if let Some(b) = &build {
        disagreements.extend(b.disagreements.iter().cloned());
    }

    // Processes: the release's types and commands, the formation's quantities and sizes, the
    // Procfile's types and commands.
    let released: Vec<(String, String)> = process_types
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let declared: Option<Vec<(String, String)>> = repo.and_then(|dir| {
        std::fs::read_to_string(dir.join("Procfile"))
            .ok()
            .map(|t| procfile(&t))
    });
    if repo.is_some() && declared.is_none() {
        disagreements.push(
            "the repository has no Procfile: the process types are the API's alone".to_string(),
        );
    }
    let scaled: Vec<&Value> = formation
        .as_array()
        .map(|f| f.iter().collect())
        .unwrap_or_default();
    let mut kinds: Vec<String> = Vec::new();
    let mut add = |k: &str| {
        if !kinds.iter().any(|x| x == k) {
            kinds.push(k.to_string());
        }
    };
    for (k, _) in &released {
        add(k);
    }
    for f in &scaled {
        if let Some(k) = text(f, &["type"]) {
            add(&k);
        }
    }
    for (k, _) in declared.iter().flatten() {
        add(k);
    }
    // web first, release last, the rest as found.
    kinds.sort_by_key(|k| match k.as_str() {
        "web" => 0,
        "release" => 2,
        _ => 1,
    });
    let mut processes = Vec::new();
    for kind in &kinds {
        let mut from = Vec::new();
        let from_release = released
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, c)| c.clone());
        let from_procfile = declared
            .iter()
            .flatten()
            .find(|(k, _)| k == kind)
            .map(|(_, c)| c.clone());
        let dynos = scaled
            .iter()
            .find(|f| text(f, &["type"]).as_deref() == Some(kind.as_str()));
        let from_formation = dynos.and_then(|f| text(f, &["command"]));
        let command = from_release
            .clone()
            .or(from_formation.clone())
            .or(from_procfile.clone());
        if from_release.is_some() {
            from.push("command: API (latest release)".to_string());
        } else if from_formation.is_some() {
            from.push("command: API (formation)".to_string());
        } else if from_procfile.is_some() {
            from.push("command: Procfile".to_string());
        }
        match (&from_procfile, &command) {
            (Some(p), Some(c)) if p != c => disagreements.push(format!(
                "`{kind}`: the Procfile says `{p}`, the latest release runs `{c}` (changed since that release?)"
            )),
            (None, Some(_)) if declared.is_some() => disagreements.push(format!(
                "`{kind}`: the latest release has it, the Procfile does not (removed since that release?)"
            )),
            (Some(_), _) if !released.is_empty() && from_release.is_none() => {
                disagreements.push(format!(
                    "`{kind}`: the Procfile declares it, the latest release does not (added since that release?)"
                ))
            }
            _ => {}
        }
        let quantity = dynos
            .and_then(|f| f.get("quantity"))
            .and_then(Value::as_u64)
            .map(|q| u32::try_from(q).unwrap_or(u32::MAX));
        let size = dynos.and_then(|f| text(f, &["size"]));
        if quantity.is_some() {
            from.push("quantity and size: API (formation)".to_string());
        }
        let fargate = size.as_deref().map(sizes::for_dyno);
        if let Some(f @ (Fargate::TooLarge { .. } | Fargate::Unknown)) = &fargate {
            decisions.push(format!(
                "`{kind}` runs on {} dynos: {}",
                size.as_deref().unwrap_or("?"),
                f.describe()
            ));
        }
        let n = quantity.unwrap_or(0);
        let becomes = match kind.as_str() {
            "web" => format!("the ECS service behind the ALB, {n} task(s)"),
            "release" => "a one-off ECS task that must succeed before each deployment (in the workflow and the runbook)".to_string(),
            "clock" | "scheduler" => {
                if n > 1 {
                    decisions.push(format!(
                        "`{kind}` runs {n} dynos on Heroku: a clock runs at most 1 task (it would fire each job {n} times)"
                    ));
                }
                format!("an ECS service with no load balancer, {} task (never more than 1)", n.min(1))
            }
            _ => format!("an ECS service with no load balancer, the same image, {n} task(s)"),
        };
        processes.push(Process {
            kind: kind.clone(),
            command,
            quantity,
            size: size.clone(),
            from,
            becomes,
            fargate: fargate.map(|f| f.describe()),
        });
    }

    // app.json's formation against what Heroku runs.
    for (kind, quantity, size) in build
        .as_ref()
        .map(|b| b.declared_formation.clone())
        .unwrap_or_default()
    {
        let running = processes.iter().find(|p| p.kind == kind);
        let (q, z) = (
            running.and_then(|p| p.quantity).map(u64::from),
            running.and_then(|p| p.size.clone()),
        );
        let size_differs = match (&size, &z) {
            (Some(a), Some(b)) => !a.eq_ignore_ascii_case(b),
            _ => false,
        };
        if (quantity.is_some() && quantity != q) || size_differs {
            disagreements.push(format!(
                "`{kind}`: app.json's formation says {} × {}, Heroku runs {} × {} (the formation is what is moved)",
                quantity.map_or("?".to_string(), |n| n.to_string()),
                size.as_deref().unwrap_or("?"),
                q.map_or("none".to_string(), |n| n.to_string()),
                z.as_deref().unwrap_or("?")
            ));
        }
    }

    // Add-ons, with the config vars each attachment sets.
    let attached = |addon: &str| -> Vec<String> {
        attachments
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| text(t, &["addon", "name"]).as_deref() == Some(addon))
            .filter_map(|t| text(t, &["name"]))
            .collect()
    };
    let mut out_addons = Vec::new();
    for addon in addons.as_array().into_iter().flatten() {
        let name = text(addon, &["name"]).unwrap_or_default();
        let service = text(addon, &["addon_service", "name"]).unwrap_or_default();
        let plan = text(addon, &["plan", "name"]).unwrap_or_default();
        let config_vars: Vec<String> = addon
            .get("config_vars")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let attachments = attached(&name);
        let becomes = match service.as_str() {
            "heroku-postgresql" if attachments.iter().any(|a| a == "DATABASE") => {
                "RDS for PostgreSQL, with the database move (the primary: DATABASE_URL)".to_string()
            }
            "heroku-postgresql" => {
                decisions.push(format!(
                    "{name} ({plan}, {}) is a Heroku Postgres database that is not the primary: the runbook moves only DATABASE",
                    attachments.join(", ")
                ));
                "not moved: a second Heroku Postgres (a decision for you)".to_string()
            }
            "heroku-redis" | "heroku-key-value-store" => "ElastiCache for Redis (TLS); its data is not moved — the runbook drains the queues before the freeze".to_string(),
            "scheduler" => "EventBridge Scheduler schedules running ECS tasks, one per job of scheduler.toml (Scheduler has no API: you copy its jobs there)".to_string(),
            _ => {
                decisions.push(format!(
                    "{name} ({plan}) stays on Heroku's marketplace: its config vars ({}) are carried to SSM as they are; keep it, replace it, or drop it",
                    config_vars.join(", ")
                ));
                "kept as it is: its config vars carried to SSM (a decision for you)".to_string()
            }
        };
        out_addons.push(Addon {
            monthly_usd: monthly(addon.get("billed_price")),
            name,
            service,
            plan,
            config_vars,
            attachments,
            becomes,
        });
    }

    // Custom domains: the records and certificates to make, each cut over.
    let mut out_domains = Vec::new();
    for d in domains.as_array().into_iter().flatten() {
        if text(d, &["kind"]).as_deref() != Some("custom") {
            continue;
        }
        let hostname = text(d, &["hostname"]).unwrap_or_default();
        out_domains.push(Domain {
            becomes: format!("a Route 53 record and an ACM certificate for {hostname}, pointed at the ALB by the cutover"),
            certificate: text(d, &["acm_status"]),
            hostname,
        });
    }

    Ok(Shape {
        app: text(&info, &["name"]).unwrap_or_else(|| app.to_string()),
        region: text(&info, &["region", "name"]),
        stack: text(&info, &["build_stack", "name"]).or_else(|| text(&info, &["stack", "name"])),
        buildpacks: buildpack_names,
        processes,
        config_vars,
        addons: out_addons,
        domains: out_domains,
        build,
        disagreements,
        decisions,
        dyno_prices,
    })
}

impl Shape {
    /// The Heroku Postgres attached as DATABASE: the one the runbook moves.
    pub fn primary_postgres(&self) -> Option<&Addon> {
        self.addons.iter().find(|a| {
            a.service == "heroku-postgresql" && a.attachments.iter().any(|x| x == "DATABASE")
        })
    }

    /// The shape in words, for the terminal.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} ({}, region {}; buildpacks: {})  [API]\n",
            self.app,
            self.stack.as_deref().unwrap_or("stack unknown"),
            self.region.as_deref().unwrap_or("unknown"),
            if self.buildpacks.is_empty() {
                "none".to_string()
            } else {
                self.buildpacks.join(", ")
            }
        );
        out.push_str("\nprocesses:\n");
        for p in &self.processes {
            let scale = match (p.quantity, &p.size) {
                (Some(q), Some(s)) => format!("{q} × {s}"),
                _ => "not scaled".to_string(),
            };
            out.push_str(&format!(
                "  {:<10} {scale} → {}{}\n             `{}`  [{}]\n",
                p.kind,
                p.becomes,
                p.fargate
                    .as_deref()
                    .map(|f| format!(", {f}"))
                    .unwrap_or_default(),
                p.command.as_deref().unwrap_or("?"),
                p.from.join("; ")
            ));
        }
        out.push_str("\nadd-ons:\n");
        for a in &self.addons {
            out.push_str(&format!(
                "  {} ({}; sets {}) → {}  [API]\n",
                a.name,
                a.plan,
                if a.config_vars.is_empty() {
                    "no config var".to_string()
                } else {
                    a.config_vars.join(", ")
                },
                a.becomes
            ));
        }
        out.push_str("\ndomains:\n");
        for d in &self.domains {
            out.push_str(&format!(
                "  {} (certificate: {}) → {}  [API]\n",
                d.hostname,
                d.certificate.as_deref().unwrap_or("none"),
                d.becomes
            ));
        }
        if let Some(b) = &self.build {
            out.push_str("\nbuild:\n");
            for f in &b.facts {
                out.push_str(&format!("  {}: {}  [{}]\n", f.what, f.value, f.from));
            }
            out.push_str(&format!(
                "  architecture: {} — {}\n",
                b.architecture.0, b.architecture.1
            ));
        }
        out.push_str(&format!(
            "\nconfig vars (names only, {}): {}  [API]\n",
            self.config_vars.len(),
            self.config_vars.join(", ")
        ));
        if !self.disagreements.is_empty() {
            out.push_str("\nwhere the sources disagree:\n");
            for d in &self.disagreements {
                out.push_str(&format!("  - {d}\n"));
            }
        }
        if !self.decisions.is_empty() {
            out.push_str("\ndecisions for you:\n");
            for d in &self.decisions {
                out.push_str(&format!("  - {d}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_procfile_is_read_as_types_and_commands() {
        let text = "# the app\nweb: bundle exec puma -C config/puma.rb\n\nworker: bundle exec sidekiq\nrelease: bin/rails db:migrate\nnot a line\n";
        assert_eq!(
            procfile(text),
            [
                (
                    "web".to_string(),
                    "bundle exec puma -C config/puma.rb".to_string()
                ),
                ("worker".to_string(), "bundle exec sidekiq".to_string()),
                ("release".to_string(), "bin/rails db:migrate".to_string()),
            ]
        );
    }
}
