//! The soak's go/no-go: AWS's figures over the soak, minute by minute, against Heroku's
//! baseline and the thresholds. Pure: the figures come in as series, the breaches go out.

use std::collections::BTreeMap;

use serde::Serialize;

/// A figure's values by minute (the minute's start, Unix seconds).
pub type Series = BTreeMap<u64, f64>;

/// What AWS reported over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// ALB RequestCount (Sum per minute).
    pub requests: Series,
    /// ALB HTTPCode_Target_5XX_Count + HTTPCode_ELB_5XX_Count (Sum per minute).
    pub errors: Series,
    /// ALB TargetResponseTime p99 per minute, in milliseconds.
    pub p99_ms: Series,
    /// ALB TargetResponseTime p99 over the whole window, in milliseconds.
    pub window_p99_ms: Option<f64>,
    /// Target group HealthyHostCount (Minimum per minute).
    pub healthy: Series,
    /// RDS FreeStorageSpace (Minimum per minute), bytes.
    pub free_storage: Series,
    /// RDS DatabaseConnections (Maximum per minute).
    pub connections: Series,
    /// ECS service CPUUtilization and MemoryUtilization (Average per minute), percent: shown,
    /// no threshold.
    pub cpu: Series,
    pub memory: Series,
    /// RDS CPUUtilization (Average, percent) and FreeableMemory (Minimum, bytes): shown.
    pub rds_cpu: Series,
    pub rds_freeable_memory: Series,
}

/// The thresholds (each overridable in the runbook).
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    /// The 5xx rate may exceed Heroku's by this many percentage points.
    pub error_margin_pp: f64,
    /// p99 may be at most this many times Heroku's...
    pub p99_ratio: f64,
    /// ...or this many milliseconds, whichever is more: below it a difference is the network's
    /// noise (another hop, TLS), not the app's.
    pub p99_floor_ms: f64,
    /// No minute without a healthy target in this last stretch of the window (seconds).
    pub healthy_secs: u64,
    /// RDS free storage above this percentage of the allocated storage.
    pub min_free_storage_pct: f64,
    /// RDS connections under this percentage of max_connections.
    pub max_connections_pct: f64,
    /// Fewer requests through the ALB in the window is no evidence (the domain may not lead
    /// there at all).
    pub min_requests: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            error_margin_pp: 0.5,
            p99_ratio: 1.5,
            p99_floor_ms: 50.0,
            healthy_secs: 24 * 3600,
            min_free_storage_pct: 20.0,
            max_connections_pct: 80.0,
            min_requests: 1.0,
        }
    }
}

/// Heroku's figures (heroku.baseline's outputs).
#[derive(Debug, Clone, Serialize)]
pub struct Heroku {
    pub errors_per_1000: f64,
    pub p99_ms: f64,
}

/// What the RDS instance holds: its allocated storage and its connection limit.
#[derive(Debug, Clone, Serialize)]
pub struct Database {
    pub allocated_bytes: f64,
    pub max_connections: f64,
}

/// A threshold that did not hold: the figure, the minute, the value and the limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    pub figure: String,
    /// Unix seconds of the minute (0 when the figure has no data at all).
    pub minute: u64,
    pub value: String,
    pub limit: String,
}

/// The window's minutes, first to last.
pub fn minutes(from: u64, to: u64) -> impl Iterator<Item = u64> {
    (from / 60..=to / 60).map(|m| m * 60)
}

/// Judges the window [from, to] (minutes' starts). A minute with no ALB data point had no
/// request, no error and no healthy target: CloudWatch publishes nothing for an idle
/// minute's counts, and the target group's count every minute it exists.
pub fn judge(
    f: &Figures,
    heroku: &Heroku,
    db: &Database,
    t: &Thresholds,
    from: u64,
    to: u64,
) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let at = |s: &Series, m: u64| s.get(&m).copied().unwrap_or(0.0);
    let requests: f64 = minutes(from, to).map(|m| at(&f.requests, m)).sum();
    let errors: f64 = minutes(from, to).map(|m| at(&f.errors, m)).sum();
    if requests < t.min_requests {
        breaches.push(Breach {
            figure: "requests through the ALB (RequestCount)".into(),
            minute: from,
            value: format!("{requests:.0} in the window"),
            limit: format!(
                "≥ {:.0}: with fewer, nothing says the app serves from AWS",
                t.min_requests
            ),
        });
    }
    // The 5xx rate over the window, in percent, against Heroku's.
    let rate = error_rate(errors, requests);
    let limit = heroku.errors_per_1000 / 10.0 + t.error_margin_pp;
    if rate > limit {
        let worst = minutes(from, to)
            .max_by(|a, b| at(&f.errors, *a).total_cmp(&at(&f.errors, *b)))
            .unwrap_or(from);
        breaches.push(Breach {
            figure: "5xx rate (ALB target + ELB 5xx / RequestCount)".into(),
            minute: worst,
            value: format!(
                "{rate:.2}% ({errors:.0} of {requests:.0}; the most, {:.0}, in this minute)",
                at(&f.errors, worst)
            ),
            limit: format!(
                "≤ {limit:.2}% (Heroku's {:.2}% + {} points)",
                heroku.errors_per_1000 / 10.0,
                t.error_margin_pp
            ),
        });
    }
    // p99 of the target's response time over the window, against Heroku's service time.
    let p99_limit = (heroku.p99_ms * t.p99_ratio).max(t.p99_floor_ms);
    if f.window_p99_ms.is_none() && requests > 0.0 {
        breaches.push(Breach {
            figure: "p99 response time (ALB TargetResponseTime)".into(),
            minute: 0,
            value: "no data point in the window, with requests served".into(),
            limit: format!("≤ {p99_limit:.0} ms"),
        });
    }
    if let Some(p99) = f.window_p99_ms {
        if p99 > p99_limit {
            let worst = f
                .p99_ms
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(from, |(m, _)| *m);
            breaches.push(Breach {
                figure: "p99 response time (ALB TargetResponseTime)".into(),
                minute: worst,
                value: format!(
                    "{p99:.0} ms over the window ({:.0} ms in this minute)",
                    f.p99_ms.get(&worst).copied().unwrap_or(p99)
                ),
                limit: format!(
                    "≤ {p99_limit:.0} ms ({}× Heroku's {:.0} ms, at least {:.0} ms)",
                    t.p99_ratio, heroku.p99_ms, t.p99_floor_ms
                ),
            });
        }
    }
    // No minute without a healthy target in the last stretch.
    if let Some(m) = minutes(healthy_from(t, from, to), to).find(|m| at(&f.healthy, *m) < 1.0) {
        breaches.push(Breach {
            figure: "healthy targets (HealthyHostCount)".into(),
            minute: m,
            value: match f.healthy.get(&m) {
                Some(v) => format!("{v:.0}"),
                None => "no data point (no healthy target reported)".into(),
            },
            limit: format!(
                "≥ 1 every minute of the last {}",
                crate::clock::short(std::time::Duration::from_secs(t.healthy_secs))
            ),
        });
    }
    // RDS: free storage and connections.
    match f.free_storage.iter().next_back() {
        Some((m, free)) if db.allocated_bytes > 0.0 => {
            let pct = free * 100.0 / db.allocated_bytes;
            if pct < t.min_free_storage_pct {
                breaches.push(Breach {
                    figure: "RDS free storage (FreeStorageSpace)".into(),
                    minute: *m,
                    value: format!("{pct:.1}% ({:.1} GiB free)", free / 1024f64.powi(3)),
                    limit: format!("> {}% of the allocated storage", t.min_free_storage_pct),
                });
            }
        }
        _ => breaches.push(Breach {
            figure: "RDS free storage (FreeStorageSpace)".into(),
            minute: 0,
            value: "no data point in the window".into(),
            limit: format!("> {}% of the allocated storage", t.min_free_storage_pct),
        }),
    }
    let conn_limit = db.max_connections * t.max_connections_pct / 100.0;
    if f.connections.is_empty() {
        breaches.push(Breach {
            figure: "RDS connections (DatabaseConnections)".into(),
            minute: 0,
            value: "no data point in the window".into(),
            limit: format!("< {conn_limit:.0}"),
        });
    } else if let Some((m, c)) = f
        .connections
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .filter(|(_, c)| **c >= conn_limit)
    {
        breaches.push(Breach {
            figure: "RDS connections (DatabaseConnections)".into(),
            minute: *m,
            value: format!("{c:.0}"),
            limit: format!(
                "< {conn_limit:.0} ({}% of max_connections {:.0})",
                t.max_connections_pct, db.max_connections
            ),
        });
    }
    breaches
}

/// The points the journal keeps of a figure (and the pictures draw).
pub const KEPT_POINTS: usize = 240;

/// What the journal keeps of the soak's window (soak.gate's `figures` output): each figure
/// minute by minute (downsampled to at most [`KEPT_POINTS`] means), with the threshold it was
/// judged against. A minute with no ALB point is kept as 0, as [`judge`] counts it.
pub fn evidence(
    f: &Figures,
    heroku: &Heroku,
    db: &Database,
    t: &Thresholds,
    from: u64,
    to: u64,
) -> super::Evidence {
    let filled = |s: &Series| -> Series {
        minutes(from, to)
            .map(|m| (m, s.get(&m).copied().unwrap_or(0.0)))
            .collect()
    };
    let requests = filled(&f.requests);
    let errors = filled(&f.errors);
    let error_pct: Series = requests
        .iter()
        .map(|(m, r)| (*m, error_rate(errors.get(m).copied().unwrap_or(0.0), *r)))
        .collect();
    let gib = 1024f64.powi(3);
    let scaled = |s: &Series, by: f64| -> Series { s.iter().map(|(m, v)| (*m, v / by)).collect() };
    // A figure with a limit keeps each stretch's worst minute (a minute without a healthy
    // target must not vanish into a mean); the others, the mean.
    let figure = |key: &str, title: &str, unit: &str, s: &Series, limit: Option<super::Limit>| {
        let points = match limit {
            Some(super::Limit::AtMost(_) | super::Limit::Below(_)) => {
                downsample_by(s, KEPT_POINTS, |c| {
                    c.iter().copied().fold(f64::MIN, f64::max)
                })
            }
            Some(super::Limit::AtLeast(_) | super::Limit::Above(_)) => {
                downsample_by(s, KEPT_POINTS, |c| {
                    c.iter().copied().fold(f64::MAX, f64::min)
                })
            }
            None => downsample(s, KEPT_POINTS),
        };
        super::Figure {
            key: key.to_string(),
            title: title.to_string(),
            unit: unit.to_string(),
            points,
            limit,
            judged: None,
            heroku: Vec::new(),
            heroku_level: None,
        }
    };
    use super::Limit;
    let mut figures = vec![
        figure(
            "error_pct",
            "5xx rate",
            "%",
            &error_pct,
            Some(Limit::AtMost(
                heroku.errors_per_1000 / 10.0 + t.error_margin_pp,
            )),
        ),
        figure(
            "p99_ms",
            "p99 response time",
            "ms",
            &f.p99_ms,
            Some(Limit::AtMost(
                (heroku.p99_ms * t.p99_ratio).max(t.p99_floor_ms),
            )),
        ),
        figure("requests", "requests", "per minute", &requests, None),
        figure(
            "healthy",
            "healthy targets",
            "targets",
            &filled(&f.healthy),
            Some(Limit::AtLeast(1.0)),
        ),
        figure(
            "connections",
            "RDS connections",
            "connections",
            &f.connections,
            Some(Limit::Below(
                db.max_connections * t.max_connections_pct / 100.0,
            )),
        ),
        figure(
            "free_storage_gib",
            "RDS free storage",
            "GiB",
            &scaled(&f.free_storage, gib),
            (db.allocated_bytes > 0.0)
                .then(|| Limit::Above(db.allocated_bytes * t.min_free_storage_pct / 100.0 / gib)),
        ),
        figure("rds_cpu", "RDS CPU", "%", &f.rds_cpu, None),
        figure(
            "rds_freeable_memory_mib",
            "RDS freeable memory",
            "MiB",
            &scaled(&f.rds_freeable_memory, 1024.0 * 1024.0),
            None,
        ),
        figure("ecs_cpu", "ECS service CPU", "%", &f.cpu, None),
        figure("ecs_memory", "ECS service memory", "%", &f.memory, None),
    ];
    // What the gate compared with: Heroku's figures over its baseline, and the value it
    // judged (as `judge` computes it).
    let total = |s: &Series| -> f64 { s.values().sum() };
    let window_rate = error_rate(total(&errors), total(&requests));
    let fewest_healthy = minutes(healthy_from(t, from, to), to)
        .map(|m| f.healthy.get(&m).copied().unwrap_or(0.0))
        .fold(f64::MAX, f64::min);
    for fig in &mut figures {
        fig.heroku_level = match fig.key.as_str() {
            "error_pct" => Some(heroku.errors_per_1000 / 10.0),
            "p99_ms" => Some(heroku.p99_ms),
            _ => None,
        };
        fig.judged = match fig.key.as_str() {
            "error_pct" => Some(window_rate),
            "p99_ms" => f.window_p99_ms,
            "healthy" => (fewest_healthy != f64::MAX).then_some(fewest_healthy),
            "free_storage_gib" => f.free_storage.values().next_back().map(|v| v / gib),
            "connections" => f.connections.values().copied().reduce(f64::max),
            _ => None,
        };
    }
    super::Evidence { from, to, figures }
}

/// A series cut to at most `max` points, each stretch's value by `pick` (its worst minute).
pub fn downsample_by(s: &Series, max: usize, pick: impl Fn(&[f64]) -> f64) -> Vec<(u64, f64)> {
    if s.len() <= max || max == 0 {
        return s.iter().map(|(m, v)| (*m, *v)).collect();
    }
    let per = s.len().div_ceil(max);
    let points: Vec<(u64, f64)> = s.iter().map(|(m, v)| (*m, *v)).collect();
    points
        .chunks(per)
        .map(|c| {
            let values: Vec<f64> = c.iter().map(|p| p.1).collect();
            (c[0].0, pick(&values))
        })
        .collect()
}

/// A series cut to at most `max` points, each the mean of its stretch: what the journal keeps.
pub fn downsample(s: &Series, max: usize) -> Vec<(u64, f64)> {
    downsample_by(s, max, |c| c.iter().sum::<f64>() / c.len() as f64)
}

/// 5xx per 100 answers. The ALB's own 5xx (no healthy target) are not all in RequestCount:
/// counted on both sides.
fn error_rate(errors: f64, requests: f64) -> f64 {
    if requests + errors > 0.0 {
        errors * 100.0 / requests.max(errors)
    } else {
        0.0
    }
}

/// The start of the stretch in which every minute must have a healthy target.
fn healthy_from(t: &Thresholds, from: u64, to: u64) -> u64 {
    (to + 60).saturating_sub(t.healthy_secs).max(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy_window() -> (Figures, u64, u64) {
        let from = 1_796_292_000;
        let to = from + 9 * 60;
        let mut f = Figures::default();
        for m in minutes(from, to) {
            f.requests.insert(m, 100.0);
            f.healthy.insert(m, 2.0);
            f.p99_ms.insert(m, 80.0);
            f.connections.insert(m, 10.0);
            f.free_storage.insert(m, 15.0 * 1024f64.powi(3));
        }
        f.window_p99_ms = Some(90.0);
        (f, from, to)
    }

    const HEROKU: Heroku = Heroku {
        errors_per_1000: 2.0,
        p99_ms: 100.0,
    };
    const DB: Database = Database {
        allocated_bytes: 20.0 * 1024.0 * 1024.0 * 1024.0,
        max_connections: 100.0,
    };

    #[test]
    fn a_healthy_window_passes_and_a_5xx_burst_is_named_with_its_minute() {
        let (mut f, from, to) = healthy_window();
        assert_eq!(
            judge(&f, &HEROKU, &DB, &Thresholds::default(), from, to),
            []
        );
        // 1,000 requests; Heroku 0.2% + 0.5 points = 0.7%: 8 errors in minute 3 fail it.
        f.errors.insert(from + 180, 8.0);
        let b = judge(&f, &HEROKU, &DB, &Thresholds::default(), from, to);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].minute, from + 180);
        assert!(b[0].value.starts_with("0.80% (8 of 1000"), "{b:?}");
        assert!(b[0].limit.starts_with("≤ 0.70%"), "{b:?}");
    }

    #[test]
    fn a_missing_alb_point_is_zero_requests_and_no_healthy_target() {
        let (mut f, from, to) = healthy_window();
        f.requests.remove(&(from + 120));
        f.healthy.remove(&(from + 120));
        let b = judge(&f, &HEROKU, &DB, &Thresholds::default(), from, to);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(
            (b[0].figure.as_str(), b[0].minute),
            ("healthy targets (HealthyHostCount)", from + 120)
        );
        // 900 requests now: 5 errors are 0.56%, inside 0.7%.
        f.healthy.insert(from + 120, 1.0);
        f.errors.insert(from, 5.0);
        assert_eq!(
            judge(&f, &HEROKU, &DB, &Thresholds::default(), from, to),
            []
        );
    }

    #[test]
    fn p99_storage_and_connections_are_judged() {
        let (mut f, from, to) = healthy_window();
        f.window_p99_ms = Some(151.0);
        f.p99_ms.insert(from + 60, 400.0);
        f.free_storage.insert(to, 3.0 * 1024f64.powi(3));
        f.connections.insert(from + 240, 80.0);
        let b = judge(&f, &HEROKU, &DB, &Thresholds::default(), from, to);
        let named: Vec<(&str, u64)> = b.iter().map(|b| (b.figure.as_str(), b.minute)).collect();
        assert_eq!(
            named,
            [
                ("p99 response time (ALB TargetResponseTime)", from + 60),
                ("RDS free storage (FreeStorageSpace)", to),
                ("RDS connections (DatabaseConnections)", from + 240)
            ]
        );
        assert!(b[1].value.starts_with("15.0%"), "{b:?}");
        // Under the floor, a ratio is noise: 30 ms against Heroku's 4 ms passes.
        let (mut f, ..) = healthy_window();
        f.window_p99_ms = Some(30.0);
        let fast = Heroku {
            errors_per_1000: 2.0,
            p99_ms: 4.0,
        };
        assert_eq!(judge(&f, &fast, &DB, &Thresholds::default(), from, to), []);
        // No request through the ALB at all is no evidence either.
        let (mut none, ..) = healthy_window();
        none.requests.clear();
        none.window_p99_ms = None;
        let b = judge(&none, &HEROKU, &DB, &Thresholds::default(), from, to);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].figure, "requests through the ALB (RequestCount)");
        // No RDS data at all is no evidence: named.
        let (mut f, ..) = healthy_window();
        f.free_storage.clear();
        f.connections.clear();
        let b = judge(&f, &HEROKU, &DB, &Thresholds::default(), from, to);
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|b| b.value == "no data point in the window"));
    }

    #[test]
    fn downsampling_keeps_at_most_max_points_as_means() {
        let s: Series = (0..10u64).map(|i| (i * 60, i as f64)).collect();
        assert_eq!(downsample(&s, 20).len(), 10);
        assert_eq!(
            downsample(&s, 5),
            [(0, 0.5), (120, 2.5), (240, 4.5), (360, 6.5), (480, 8.5)]
        );
    }
}
