//! Time as the journal writes and reads it: RFC 3339, UTC, milliseconds. A leaf: it imports
//! nothing of the crate, so every layer may use it.

use std::time::{Duration, SystemTime};

/// Now, as the journal writes times.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Parses a journal time.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// "1h 02m", "4m 05s", "12.3s".
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
