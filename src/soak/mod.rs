//! The soak's evidence: what the app's traffic looked like. Today Heroku's baseline, read from
//! its router's log lines (`heroku logs`, or a log drain's file): requests, server errors per
//! 1,000 requests and the router's service time (p50/p95/p99), overall and per minute.
//!
//! Then AWS's figures over the soak (`gate`: judged against that baseline) and the picture of
//! both (`Picture`: what the UI's soak view and `cutover report`'s charts draw).
//!
//! A leaf: it parses, counts and lays out, nothing else (no AWS, no journal, no UI).

pub mod gate;
mod router;

pub use router::{parse_router_line, RouterLine};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One minute of traffic (UTC, the minute's start as Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub minute: u64,
    pub requests: u64,
    /// Answers with a status of 500 or more (the router's own H12, H13, H14, H80... included).
    pub errors: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// A window of traffic: the figures over all of it and minute by minute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub requests: u64,
    pub errors: u64,
    /// First and last minute seen (Unix seconds).
    pub from: u64,
    pub to: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub buckets: Vec<Bucket>,
    /// Lines that said `heroku[router]` but could not be read (counted by the caller). The
    /// router's H80 lines (maintenance mode) are left out of everything.
    pub unreadable: Vec<String>,
}

impl Baseline {
    /// Server errors per 1,000 requests (0 with no request).
    pub fn errors_per_1000(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 1000.0 / self.requests as f64
        }
    }

    /// Reads every router line of a log (other lines are skipped: the app's own, Heroku's
    /// platform lines); a router line without a time or a status is kept in `unreadable`.
    pub fn from_log(text: &str) -> Option<Baseline> {
        let mut lines = Vec::new();
        let mut unreadable = Vec::new();
        for line in text.lines() {
            if !router::is_router_line(line) {
                continue;
            }
            match parse_router_line(line) {
                // Maintenance mode's answers (H80) are the operator's, not the app's: a
                // baseline taken inside the freeze would count every request as an error.
                Some(l) if l.code.as_deref() == Some("H80") => {}
                Some(l) => lines.push(l),
                None => unreadable.push(line.to_string()),
            }
        }
        let mut baseline = Self::from_lines(&lines)?;
        baseline.unreadable = unreadable;
        Some(baseline)
    }

    /// The figures of these requests; `None` with no request.
    pub fn from_lines(lines: &[RouterLine]) -> Option<Baseline> {
        if lines.is_empty() {
            return None;
        }
        let mut by_minute: BTreeMap<u64, Vec<&RouterLine>> = BTreeMap::new();
        for l in lines {
            by_minute.entry(l.unix / 60 * 60).or_default().push(l);
        }
        let buckets: Vec<Bucket> = by_minute
            .iter()
            .map(|(minute, ls)| {
                let mut times: Vec<u64> = ls.iter().filter_map(|l| l.service_ms).collect();
                times.sort_unstable();
                Bucket {
                    minute: *minute,
                    requests: ls.len() as u64,
                    errors: ls.iter().filter(|l| l.status >= 500).count() as u64,
                    p50_ms: percentile(&times, 50.0),
                    p95_ms: percentile(&times, 95.0),
                    p99_ms: percentile(&times, 99.0),
                }
            })
            .collect();
        let mut times: Vec<u64> = lines.iter().filter_map(|l| l.service_ms).collect();
        times.sort_unstable();
        Some(Baseline {
            requests: lines.len() as u64,
            errors: lines.iter().filter(|l| l.status >= 500).count() as u64,
            from: buckets.first().map_or(0, |b| b.minute),
            to: buckets.last().map_or(0, |b| b.minute),
            p50_ms: percentile(&times, 50.0),
            p95_ms: percentile(&times, 95.0),
            p99_ms: percentile(&times, 99.0),
            buckets,
            unreadable: Vec::new(),
        })
    }
}

/// A threshold as the gate applies it, drawn as a line on its figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Limit {
    AtMost(f64),
    Below(f64),
    AtLeast(f64),
    Above(f64),
}

impl Limit {
    pub fn value(self) -> f64 {
        match self {
            Limit::AtMost(v) | Limit::Below(v) | Limit::AtLeast(v) | Limit::Above(v) => v,
        }
    }

    /// Whether a value is on the wrong side of the line.
    pub fn broken_by(self, v: f64) -> bool {
        match self {
            Limit::AtMost(l) => v > l,
            Limit::Below(l) => v >= l,
            Limit::AtLeast(l) => v < l,
            Limit::Above(l) => v < l,
        }
    }

    pub fn text(self) -> String {
        let (sign, v) = match self {
            Limit::AtMost(v) => ("≤", v),
            Limit::Below(v) => ("<", v),
            Limit::AtLeast(v) => ("≥", v),
            Limit::Above(v) => (">", v),
        };
        format!("{sign} {}", number_text(v))
    }
}

/// A figure's number as the pictures print it: no more digits than it needs.
pub fn number_text(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One figure of the soak: AWS's points (minute, value), the limit it is judged against, and
/// where Heroku's baseline has the same figure, Heroku's per minute and overall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub key: String,
    pub title: String,
    pub unit: String,
    pub points: Vec<(u64, f64)>,
    pub limit: Option<Limit>,
    /// The value the gate compared with the limit: the 5xx rate and p99 over the window, the
    /// fewest healthy targets in the healthy stretch, the last free storage, the most
    /// connections.
    #[serde(default)]
    pub judged: Option<f64>,
    /// Heroku's baseline, minute by minute (its own minutes, before the cutover).
    #[serde(default)]
    pub heroku: Vec<(u64, f64)>,
    /// Heroku's figure over its whole baseline.
    #[serde(default)]
    pub heroku_level: Option<f64>,
}

impl Figure {
    pub fn last(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }

    /// Whether the gate found this figure on the wrong side of its limit: the value it
    /// judged (over the window, or its stretch), not any one minute's.
    pub fn broken(&self) -> bool {
        matches!((self.limit, self.judged), (Some(l), Some(v)) if l.broken_by(v))
    }
}

/// What soak.gate keeps in the journal: the window judged and every figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub from: u64,
    pub to: u64,
    pub figures: Vec<Figure>,
}

/// Something that happened on the time axis: a deployment, a rollback, the cutover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub at: u64,
    pub kind: MarkKind,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    Cutover,
    Deploy,
    Rollback,
    /// A task the service started (a deployment's, or a crashed one replaced).
    Task,
}

impl MarkKind {
    /// The letter the pictures put on the axis.
    pub fn letter(self) -> char {
        match self {
            MarkKind::Cutover => 'C',
            MarkKind::Deploy => 'D',
            MarkKind::Rollback => 'R',
            MarkKind::Task => 'T',
        }
    }

    /// What an ECS service event says happened, if it is a mark: a deployment completed, a
    /// rollback (the circuit breaker's or an operator's), a task started.
    pub fn of_service_event(message: &str) -> Option<MarkKind> {
        let m = message.to_ascii_lowercase();
        if m.contains("rolling back") || m.contains("rolled back") || m.contains("circuit breaker")
        {
            Some(MarkKind::Rollback)
        } else if m.contains("deployment completed") {
            Some(MarkKind::Deploy)
        } else if m.contains("has started") {
            Some(MarkKind::Task)
        } else {
            None
        }
    }
}

/// The soak as pictures draw it: AWS's evidence beside Heroku's baseline, with the marks of
/// what happened in between, and the gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Picture {
    pub from: u64,
    pub to: u64,
    pub figures: Vec<Figure>,
    pub marks: Vec<Mark>,
    /// "go", "no-go", or `None` while the gate has not judged this evidence.
    pub verdict: Option<String>,
    /// What did not hold, as the gate said it.
    pub breaches: Vec<String>,
    /// Heroku's baseline window (Unix seconds), when one was recorded.
    pub baseline: Option<(u64, u64)>,
}

impl Picture {
    /// AWS's evidence with Heroku's baseline beside it (its buckets, when recorded) and the
    /// marks inside the window.
    pub fn new(
        mut evidence: Evidence,
        baseline: Option<&[Bucket]>,
        mut marks: Vec<Mark>,
        verdict: Option<String>,
        breaches: Vec<String>,
    ) -> Picture {
        let buckets = baseline.unwrap_or_default();
        if !buckets.is_empty() {
            let requests: u64 = buckets.iter().map(|b| b.requests).sum();
            let errors: u64 = buckets.iter().map(|b| b.errors).sum();
            for f in &mut evidence.figures {
                let (series, level): (Vec<(u64, f64)>, Option<f64>) = match f.key.as_str() {
                    "error_pct" => (
                        buckets
                            .iter()
                            .map(|b| {
                                let rate = if b.requests == 0 {
                                    0.0
                                } else {
                                    b.errors as f64 * 100.0 / b.requests as f64
                                };
                                (b.minute, rate)
                            })
                            .collect(),
                        (requests > 0).then(|| errors as f64 * 100.0 / requests as f64),
                    ),
                    "p99_ms" => (
                        buckets
                            .iter()
                            .filter_map(|b| b.p99_ms.map(|v| (b.minute, v as f64)))
                            .collect(),
                        None,
                    ),
                    "requests" => (
                        buckets
                            .iter()
                            .map(|b| (b.minute, b.requests as f64))
                            .collect(),
                        Some(requests as f64 / buckets.len() as f64),
                    ),
                    _ => continue,
                };
                f.heroku = series;
                f.heroku_level = f.heroku_level.or(level);
            }
        }
        // The cutover is done in the minute before the first one judged: kept, at its start.
        marks.retain(|m| m.at + 60 >= evidence.from && m.at < evidence.to + 60);
        for m in &mut marks {
            m.at = m.at.max(evidence.from);
        }
        marks.sort_by_key(|m| m.at);
        Picture {
            from: evidence.from,
            to: evidence.to,
            figures: evidence.figures,
            marks,
            verdict,
            breaches,
            baseline: buckets
                .first()
                .zip(buckets.last())
                .map(|(a, b)| (a.minute, b.minute)),
        }
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `p` percent
/// of the values at or below it (the value of rank ⌈p/100 · n⌉). `None` for no value.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 95.0), Some(10));
        assert_eq!(percentile(&v, 99.0), Some(10));
        assert_eq!(percentile(&v, 10.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 95.0), Some(95));
        assert_eq!(percentile(&hundred, 99.0), Some(99));
    }
}
