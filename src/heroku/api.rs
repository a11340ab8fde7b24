//! The Heroku Platform API (v3), read-only: a bearer token from `HEROKU_API_KEY` or the Heroku
//! CLI's login (`~/.netrc`, `machine api.heroku.com`); the base URL `CUTOVER_HEROKU_API` or
//! `https://api.heroku.com`. Lists are read whole through `Range`/`Next-Range` (206); a 429 is
//! waited out for its `Retry-After` (at most `RETRIES` times); 401, 403 and 404 say what to do.
//! Config vars are read by name only: their values are dropped here, before anything else sees
//! them.

use std::time::Duration;

use serde_json::Value;

const DEFAULT_BASE: &str = "https://api.heroku.com";
const ACCEPT: &str = "application/vnd.heroku+json; version=3";
const RETRIES: u32 = 5;
/// The longest `Retry-After` waited for.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no Heroku token: set HEROKU_API_KEY, or log in with `heroku login` (its token is read from ~/.netrc)")]
    NoToken,
    #[error("Heroku refused the token (401): set HEROKU_API_KEY to a valid token, or `heroku login` again")]
    Refused,
    #[error("the token may not read {path} (403): {message}")]
    Forbidden { path: String, message: String },
    #[error("{what} (404): {message}")]
    NotFound { what: String, message: String },
    #[error("Heroku asked to slow down (429) {tries} times for {path}: try again later")]
    TooMany { path: String, tries: u32 },
    #[error("Heroku answered {status} for {path}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("Heroku could not be reached at {base}: {reason}")]
    Network { base: String, reason: String },
    #[error("Heroku's answer for {path} does not read as JSON: {reason}")]
    Json { path: String, reason: String },
}

/// A client of the Platform API.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// The token and base URL from the environment (see the module's comment).
    pub fn from_env() -> Result<Api, ApiError> {
        let base = std::env::var("CUTOVER_HEROKU_API")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE.to_string());
        let token = std::env::var("HEROKU_API_KEY")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| {
                let home = std::env::var("HOME").ok()?;
                let text =
                    std::fs::read_to_string(std::path::Path::new(&home).join(".netrc")).ok()?;
                netrc_password(&text, "api.heroku.com")
            })
            .ok_or(ApiError::NoToken)?;
        Ok(Api::new(&base, token.trim()))
    }

    /// GET `path`: an object, or a list read whole across its pages.
    pub async fn get(&self, path: &str, what: &str) -> Result<Value, ApiError> {
        let mut range: Option<String> = None;
        let mut items: Vec<Value> = Vec::new();
        loop {
            let (status, next, body) = self.once(path, range.as_deref(), what).await?;
            let value: Value = serde_json::from_str(&body).map_err(|e| ApiError::Json {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            match (status, value) {
                (206, Value::Array(page)) => {
                    items.extend(page);
                    match next {
                        Some(n) => range = Some(n),
                        None => return Ok(Value::Array(items)),
                    }
                }
                (_, Value::Array(page)) if range.is_some() => {
                    items.extend(page);
                    return Ok(Value::Array(items));
                }
                (_, value) => return Ok(value),
            }
        }
    }

    /// GET `path` with a first `Range` (`version ..; order=desc, max=10`): that page only.
    pub async fn page(&self, path: &str, range: &str, what: &str) -> Result<Value, ApiError> {
        let (_, _, body) = self.once(path, Some(range), what).await?;
        serde_json::from_str(&body).map_err(|e| ApiError::Json {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// The app's config var names (their values never kept).
    pub async fn config_var_names(&self, app: &str) -> Result<Vec<String>, ApiError> {
        let path = format!("/apps/{}/config-vars", segment(app));
        let value = self
            .get(
                &path,
                &format!("Heroku has no app {app} that this token can see"),
            )
            .await?;
        let mut names: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// One request, a 429 waited out; (status, Next-Range, body).
    async fn once(
        &self,
        path: &str,
        range: Option<&str>,
        what: &str,
    ) -> Result<(u16, Option<String>, String), ApiError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut request = self
                .http
                .get(format!("{}{path}", self.base))
                .header("Accept", ACCEPT)
                .bearer_auth(&self.token)
                .header("User-Agent", "cutover");
            if let Some(range) = range {
                request = request.header("Range", range);
            }
            let response = request.send().await.map_err(|e| ApiError::Network {
                base: self.base.clone(),
                reason: e.without_url().to_string(),
            })?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let next = header("Next-Range");
            let retry_after = header("Retry-After")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.text().await.map_err(|e| ApiError::Network {
                base: self.base.clone(),
                reason: e.without_url().to_string(),
            })?;
            let message = || {
                serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| body.chars().take(200).collect())
            };
            match status {
                200..=299 => return Ok((status, next, body)),
                401 => return Err(ApiError::Refused),
                403 => {
                    return Err(ApiError::Forbidden {
                        path: path.to_string(),
                        message: message(),
                    })
                }
                404 => {
                    return Err(ApiError::NotFound {
                        what: what.to_string(),
                        message: message(),
                    })
                }
                429 if tries < RETRIES => {
                    let wait = retry_after
                        .unwrap_or(Duration::from_secs(1))
                        .min(LONGEST_WAIT);
                    tracing::info!(path, ?wait, "Heroku answered 429: waiting");
                    tokio::time::sleep(wait).await;
                }
                429 => {
                    return Err(ApiError::TooMany {
                        path: path.to_string(),
                        tries,
                    })
                }
                _ => {
                    return Err(ApiError::Status {
                        path: path.to_string(),
                        status,
                        message: message(),
                    })
                }
            }
        }
    }
}

/// What a path segment escapes: all but the unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// An app name or id as one path segment.
pub fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

/// The password of `machine` in a .netrc's text.
fn netrc_password(text: &str, machine: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "machine" && words.get(i + 1) == Some(&machine) {
            let mut j = i + 2;
            while j + 1 < words.len() && words[j] != "machine" {
                if words[j] == "password" {
                    return Some(words[j + 1].to_string());
                }
                j += 2;
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heroku_clis_login_is_read_from_netrc() {
        let text = "machine git.heroku.com\n  login a@b.c\n  password gitpass\nmachine api.heroku.com\n  login a@b.c\n  password apitoken\n";
        assert_eq!(
            netrc_password(text, "api.heroku.com").as_deref(),
            Some("apitoken")
        );
        assert_eq!(
            netrc_password("machine other login x password y", "api.heroku.com"),
            None
        );
        assert_eq!(segment("my app/x"), "my%20app%2Fx");
        assert_eq!(segment("rails-app_2.x"), "rails-app_2.x");
    }
}
