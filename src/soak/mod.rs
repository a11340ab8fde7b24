//! The soak's evidence: what the app's traffic looked like. Today Heroku's baseline, read from
//! its router's log lines (`heroku logs`, or a log drain's file): requests, server errors per
//! 1,000 requests and the router's service time (p50/p95/p99), overall and per minute.
//!
//! A leaf: it parses and counts, nothing else (no AWS, no journal, no UI).

pub mod gate;
mod router;

pub use router::{parse_router_line, RouterLine};

use std::collections::BTreeMap;

use serde::Serialize;

/// One minute of traffic (UTC, the minute's start as Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
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
