//! `ecr.repository`: the repository Terraform created exists (scanned on push).
//! `ecr.image`: the tag exists and its manifest includes linux/arm64.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ecr::types::ImageIdentifier;

use super::{explain, prepare, Session};
use crate::actions::{Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Image(pub Arc<Session>);
pub struct Repository(pub Arc<Session>);

static REPOSITORY: ActionSchema = ActionSchema {
    kind: "ecr.repository",
    summary: "checks that an ECR repository exists, and reports its URI and scan-on-push",
    params: &[ParamSpec::required(
        "repository",
        ParamType::String,
        "e.g. mentionai/gengar",
    )],
    outputs: &["uri"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryParams {
    repository: String,
}

#[async_trait]
impl Action for Repository {
    fn schema(&self) -> &'static ActionSchema {
        &REPOSITORY
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "ECR repository {} exists",
            params
                .get("repository")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<RepositoryParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        let ecr = aws_sdk_ecr::Client::new(&config);
        let found = ecr
            .describe_repositories()
            .repository_names(&p.repository)
            .send()
            .await;
        let repository = match found {
            Ok(out) => out.repositories().first().cloned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_repository_not_found_exception()) =>
            {
                None
            }
            Err(e) => return Outcome::failed(explain("ecr:DescribeRepositories", &e)),
        };
        let Some(repository) = repository else {
            return Outcome::failed(format!(
                "the ECR repository {} does not exist: has the Terraform been applied in this account and region?",
                p.repository
            ));
        };
        let uri = repository.repository_uri().unwrap_or_default().to_string();
        let scans = repository
            .image_scanning_configuration()
            .is_some_and(|c| c.scan_on_push());
        ctx.report
            .info(format!(
                "{uri}: scan on push {}",
                if scans { "on" } else { "off" }
            ))
            .await;
        ctx.report.output("uri", uri.clone()).await;
        Outcome::Succeeded { note: Some(uri) }
    }
}

static SCHEMA: ActionSchema = ActionSchema {
    kind: "ecr.image",
    summary: "checks that an image tag exists in ECR and is built for a platform (linux/arm64)",
    params: &[
        ParamSpec::required("repository", ParamType::String, "e.g. mentionai/gengar"),
        ParamSpec::required("tag", ParamType::String, "e.g. the git SHA, or latest"),
        ParamSpec::optional(
            "platform",
            ParamType::String,
            "os/architecture (linux/arm64)",
        ),
    ],
    outputs: &["digest"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    repository: String,
    tag: String,
    platform: Option<String>,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The platforms an image index lists; `None` when the manifest is a single image.
pub fn platforms(manifest: &str) -> Result<Option<Vec<String>>, String> {
    let value: serde_json::Value =
        serde_json::from_str(manifest).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let Some(list) = value.get("manifests").and_then(|m| m.as_array()) else {
        return Ok(None);
    };
    Ok(Some(
        list.iter()
            .filter_map(|m| m.get("platform"))
            .filter_map(|p| {
                Some(format!(
                    "{}/{}",
                    p.get("os")?.as_str()?,
                    p.get("architecture")?.as_str()?
                ))
            })
            .collect(),
    ))
}

#[async_trait]
impl Action for Image {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let get = |k: &str| {
            params
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        };
        format!(
            "ECR {}:{} exists and includes {}",
            get("repository"),
            get("tag"),
            params
                .get("platform")
                .and_then(|v| v.as_str())
                .unwrap_or("linux/arm64")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<Params>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        let platform = p.platform.clone().unwrap_or_else(|| "linux/arm64".into());
        let ecr = aws_sdk_ecr::Client::new(&config);
        let got = ecr
            .batch_get_image()
            .repository_name(&p.repository)
            .image_ids(ImageIdentifier::builder().image_tag(&p.tag).build())
            .set_accepted_media_types(Some(
                INDEX_TYPES
                    .iter()
                    .chain(&[
                        "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                    ])
                    .map(|s| s.to_string())
                    .collect(),
            ))
            .send()
            .await;
        let got = match got {
            Ok(g) => g,
            Err(e) => return Outcome::failed(explain("ecr:BatchGetImage", &e)),
        };
        let Some(image) = got.images().first() else {
            let why = got
                .failures()
                .first()
                .and_then(|f| f.failure_reason())
                .unwrap_or("not found");
            return Outcome::failed(format!("{}:{} is not in ECR ({why})", p.repository, p.tag));
        };
        let digest = image
            .image_id()
            .and_then(|i| i.image_digest())
            .unwrap_or_default()
            .to_string();
        ctx.report.output("digest", digest.clone()).await;
        let manifest = image.image_manifest().unwrap_or_default();
        match platforms(manifest) {
            Err(e) => Outcome::failed(e),
            Ok(None) => Outcome::failed(format!(
                "{}:{} is a single-platform manifest, so its platform cannot be confirmed as {platform}: push it with `docker buildx build --platform {platform}` (an image index)",
                p.repository, p.tag
            )),
            Ok(Some(list)) if list.contains(&platform) => {
                ctx.report.info(format!("{}:{} ({digest}) platforms: {}", p.repository, p.tag, list.join(", "))).await;
                Outcome::Succeeded { note: Some(format!("{platform} present")) }
            }
            Ok(Some(list)) => Outcome::failed(format!(
                "{}:{} has no {platform} image (it has: {})",
                p.repository,
                p.tag,
                if list.is_empty() { "none".to_string() } else { list.join(", ") }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::platforms;

    #[test]
    fn reads_platforms_from_an_index_and_none_from_a_single_manifest() {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:a","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"sha256:b","platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        assert_eq!(
            platforms(index),
            Ok(Some(vec![
                "linux/arm64".to_string(),
                "unknown/unknown".to_string()
            ]))
        );
        assert_eq!(
            platforms(r#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            Ok(None)
        );
        assert!(platforms("nope").is_err());
    }
}
