//! Heroku's router log lines, as `heroku logs` prints them
//! (`2026-12-03T10:00:01.123456+00:00 heroku[router]: at=info method=GET path="/" … service=12ms
//! status=200 bytes=…`) and as a log drain receives them (syslog: `<158>1 2026-12-03T10:00:01…
//! host heroku router - at=info …`). Errors are the same line with `at=error code=H12
//! desc="Request timeout"`; the router's own answers (H80 maintenance mode, H14 no web dyno)
//! have an empty `service=`.

use std::time::UNIX_EPOCH;

/// One request as the router logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLine {
    /// When the router logged it (Unix seconds).
    pub unix: u64,
    pub status: u16,
    /// The router's `service=` time: from the dyno's first byte to its last; `None` when the
    /// router answered itself.
    pub service_ms: Option<u64>,
    /// `code=` of an error line (H12, H13, H14, H80...).
    pub code: Option<String>,
}

/// A line the router wrote (in either format).
pub fn is_router_line(line: &str) -> bool {
    line.contains("heroku[router]:") || line.contains(" heroku router - ")
}

/// Reads a router line; `None` when it has no time or no status.
pub fn parse_router_line(line: &str) -> Option<RouterLine> {
    let (head, body) = match line.find("heroku[router]:") {
        Some(at) => (&line[..at], &line[at + "heroku[router]:".len()..]),
        None => {
            let at = line.find(" heroku router - ")?;
            (&line[..at], &line[at + " heroku router - ".len()..])
        }
    };
    let unix = head.split_whitespace().find_map(parse_time)?;
    let fields = key_values(body);
    let field = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| v);
    let status = field("status")?.parse().ok()?;
    let service_ms = field("service")
        .and_then(|v| v.strip_suffix("ms"))
        .and_then(|v| v.parse().ok());
    let code = field("code").filter(|c| !c.is_empty()).cloned();
    Some(RouterLine {
        unix,
        status,
        service_ms,
        code,
    })
}

/// `key=value` pairs; a value may be double-quoted (`desc="Request timeout"`, `path="/a b"`).
fn key_values(text: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        // A key is one word: text before it that is not key=value (a stray word) is dropped.
        let key = key.rsplit(char::is_whitespace).next().unwrap_or(key);
        out.push((key, value));
        rest = next.trim_start();
    }
    out
}

/// An RFC 3339 time with a `Z` or a numeric offset (`+00:00`, `-05:00`), as Unix seconds.
fn parse_time(token: &str) -> Option<u64> {
    if token.len() < 20 || token.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let (base, offset_secs) = if let Some(base) = token.strip_suffix('Z') {
        (base, 0i64)
    } else {
        let split = token.len().checked_sub(6)?;
        let (base, offset) = (token.get(..split)?, token.get(split..)?);
        let sign = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return None,
        };
        let (h, m) = offset[1..].split_once(':')?;
        (
            base,
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
        )
    };
    let at = humantime::parse_rfc3339_weak(base).ok()?;
    let secs = i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    u64::try_from(secs - offset_secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_info_an_error_and_the_routers_own_answer() {
        let ok = parse_router_line("2026-12-03T10:00:01.123456+00:00 heroku[router]: at=info method=GET path=\"/api/notes/1\" host=gengar-api.herokuapp.com request_id=8f1 fwd=\"203.0.113.9\" dyno=web.1 connect=0ms service=12ms status=200 bytes=1234 protocol=https").unwrap();
        assert_eq!(ok.unix, 1_796_292_001);
        assert_eq!((ok.status, ok.service_ms, ok.code), (200, Some(12), None));
        let h12 = parse_router_line("2026-12-03T10:00:31+00:00 heroku[router]: at=error code=H12 desc=\"Request timeout\" method=POST path=\"/api/notes\" host=x request_id=1 fwd=\"1.2.3.4\" dyno=web.1 connect=1ms service=30000ms status=503 bytes=0 protocol=https").unwrap();
        assert_eq!(
            (h12.status, h12.service_ms, h12.code.as_deref()),
            (503, Some(30000), Some("H12"))
        );
        let h80 = parse_router_line("2026-12-03T10:01:00Z heroku[router]: at=info code=H80 desc=\"Maintenance mode\" method=GET path=\"/\" host=x request_id=2 fwd=\"1.2.3.4\" dyno= connect= service= status=503 bytes= protocol=https").unwrap();
        assert_eq!((h80.status, h80.service_ms), (503, None));
        assert_eq!(h80.unix, 1_796_292_060);
        // A drain's syslog line, with another offset: the same instant.
        let drain = parse_router_line("<158>1 2026-12-03T05:00:01.5-05:00 host heroku router - at=info method=GET path=\"/\" host=x dyno=web.2 connect=0ms service=7ms status=204 bytes=0").unwrap();
        assert_eq!((drain.unix, drain.status), (1_796_292_001, 204));
        assert!(
            parse_router_line("2026-12-03T10:00:01Z heroku[router]: at=info method=GET").is_none()
        );
        assert!(!is_router_line(
            "2026-12-03T10:00:01Z app[web.1]: GET / 200"
        ));
    }
}
