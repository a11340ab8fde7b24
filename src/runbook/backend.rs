//! The state backend a runbook (or `--state`) names: local, or an S3 prefix.

/// The state backend named by `--state`, `CUTOVER_STATE` or the runbook's `[state] backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3 { bucket: String, prefix: String },
}

impl Backend {
    /// `s3://BUCKET/PREFIX` (the prefix may be empty; it is kept with a trailing `/`), or
    /// `local`.
    pub fn parse(text: &str) -> Result<Backend, String> {
        let text = text.trim();
        if text.is_empty() || text == "local" {
            return Ok(Backend::Local);
        }
        let Some(rest) = text.strip_prefix("s3://") else {
            return Err(format!(
                "state backend {text:?}: expected s3://BUCKET/PREFIX (or \"local\")"
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(format!(
                "state backend {text:?}: {bucket:?} is not an S3 bucket name"
            ));
        }
        let prefix = prefix.trim_matches('/');
        Ok(Backend::S3 {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    pub fn url(&self) -> String {
        match self {
            Backend::Local => "local".to_string(),
            Backend::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_with_their_errors_in_words() {
        assert_eq!(Backend::parse("local"), Ok(Backend::Local));
        assert_eq!(
            Backend::parse("s3://team-state/gengar/prod"),
            Ok(Backend::S3 {
                bucket: "team-state".into(),
                prefix: "gengar/prod/".into()
            })
        );
        assert_eq!(
            Backend::parse("s3://team-state"),
            Ok(Backend::S3 {
                bucket: "team-state".into(),
                prefix: String::new()
            })
        );
        assert!(Backend::parse("gs://x/y")
            .unwrap_err()
            .contains("expected s3://"));
        assert!(Backend::parse("s3://Bad_Bucket/x")
            .unwrap_err()
            .contains("not an S3 bucket name"));
    }
}
