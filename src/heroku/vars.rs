//! What `cutover init --out DIR` writes today: the shape (`shape.json`: the facts, their
//! sources, the disagreements and decisions — names, never a config var's value) and the
//! bundled runbook's variables for this app (`vars.toml`, for `--vars-file`): its names, its
//! AWS region nearest Heroku's, its first custom domain, its image platform. What cannot be
//! derived is left to the runbook's own value and said in a comment.

use super::shape::Shape;

/// The AWS region nearest a Heroku region (Common Runtime and Private Spaces).
pub fn aws_region(heroku: &str) -> Option<&'static str> {
    Some(match heroku {
        "us" | "virginia" => "us-east-1",
        "eu" | "dublin" => "eu-west-1",
        "oregon" => "us-west-2",
        "frankfurt" => "eu-central-1",
        "tokyo" => "ap-northeast-1",
        "sydney" => "ap-southeast-2",
        "montreal" => "ca-central-1",
        "mumbai" => "ap-south-1",
        _ => return None,
    })
}

/// A name AWS accepts everywhere the runbook uses it (lower-case letters, digits, dashes).
pub fn aws_name(app: &str) -> String {
    let mut name: String = app
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(28);
    name.trim_matches('-').to_string()
}

/// One `key = "value"` line, after the comment saying why, if any.
fn set(out: &mut String, key: &str, value: &str, why: Option<String>) {
    if let Some(why) = why {
        out.push_str(&format!("# {why}\n"));
    }
    out.push_str(&format!("{key} = {}\n", quoted(value)));
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// The bundled runbook's `[vars]` for this app, as a vars file.
pub fn vars_file(shape: &Shape) -> String {
    let name = aws_name(&shape.app);
    let mut out = format!(
        "# Written by `cutover init --from-heroku {}` from what Heroku runs (shape.json beside it\n\
         # says where each fact came from). For the bundled runbook: cutover --vars-file vars.toml …\n",
        shape.app
    );
    set(&mut out, "app", &name, None);
    set(&mut out, "heroku_app", &shape.app, None);
    for key in ["cluster", "service", "rds_instance"] {
        set(&mut out, key, &name, None);
    }
    set(&mut out, "ssm_prefix", &format!("/{name}/prod/"), None);
    set(&mut out, "log_group", &format!("/ecs/{name}"), None);
    set(&mut out, "target_group", &format!("{name}-tg"), None);
    match shape.region.as_deref().and_then(aws_region) {
        Some(region) => set(
            &mut out,
            "aws_region",
            region,
            Some(format!(
                "Heroku runs it in {}: the nearest AWS region",
                shape.region.as_deref().unwrap_or("?")
            )),
        ),
        None => out.push_str(&format!(
            "# aws_region: Heroku's region {:?} has no AWS region this table knows: set it\n",
            shape.region
        )),
    }
    match shape.domains.first() {
        Some(d) => {
            let others: Vec<&str> = shape.domains[1..]
                .iter()
                .map(|d| d.hostname.as_str())
                .collect();
            set(
                &mut out,
                "domain",
                &d.hostname,
                (!others.is_empty()).then(|| {
                    format!(
                        "the first custom domain; the bundled runbook cuts over one — also on Heroku: {}",
                        others.join(", ")
                    )
                }),
            );
            set(
                &mut out,
                "public_url",
                &format!("https://{}", d.hostname),
                None,
            );
        }
        None => out.push_str(
            "# domain: the app has no custom domain on Heroku: set the one users reach\n",
        ),
    }
    if let Some(b) = &shape.build {
        let platform = if b.architecture.0 == "x86_64" {
            "linux/amd64"
        } else {
            "linux/arm64"
        };
        set(
            &mut out,
            "image_platform",
            platform,
            Some(b.architecture.1.clone()),
        );
    }
    if !shape.decisions.is_empty() {
        out.push_str("\n# Decisions for you (this file cannot make them):\n");
        for d in &shape.decisions {
            out.push_str(&format!("#   - {d}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_regions_fit_aws() {
        assert_eq!(aws_name("Rails_App.v2"), "rails-app-v2");
        assert_eq!(aws_region("eu"), Some("eu-west-1"));
        assert_eq!(aws_region("us"), Some("us-east-1"));
        assert_eq!(aws_region("mars"), None);
        // Any value reads back as itself.
        for value in ["a\"b", "it's", "x\\y", "plain"] {
            let line = format!("v = {}", quoted(value));
            let back: toml::Table = toml::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(back["v"].as_str(), Some(value), "{line}");
        }
    }
}
