//! Keeps secrets off the screen, out of log files and out of the journal.

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard};

use regex::Regex;

/// The masked stand-in for a secret wherever text is shown or stored.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked by value: masking "1" would garble every line.
pub const MIN_SECRET_LEN: usize = 4;

/// What a line cut for length carries where it was cut (see `actions::lines`).
pub const CUT_MARKER: &str = " … [line truncated: ";

/// Masks passwords inside URLs and `password=` pairs, and every secret value it was given.
#[derive(Debug)]
pub struct Redactor {
    patterns: Vec<(Regex, &'static str)>,
    secrets: Mutex<Secrets>,
}

#[derive(Debug, Default)]
struct Secrets {
    values: Vec<String>,
    matcher: Option<Regex>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

impl Redactor {
    pub fn new() -> Self {
        let patterns = [
            // scheme://user:PASSWORD@host
            (
                r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*):([^\s@/]+)@",
                "${1}:***@",
            ),
            // password=..., PGPASSWORD=..., pwd=... (connection strings, env dumps)
            (
                r"(?i)\b([a-z_]*(?:password|passwd|pwd|secret|token))=([^\s&;]+)",
                "${1}=***",
            ),
        ];
        Redactor {
            patterns: patterns
                .iter()
                .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, *r)))
                .collect(),
            secrets: Mutex::new(Secrets::default()),
        }
    }

    fn secrets(&self) -> MutexGuard<'_, Secrets> {
        // A panic elsewhere while holding the lock leaves the list intact: keep using it.
        self.secrets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Masks `value` from now on, in every form it may take in text: as it is, JSON-escaped,
    /// percent-encoded (inside a URL) and percent-decoded (a URL's password), and each line of
    /// a multi-line value on its own. Values shorter than [`MIN_SECRET_LEN`] are refused where
    /// secrets are read (see `engine::secrets`): masking them would garble every line.
    pub fn add_secret(&self, value: &str) {
        let value = value.trim_end_matches(['\r', '\n']);
        if value.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let mut forms = vec![value.to_string()];
        forms.extend(
            value
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| l.chars().count() >= MIN_SECRET_LEN)
                .map(str::to_string),
        );
        forms.push(
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
        if let Ok(decoded) = percent_encoding::percent_decode_str(value).decode_utf8() {
            if decoded.chars().count() >= MIN_SECRET_LEN {
                forms.push(decoded.into_owned());
            }
        }
        let escaped: Vec<String> = forms
            .iter()
            .filter_map(|f| {
                serde_json::to_string(f)
                    .ok()
                    .map(|s| s[1..s.len() - 1].to_string())
            })
            .collect();
        forms.extend(escaped);
        let mut secrets = self.secrets();
        for v in forms {
            if !v.is_empty() && !secrets.values.contains(&v) {
                secrets.values.push(v);
            }
        }
        // Longest first, so a secret containing another is masked whole.
        secrets.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let alternation: Vec<String> = secrets.values.iter().map(|v| regex::escape(v)).collect();
        secrets.matcher = Regex::new(&alternation.join("|")).ok();
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        let secrets = self.secrets();
        if let Some(matcher) = &secrets.matcher {
            if matcher.is_match(&out) {
                out = Cow::Owned(matcher.replace_all(&out, MASK).into_owned());
            }
        }
        // A line cut for length may end in the first part of a secret: mask that part too.
        if let Some(cut) = out.find(CUT_MARKER) {
            let longest = secrets
                .values
                .iter()
                .filter_map(|v| {
                    v.char_indices()
                        .skip(1)
                        .map(|(i, _)| &v[..i])
                        .filter(|prefix| out[..cut].ends_with(prefix))
                        .map(str::len)
                        .max()
                })
                .max();
            if let Some(len) = longest {
                out = Cow::Owned(format!("{}{MASK}{}", &out[..cut - len], &out[cut..]));
            }
        }
        drop(secrets);
        for (pattern, replacement) in &self.patterns {
            if pattern.is_match(&out) {
                out = Cow::Owned(pattern.replace_all(&out, *replacement).into_owned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords_keeping_user_and_host() {
        let r = Redactor::new();
        assert_eq!(
            r.redact("pg_dump postgres://u8x:S3cr%3Et@ec2-1.compute.amazonaws.com:5432/d1 -Fc"),
            "pg_dump postgres://u8x:***@ec2-1.compute.amazonaws.com:5432/d1 -Fc"
        );
        assert_eq!(r.redact("PGPASSWORD=abc psql"), "PGPASSWORD=*** psql");
        assert_eq!(
            r.redact("nothing here http://host/a:b@c"),
            "nothing here http://host/a:b@c"
        );
    }

    #[test]
    fn masks_secret_values_added_later_and_their_json_form() {
        let r = Redactor::new();
        assert_eq!(r.redact("tok ab\"cdef"), "tok ab\"cdef");
        r.add_secret("ab\"cdef");
        r.add_secret("xy");
        assert_eq!(r.redact("tok ab\"cdef"), "tok ***");
        assert_eq!(r.redact("{\"t\":\"ab\\\"cdef\"}"), "{\"t\":\"***\"}");
        assert_eq!(r.redact("xy stays"), "xy stays");
    }

    #[test]
    fn a_line_cut_inside_a_secret_shows_none_of_it() {
        let r = Redactor::new();
        r.add_secret("sk_live_0123456789");
        let cut = format!("payload sk_live_01234{CUT_MARKER}300 more bytes]");
        assert_eq!(
            r.redact(&cut),
            format!("payload ***{CUT_MARKER}300 more bytes]")
        );
        // No secret at the cut: the line stays as it is.
        let plain = format!("payload xyz{CUT_MARKER}3 more bytes]");
        assert_eq!(r.redact(&plain), plain);
    }

    #[test]
    fn masks_a_secret_in_each_of_its_forms() {
        let r = Redactor::new();
        r.add_secret("p@ss w%rd/1");
        r.add_secret("-----BEGIN KEY-----\nMIIEvQIBADAN\n-----END KEY-----");
        r.add_secret("dec%2Fode%40me");
        for text in [
            "raw p@ss w%rd/1 here",
            "url p%40ss%20w%25rd%2F1 here",
            "line MIIEvQIBADAN alone",
            "decoded dec/ode@me here",
        ] {
            assert!(
                r.redact(text).contains("***"),
                "{text} -> {}",
                r.redact(text)
            );
            for leak in ["p@ss", "p%40ss", "MIIEvQ", "dec/ode"] {
                assert!(
                    !r.redact(text).contains(leak),
                    "{text} -> {}",
                    r.redact(text)
                );
            }
        }
    }
}
