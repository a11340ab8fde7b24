//! What the target costs a month, line by line, against today's Heroku bill.

pub mod live;
mod prices;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use prices::{known_regions, Price, PriceSource, PriceTable};

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("no price table for region `{region}` (known: {known})")]
    UnknownRegion { region: String, known: String },
    #[error("unknown RDS instance class `{class}` (known: {known})")]
    UnknownInstanceClass { class: String, known: String },
    #[error("unknown architecture `{0}` (known: arm64, x86_64)")]
    UnknownArchitecture(String),
    #[error("unknown Heroku {kind} `{name}` (known: {known})")]
    UnknownHerokuPlan {
        kind: &'static str,
        name: String,
        known: String,
    },
    #[error("bad price table {0}")]
    BadTable(String),
}

/// The `[cost]` section of a runbook: the target and today's Heroku plans.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CostSpec {
    pub region: String,
    /// The monthly figure the plan states (the gengar plan says about $45).
    pub expected_monthly: Option<f64>,
    #[serde(default)]
    pub aws: AwsSpec,
    pub heroku: Option<HerokuSpec>,
}

/// The AWS target, as the Terraform will create it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSpec {
    pub tasks: u32,
    pub vcpu: f64,
    pub memory_gb: f64,
    /// `arm64` or `x86_64`.
    pub architecture: String,
    pub spot: bool,
    /// Tasks in public subnets with assignPublicIp: each holds a public IPv4 address.
    pub task_public_ip: bool,
    pub rds_class: String,
    pub rds_storage_gb: f64,
    pub multi_az: bool,
    pub albs: u32,
    /// An ALB holds a public IPv4 address in each of its AZs.
    pub alb_azs: u32,
    pub alb_lcus: f64,
    pub nat_gateways: u32,
    pub nat_gb: f64,
    /// Log data ingested a month (with 30-day retention, about as much is stored).
    pub log_gb: f64,
    pub ecr_gb: f64,
    pub ssm_advanced: u32,
    pub secrets: u32,
    pub route53_zones: u32,
    /// The app's other processes (Heroku's worker, clock, …), each an ECS service of its own.
    pub services: Vec<ServiceSpec>,
    /// The ElastiCache node replacing Heroku Redis (`cache.t4g.micro`), if any.
    pub cache_node: Option<String>,
}

/// An ECS service other than the web one: its tasks and their size.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub tasks: u32,
    pub vcpu: f64,
    pub memory_gb: f64,
}

impl Default for AwsSpec {
    fn default() -> Self {
        AwsSpec {
            tasks: 1,
            vcpu: 0.5,
            memory_gb: 1.0,
            architecture: "arm64".into(),
            spot: false,
            task_public_ip: true,
            rds_class: "db.t4g.micro".into(),
            rds_storage_gb: 20.0,
            multi_az: false,
            albs: 1,
            alb_azs: 2,
            alb_lcus: 1.0,
            nat_gateways: 0,
            nat_gb: 0.0,
            log_gb: 0.0,
            ecr_gb: 0.0,
            ssm_advanced: 0,
            secrets: 0,
            route53_zones: 0,
            services: Vec::new(),
            cache_node: None,
        }
    }
}

impl AwsSpec {
    /// Every task: the web service's and the other services'.
    pub fn all_tasks(&self) -> u32 {
        self.tasks + self.services.iter().map(|s| s.tasks).sum::<u32>()
    }

    /// Tasks with public IPs plus the ALBs' AZs.
    pub fn public_ipv4(&self) -> u32 {
        (if self.task_public_ip {
            self.all_tasks()
        } else {
            0
        }) + self.albs * self.alb_azs
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HerokuSpec {
    /// Dyno type → count.
    #[serde(default)]
    pub dynos: BTreeMap<String, u32>,
    pub postgres: Option<String>,
    /// Monthly price of a dyno type the bundled table lacks (`cutover init` reads it from
    /// Heroku's API).
    #[serde(default)]
    pub dyno_prices: BTreeMap<String, f64>,
    /// Add-on plan → its monthly price as Heroku bills it (the API's `billed_price`).
    #[serde(default)]
    pub addons: BTreeMap<String, f64>,
}

/// The line items a step may say it starts billing (`starts_billing = [...]`).
pub const LINE_ITEMS: &[&str] = &[
    "fargate",
    "rds_instance",
    "rds_storage",
    "alb",
    "alb_lcu",
    "ecr",
    "logs_ingestion",
    "logs_storage",
    "nat_gateway",
    "nat_data",
    "public_ipv4",
    "ssm_advanced",
    "secrets_manager",
    "route53",
    "elasticache",
];

/// One line of the bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineItem {
    pub id: &'static str,
    pub label: String,
    /// The arithmetic, e.g. "1 × (0.5 vCPU × $0.03238 + 1 GB × $0.00356) × 730 h".
    pub detail: String,
    /// `None` when a price is missing: the total is then incomplete, never silently low.
    pub monthly: Option<f64>,
}

/// A monthly estimate of both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub region: String,
    pub source: PriceSource,
    pub items: Vec<LineItem>,
    pub total: f64,
    /// False when some line has no price.
    pub complete: bool,
    pub heroku: Vec<LineItem>,
    pub heroku_total: f64,
    /// AWS minus Heroku (negative: AWS is cheaper).
    pub difference: f64,
    pub expected_monthly: Option<f64>,
    pub lints: Vec<Lint>,
}

impl Estimate {
    /// What the given line items add up to, e.g. for "this step starts about $13.98/month".
    pub fn monthly_of(&self, ids: &[String]) -> Option<f64> {
        let mut sum = 0.0;
        let mut any = false;
        for item in self
            .items
            .iter()
            .filter(|i| ids.iter().any(|id| id == i.id))
        {
            sum += item.monthly?;
            any = true;
        }
        any.then_some(sum)
    }
}

/// A warning about the plan's own figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lint {
    pub id: &'static str,
    pub message: String,
    /// What this factor changes the monthly figure by.
    pub monthly_delta: f64,
}

pub fn usd(amount: f64) -> String {
    if amount < 0.0 {
        format!("-${:.2}", -amount)
    } else {
        format!("${amount:.2}")
    }
}

fn known_classes(prices: &PriceTable) -> String {
    prices
        .prices
        .keys()
        .filter_map(|k| k.strip_prefix("rds_").and_then(|k| k.strip_suffix("_hour")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds line items from prices; a missing price makes the line unknown, not zero.
struct Bill<'a> {
    prices: &'a PriceTable,
    items: Vec<LineItem>,
}

impl Bill<'_> {
    fn add(
        &mut self,
        id: &'static str,
        label: String,
        parts: &[(&str, f64)],
        quantity: f64,
        describe: &dyn Fn(&[f64]) -> String,
    ) {
        let found: Option<Vec<f64>> = parts
            .iter()
            .map(|(price, _)| self.prices.usd(price))
            .collect();
        let monthly = found.as_ref().map(|values| {
            values
                .iter()
                .zip(parts)
                .map(|(v, (_, q))| v * q)
                .sum::<f64>()
                * quantity
        });
        let detail = match &found {
            Some(values) => describe(values),
            None => {
                let missing: Vec<&str> = parts
                    .iter()
                    .filter(|(p, _)| self.prices.usd(p).is_none())
                    .map(|(p, _)| *p)
                    .collect();
                format!(
                    "no price for {} in the {} table",
                    missing.join(", "),
                    self.prices.region
                )
            }
        };
        self.items.push(LineItem {
            id,
            label,
            detail,
            monthly,
        });
    }
}

/// The monthly estimate of a `[cost]` section with a price table.
pub fn estimate(
    spec: &CostSpec,
    prices: &PriceTable,
    source: PriceSource,
) -> Result<Estimate, CostError> {
    let aws = &spec.aws;
    let hours = prices.hours_per_month;
    let arch = match aws.architecture.as_str() {
        "arm64" | "aarch64" | "ARM64" => "arm",
        "x86_64" | "x86" | "amd64" | "X86_64" => "x86",
        other => return Err(CostError::UnknownArchitecture(other.to_string())),
    };
    let suffix = if aws.multi_az { "_multi_az" } else { "" };
    let class_price = format!("rds_{}_hour{suffix}", aws.rds_class);
    // A name that is no RDS class is a typo: refused. A class the table has no price for is
    // an unknown line (the total incomplete), never zero.
    let looks_like_a_class =
        aws.rds_class.starts_with("db.") && aws.rds_class.matches('.').count() == 2;
    if !looks_like_a_class {
        return Err(CostError::UnknownInstanceClass {
            class: aws.rds_class.clone(),
            known: known_classes(prices),
        });
    }
    let mut bill = Bill {
        prices,
        items: Vec::new(),
    };
    if aws.tasks > 0 {
        let (vcpu, gb) = (
            format!("fargate_{arch}_vcpu_hour"),
            format!("fargate_{arch}_gb_hour"),
        );
        let spot = &prices.fargate_spot;
        // Spot varies: the figure takes the smallest discount, the detail gives the range.
        let factor = if aws.spot {
            1.0 - spot.discount_min
        } else {
            1.0
        };
        let (tasks, v, m) = (aws.tasks, aws.vcpu, aws.memory_gb);
        bill.add(
            "fargate",
            format!(
                "Fargate {} ({}){}",
                if arch == "arm" { "ARM64" } else { "x86_64" },
                plural(tasks, "task"),
                if aws.spot { ", Spot" } else { "" }
            ),
            &[(&vcpu, v * hours * factor), (&gb, m * hours * factor)],
            f64::from(tasks),
            &|p| {
                let mut d = format!(
                    "{tasks} × ({v} vCPU × ${} + {m} GB × ${}) × {hours} h",
                    p[0], p[1]
                );
                if aws.spot {
                    d.push_str(&format!(
                        " × {:.2} (Spot saves {:.0}–{:.0}%)",
                        factor,
                        spot.discount_min * 100.0,
                        spot.discount_max * 100.0
                    ));
                }
                d
            },
        );
    }
    for service in &aws.services {
        if service.tasks == 0 {
            continue;
        }
        let (vcpu, gb) = (
            format!("fargate_{arch}_vcpu_hour"),
            format!("fargate_{arch}_gb_hour"),
        );
        let (tasks, v, m) = (service.tasks, service.vcpu, service.memory_gb);
        bill.add(
            "fargate",
            format!(
                "Fargate {} `{}` ({})",
                if arch == "arm" { "ARM64" } else { "x86_64" },
                service.name,
                plural(tasks, "task")
            ),
            &[(&vcpu, v * hours), (&gb, m * hours)],
            f64::from(tasks),
            &|p| {
                format!(
                    "{tasks} × ({v} vCPU × ${} + {m} GB × ${}) × {hours} h",
                    p[0], p[1]
                )
            },
        );
    }
    if let Some(node) = &aws.cache_node {
        let price = format!("elasticache_{node}_hour");
        bill.add(
            "elasticache",
            format!("ElastiCache for Redis {node}"),
            &[(&price, hours)],
            1.0,
            &|p| format!("1 node × ${} × {hours} h", p[0]),
        );
    }
    bill.add(
        "rds_instance",
        format!(
            "RDS PostgreSQL {}{}",
            aws.rds_class,
            if aws.multi_az { " Multi-AZ" } else { "" }
        ),
        &[(&class_price, hours)],
        1.0,
        &|p| format!("${} × {hours} h", p[0]),
    );
    let storage = format!("rds_gp3_gb_month{suffix}");
    bill.add(
        "rds_storage",
        "RDS gp3 storage".into(),
        &[(&storage, aws.rds_storage_gb)],
        1.0,
        &|p| format!("{} GB × ${}", aws.rds_storage_gb, p[0]),
    );
    if aws.albs > 0 {
        let albs = f64::from(aws.albs);
        bill.add(
            "alb",
            format!("Application Load Balancer ({})", plural(aws.albs, "ALB")),
            &[("alb_hour", hours)],
            albs,
            &|p| format!("{} × ${} × {hours} h", aws.albs, p[0]),
        );
        bill.add(
            "alb_lcu",
            "ALB capacity units".into(),
            &[("alb_lcu_hour", aws.alb_lcus * hours)],
            albs,
            &|p| format!("{} LCU × ${} × {hours} h", aws.alb_lcus, p[0]),
        );
    }
    let ipv4 = aws.public_ipv4();
    if ipv4 > 0 {
        bill.add(
            "public_ipv4",
            format!("Public IPv4 ({})", plural(ipv4, "address")),
            &[("public_ipv4_hour", hours)],
            f64::from(ipv4),
            &|p| {
                let tasks = if aws.task_public_ip {
                    aws.all_tasks()
                } else {
                    0
                };
                format!(
                    "({tasks} task + {} ALB × {} AZ) × ${} × {hours} h",
                    aws.albs, aws.alb_azs, p[0]
                )
            },
        );
    }
    if aws.nat_gateways > 0 {
        bill.add(
            "nat_gateway",
            format!("NAT gateway ({})", plural(aws.nat_gateways, "gateway")),
            &[("nat_gateway_hour", hours)],
            f64::from(aws.nat_gateways),
            &|p| format!("{} × ${} × {hours} h", aws.nat_gateways, p[0]),
        );
        bill.add(
            "nat_data",
            "NAT data processed".into(),
            &[("nat_gateway_gb", aws.nat_gb)],
            1.0,
            &|p| format!("{} GB × ${}", aws.nat_gb, p[0]),
        );
    }
    if aws.ecr_gb > 0.0 {
        bill.add(
            "ecr",
            "ECR storage".into(),
            &[("ecr_gb_month", aws.ecr_gb)],
            1.0,
            &|p| format!("{} GB × ${}", aws.ecr_gb, p[0]),
        );
    }
    if aws.log_gb > 0.0 {
        let free = prices.free_tier.logs_gb;
        let billable = (aws.log_gb - free).max(0.0);
        bill.add(
            "logs_ingestion",
            "CloudWatch Logs ingestion".into(),
            &[("logs_ingestion_gb", billable)],
            1.0,
            &|p| format!("({} GB − {free} GB free) × ${}", aws.log_gb, p[0]),
        );
        bill.add(
            "logs_storage",
            "CloudWatch Logs storage (30 days)".into(),
            &[("logs_storage_gb_month", billable)],
            1.0,
            &|p| format!("({} GB − {free} GB free) × ${}", aws.log_gb, p[0]),
        );
    }
    // Things billed per unit a month.
    for (id, label, price, count) in [
        (
            "ssm_advanced",
            "SSM advanced parameters",
            "ssm_advanced_parameter_month",
            aws.ssm_advanced,
        ),
        (
            "secrets_manager",
            "Secrets Manager",
            "secrets_manager_secret_month",
            aws.secrets,
        ),
        (
            "route53",
            "Route 53 hosted zones",
            "route53_zone_month",
            aws.route53_zones,
        ),
    ] {
        if count > 0 {
            bill.add(id, label.into(), &[(price, f64::from(count))], 1.0, &|p| {
                format!("{count} × ${}", p[0])
            });
        }
    }
    let items = bill.items;
    let total = items.iter().filter_map(|i| i.monthly).sum::<f64>();
    let complete = items.iter().all(|i| i.monthly.is_some());
    let heroku = heroku_items(spec.heroku.as_ref(), prices)?;
    let heroku_total = heroku.iter().filter_map(|i| i.monthly).sum::<f64>();
    let mut estimate = Estimate {
        region: prices.region.clone(),
        source,
        items,
        total,
        complete,
        heroku,
        heroku_total,
        difference: total - heroku_total,
        expected_monthly: spec.expected_monthly,
        lints: Vec::new(),
    };
    estimate.lints = lints(spec, &estimate, prices);
    Ok(estimate)
}

/// The estimate with the best prices at hand without a network call: fresh cached live prices,
/// else the bundled table.
pub fn offline_estimate(
    spec: &CostSpec,
    cache_path: &std::path::Path,
) -> Result<Estimate, CostError> {
    let (table, source) = match live::cached(&spec.region, cache_path) {
        Some(found) => found,
        None => {
            let table = PriceTable::bundled(&spec.region)?;
            let read_on = table.read_on();
            (table, PriceSource::Bundled { read_on })
        }
    };
    estimate(spec, &table, source)
}

/// The estimate as a text report: line items with their arithmetic, totals, the Heroku
/// comparison with a bar for each side, and the lints.
pub fn report(e: &Estimate) -> String {
    let mut out = format!(
        "Monthly estimate — {} — prices: {}\n\n",
        e.region,
        e.source.describe()
    );
    let width = e
        .items
        .iter()
        .chain(&e.heroku)
        .map(|i| i.label.chars().count())
        .max()
        .unwrap_or(10)
        .max(12);
    let amount = |m: Option<f64>| m.map_or_else(|| "unknown".to_string(), usd);
    for item in &e.items {
        out.push_str(&format!(
            "  {:<width$}  {:>10}   {}\n",
            item.label,
            amount(item.monthly),
            item.detail
        ));
    }
    out.push_str(&format!(
        "  {:<width$}  {:>10}{}\n",
        "AWS total",
        usd(e.total),
        if e.complete {
            ""
        } else {
            "   (incomplete: some prices are unknown)"
        }
    ));
    if let Some(expected) = e.expected_monthly {
        out.push_str(&format!(
            "  {:<width$}  {:>10}\n",
            "the runbook states",
            usd(expected)
        ));
    }
    if !e.heroku.is_empty() {
        out.push('\n');
        for item in &e.heroku {
            out.push_str(&format!(
                "  {:<width$}  {:>10}   {}\n",
                item.label,
                amount(item.monthly),
                item.detail
            ));
        }
        out.push_str(&format!(
            "  {:<width$}  {:>10}\n\n",
            "Heroku total",
            usd(e.heroku_total)
        ));
        let most = e.total.max(e.heroku_total).max(1.0);
        for (label, value) in [("AWS", e.total), ("Heroku", e.heroku_total)] {
            let cells = ((value / most) * 40.0).round() as usize;
            out.push_str(&format!(
                "  {label:<7}{:<40} {}\n",
                "█".repeat(cells),
                usd(value)
            ));
        }
        out.push_str(&format!(
            "\n  AWS is {} a month {} than Heroku today\n",
            usd(e.difference.abs()),
            if e.difference <= 0.0 {
                "cheaper"
            } else {
                "dearer"
            }
        ));
    }
    if !e.lints.is_empty() {
        out.push_str("\nwarnings:\n");
        for lint in &e.lints {
            out.push_str(&format!("  ! {}\n", lint.message));
        }
    }
    out
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else if word.ends_with("ss") {
        format!("{n} {word}es")
    } else {
        format!("{n} {word}s")
    }
}

fn heroku_items(
    spec: Option<&HerokuSpec>,
    prices: &PriceTable,
) -> Result<Vec<LineItem>, CostError> {
    let mut items = Vec::new();
    let Some(spec) = spec else {
        return Ok(items);
    };
    let known = |map: &BTreeMap<String, f64>| map.keys().cloned().collect::<Vec<_>>().join(", ");
    for (dyno, count) in &spec.dynos {
        let Some(price) = spec
            .dyno_prices
            .get(dyno)
            .or_else(|| prices.heroku.dynos.get(dyno))
        else {
            return Err(CostError::UnknownHerokuPlan {
                kind: "dyno type",
                name: dyno.clone(),
                known: known(&prices.heroku.dynos),
            });
        };
        items.push(LineItem {
            id: "heroku_dyno",
            label: format!("Heroku {dyno} dyno × {count}"),
            detail: format!("{count} × ${price}"),
            monthly: Some(price * f64::from(*count)),
        });
    }
    if let Some(plan) = &spec.postgres {
        let Some(price) = prices.heroku.postgres.get(plan) else {
            return Err(CostError::UnknownHerokuPlan {
                kind: "Postgres plan",
                name: plan.clone(),
                known: known(&prices.heroku.postgres),
            });
        };
        items.push(LineItem {
            id: "heroku_postgres",
            label: format!("Heroku Postgres {plan}"),
            detail: format!("${price}"),
            monthly: Some(*price),
        });
    }
    for (plan, price) in &spec.addons {
        items.push(LineItem {
            id: "heroku_addon",
            label: format!("Heroku add-on {plan}"),
            detail: format!("${price} (as Heroku bills it)"),
            monthly: Some(*price),
        });
    }
    Ok(items)
}

/// Warnings where a choice of the plan moves its own figure.
fn lints(spec: &CostSpec, estimate: &Estimate, prices: &PriceTable) -> Vec<Lint> {
    let aws = &spec.aws;
    let item = |id: &str| {
        estimate
            .items
            .iter()
            .filter(|i| i.id == id)
            .filter_map(|i| i.monthly)
            .sum::<f64>()
    };
    let stated = |delta: f64| match spec.expected_monthly {
        Some(expected) => format!(
            "; the runbook states {} a month and the estimate is {} ({} from it)",
            usd(expected),
            usd(estimate.total),
            signed(estimate.total - expected)
        ),
        None => format!(" ({} a month)", signed(delta)),
    };
    let mut out = Vec::new();
    let ipv4 = item("public_ipv4");
    if ipv4 > 0.0 {
        out.push(Lint {
            id: "public_ipv4",
            message: format!(
                "{} public IPv4 addresses ({} task{} with a public IP, the ALB in {} AZs) are billed at ${}/h each since February 2024: {} a month{}",
                aws.public_ipv4(),
                if aws.task_public_ip { aws.all_tasks() } else { 0 },
                if aws.all_tasks() == 1 { "" } else { "s" },
                aws.alb_azs * aws.albs,
                prices.usd("public_ipv4_hour").unwrap_or_default(),
                usd(ipv4),
                stated(ipv4)
            ),
            monthly_delta: ipv4,
        });
    }
    let nat = item("nat_gateway") + item("nat_data");
    if aws.nat_gateways > 0 {
        out.push(Lint {
            id: "nat_gateway",
            message: format!(
                "{} NAT gateway(s) add {} a month the plan avoids by using public subnets{}",
                aws.nat_gateways,
                usd(nat),
                stated(nat)
            ),
            monthly_delta: nat,
        });
    }
    if aws.multi_az {
        // What single-AZ would cost, priced the same way.
        let single = prices
            .usd(&format!("rds_{}_hour", aws.rds_class))
            .unwrap_or_default()
            * prices.hours_per_month
            + prices.usd("rds_gp3_gb_month").unwrap_or_default() * aws.rds_storage_gb;
        let delta = item("rds_instance") + item("rds_storage") - single;
        out.push(Lint {
            id: "multi_az",
            message: format!("Multi-AZ RDS doubles the instance and its storage: {} a month more than single-AZ{}", usd(delta), stated(delta)),
            monthly_delta: delta,
        });
    }
    if aws.spot {
        let spot = &prices.fargate_spot;
        let on_demand = item("fargate") / (1.0 - spot.discount_min);
        let (least, most) = (on_demand * spot.discount_min, on_demand * spot.discount_max);
        out.push(Lint {
            id: "fargate_spot",
            message: format!(
                "Fargate Spot saves {} to {} a month on tasks ({:.0}–{:.0}%, varying), and a task can be stopped at two minutes' notice{}",
                usd(least),
                usd(most),
                spot.discount_min * 100.0,
                spot.discount_max * 100.0,
                stated(-least)
            ),
            monthly_delta: -least,
        });
    }
    out
}

fn signed(amount: f64) -> String {
    if amount >= 0.0 {
        format!("+{}", usd(amount))
    } else {
        usd(amount)
    }
}

#[cfg(test)]
mod tests;
