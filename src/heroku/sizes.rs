//! Heroku dyno sizes and the Fargate task size each becomes: by memory first, never less than
//! the dyno's; the smallest CPU that offers that memory. A dyno larger than Fargate's largest
//! task is named, never rounded down.

/// A Heroku dyno size: its name as the API spells it (case-insensitive), its memory in MiB.
pub const DYNOS: &[(&str, u32)] = &[
    ("eco", 512),
    ("basic", 512),
    ("standard-1x", 512),
    ("standard-2x", 1024),
    ("performance-m", 2560),
    ("performance-l", 14336),
    ("performance-l-ram", 30720),
    ("performance-xl", 63488),
    ("performance-2xl", 129024),
    ("private-s", 1024),
    ("private-m", 2560),
    ("private-l", 14336),
    ("shield-s", 1024),
    ("shield-m", 2560),
    ("shield-l", 14336),
];

/// Fargate's task sizes: CPU units, and the memory (MiB) each allows: from, to, step.
const FARGATE: &[(u32, u32, u32, u32)] = &[
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// An add-on plan's own name, lower case: `heroku-redis:premium-0` → `premium-0`.
pub fn plan_name(plan: &str) -> String {
    plan.rsplit(':')
        .next()
        .unwrap_or(plan)
        .trim()
        .to_ascii_lowercase()
}

/// Heroku Redis and Key-Value Store plans: their memory (MiB).
const REDIS_PLANS: &[(&str, u32)] = &[
    ("mini", 25),
    ("premium-0", 50),
    ("premium-1", 100),
    ("premium-2", 250),
    ("premium-3", 500),
    ("premium-5", 1024),
    ("premium-7", 7168),
    ("premium-9", 10240),
    ("premium-10", 25600),
    ("premium-12", 51200),
    ("premium-14", 102400),
    ("private-7", 7168),
    ("private-10", 25600),
    ("private-12", 51200),
    ("private-14", 102400),
];

/// ElastiCache (Graviton) node types and their memory (MiB), smallest first.
const CACHE_NODES: &[(&str, u32)] = &[
    ("cache.t4g.micro", 512),
    ("cache.t4g.small", 1403),
    ("cache.t4g.medium", 3164),
    ("cache.m7g.large", 6533),
    ("cache.r7g.large", 13384),
    ("cache.r7g.xlarge", 26952),
    ("cache.r7g.2xlarge", 54088),
    ("cache.r7g.4xlarge", 108349),
];

/// The smallest ElastiCache node with at least the memory of a Heroku Redis plan
/// (`heroku-redis:premium-0` or `premium-0`): the node and the plan's memory, or why not.
pub fn redis_node(plan: &str) -> Result<(&'static str, u32), String> {
    let name = plan_name(plan);
    let memory = REDIS_PLANS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
        .ok_or_else(|| format!("Heroku Redis plan {plan:?} is not in cutover's table: choose the ElastiCache node type"))?;
    CACHE_NODES
        .iter()
        .find(|(_, m)| *m >= memory)
        .map(|(n, _)| (*n, memory))
        .ok_or_else(|| format!("{plan} ({memory} MiB) is larger than the largest node in cutover's table: choose one"))
}

/// Heroku Postgres plan tiers: memory (GB; 0 for the shared essential plans) and the storage
/// cap (GB). Premium, private and shield plans have the standard ones' sizes and a standby.
const POSTGRES_TIERS: &[(&str, u32, u32)] = &[
    ("essential-0", 0, 1),
    ("essential-1", 0, 10),
    ("essential-2", 0, 32),
    ("0", 4, 64),
    ("2", 8, 256),
    ("3", 15, 512),
    ("4", 30, 768),
    ("5", 61, 1024),
    ("6", 122, 1536),
    ("7", 244, 2048),
    ("8", 488, 3072),
    ("9", 768, 4096),
];

/// RDS classes (Graviton) and their memory (GB), smallest first.
const RDS_CLASSES: &[(&str, u32)] = &[
    ("db.t4g.micro", 1),
    ("db.t4g.medium", 4),
    ("db.t4g.large", 8),
    ("db.t4g.xlarge", 16),
    ("db.t4g.2xlarge", 32),
    ("db.r7g.2xlarge", 64),
    ("db.r7g.4xlarge", 128),
    ("db.r7g.8xlarge", 256),
    ("db.r7g.16xlarge", 512),
];

/// What a Heroku Postgres plan becomes on RDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rds {
    /// The smallest class with at least the plan's memory.
    pub class: &'static str,
    /// The plan's storage cap: RDS's storage autoscaling ceiling.
    pub max_storage_gb: u32,
    /// A standby in a second AZ (premium, private and shield plans keep one).
    pub multi_az: bool,
}

/// The RDS instance for a Heroku Postgres plan (`heroku-postgresql:standard-2`), or why none.
pub fn rds_for_postgres(plan: &str) -> Result<Rds, String> {
    let name = plan_name(plan);
    let (tier, ha) = if name.starts_with("essential-") {
        (name.as_str(), false)
    } else {
        match name.split_once('-') {
            Some(("standard", n)) => (n, false),
            Some(("premium" | "private" | "shield", n)) => (n, true),
            _ => return Err(format!("Heroku Postgres plan {plan:?} is not in cutover's table: choose the RDS class (db_instance_class)")),
        }
    };
    let (_, memory, storage) = POSTGRES_TIERS
        .iter()
        .find(|(t, _, _)| *t == tier)
        .ok_or_else(|| format!("Heroku Postgres plan {plan:?} is not in cutover's table: choose the RDS class (db_instance_class)"))?;
    let class = RDS_CLASSES
        .iter()
        .find(|(_, m)| m >= memory)
        .map(|(c, _)| *c)
        .ok_or_else(|| format!("{plan} ({memory} GB) is larger than the largest RDS class in cutover's table: choose one"))?;
    Ok(Rds {
        class,
        max_storage_gb: *storage,
        multi_az: ha,
    })
}

/// What a dyno size becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fargate {
    /// CPU units (1024 = 1 vCPU) and memory (MiB).
    Task { cpu: u32, memory: u32 },
    /// No Fargate task has that much memory: named, with Fargate's largest.
    TooLarge { memory: u32, largest: u32 },
    /// A size this table does not know.
    Unknown,
}

/// The dyno's memory (MiB), by its name.
pub fn dyno_memory(size: &str) -> Option<u32> {
    let size = size.trim().to_ascii_lowercase();
    DYNOS.iter().find(|(n, _)| *n == size).map(|(_, m)| *m)
}

/// The smallest Fargate task with at least `memory` MiB (its CPU the smallest that allows it).
pub fn for_memory(memory: u32) -> Fargate {
    let largest = FARGATE.iter().map(|f| f.2).max().unwrap_or(0);
    for &(cpu, from, to, step) in FARGATE {
        if memory <= to {
            let mut m = from;
            while m < memory {
                m += step;
            }
            return Fargate::Task { cpu, memory: m };
        }
    }
    Fargate::TooLarge { memory, largest }
}

/// What a dyno size becomes on Fargate.
pub fn for_dyno(size: &str) -> Fargate {
    match dyno_memory(size) {
        Some(memory) => for_memory(memory),
        None => Fargate::Unknown,
    }
}

impl Fargate {
    pub fn describe(&self) -> String {
        match self {
            Fargate::Task { cpu, memory } => format!(
                "{} vCPU / {} GiB",
                trim(*cpu as f64 / 1024.0),
                trim(*memory as f64 / 1024.0)
            ),
            Fargate::TooLarge { memory, largest } => format!(
                "none: {} GiB is more than Fargate's largest task ({} GiB) — not rounded down; a decision for you",
                trim(*memory as f64 / 1024.0),
                trim(*largest as f64 / 1024.0)
            ),
            Fargate::Unknown => "a size this table does not know: a decision for you".to_string(),
        }
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_plan_becomes_the_smallest_class_with_its_memory_and_its_storage_cap() {
        let rds = |p: &str| rds_for_postgres(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rds("heroku-postgresql:standard-0"),
            Rds {
                class: "db.t4g.medium",
                max_storage_gb: 64,
                multi_az: false
            }
        );
        assert_eq!(rds("standard-2").class, "db.t4g.large");
        assert_eq!(rds("standard-3").class, "db.t4g.xlarge");
        assert_eq!(
            rds("premium-5"),
            Rds {
                class: "db.r7g.2xlarge",
                max_storage_gb: 1024,
                multi_az: true
            }
        );
        assert_eq!(rds("essential-0").class, "db.t4g.micro");
        assert!(rds_for_postgres("heroku-postgresql:hobby-dev").is_err());
    }

    #[test]
    fn a_redis_plan_becomes_the_smallest_node_with_at_least_its_memory() {
        assert_eq!(redis_node("heroku-redis:mini"), Ok(("cache.t4g.micro", 25)));
        assert_eq!(redis_node("premium-5"), Ok(("cache.t4g.small", 1024)));
        assert_eq!(redis_node("premium-7"), Ok(("cache.r7g.large", 7168)));
        assert_eq!(
            redis_node("heroku-redis:premium-14"),
            Ok(("cache.r7g.4xlarge", 102400))
        );
        assert!(redis_node("heroku-redis:premium-99").is_err());
    }

    #[test]
    fn each_dyno_gets_at_least_its_memory_on_the_smallest_cpu_that_offers_it() {
        let task = |size: &str| match for_dyno(size) {
            Fargate::Task { cpu, memory } => (cpu, memory),
            other => panic!("{size}: {other:?}"),
        };
        assert_eq!(task("Standard-1X"), (256, 512));
        assert_eq!(task("standard-2x"), (256, 1024));
        // 2.5 GB: more than 0.25 vCPU offers (2 GiB).
        assert_eq!(task("Performance-M"), (512, 3072));
        assert_eq!(task("Performance-L"), (2048, 14336));
        assert_eq!(task("Performance-L-RAM"), (4096, 30720));
        // 62 GB: more than 8 vCPU offers (60 GiB).
        assert_eq!(task("Performance-XL"), (16384, 65536));
        for (name, memory) in DYNOS {
            if let Fargate::Task { memory: m, .. } = for_dyno(name) {
                assert!(m >= *memory, "{name}: {m} < {memory}");
            }
        }
        assert_eq!(
            for_dyno("Performance-2XL"),
            Fargate::TooLarge {
                memory: 129024,
                largest: 122880
            }
        );
        assert!(for_dyno("Performance-2XL")
            .describe()
            .contains("126 GiB is more than Fargate's largest task (120 GiB)"));
        assert_eq!(for_dyno("hobby-9x"), Fargate::Unknown);
        assert_eq!(for_dyno("Performance-M").describe(), "0.5 vCPU / 3 GiB");
    }
}
