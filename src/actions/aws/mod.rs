//! AWS actions. One SdkConfig (the standard chain: environment, profiles including SSO, an
//! endpoint override for a local server) is built once per process and shared; before any AWS
//! call, the caller's account is checked against the runbook's.

pub mod approval;
mod budget;
mod dns;
mod ecr;
mod ecs;
mod elb;
mod identity;
pub mod logs;
mod network;
mod rds;
mod soak;
mod ssm;
pub mod tunnel;

use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

use super::{Action, Outcome};
use crate::runbook::AwsSettings;

pub use ecs::{judge_deployment, judge_task, DeploymentVerdict, RunTask, MAX_OVERRIDES_BYTES};
pub use tunnel::{OpenTunnel, Tunnels};

/// The AWS identity behind the credentials in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    pub arn: String,
}

/// The shared AWS state of one process: its configuration and verified identity.
#[derive(Debug, Default)]
pub struct Session {
    config: OnceCell<SdkConfig>,
    identity: OnceCell<Identity>,
}

impl Session {
    /// The SDK configuration, built on first use from the runbook's `[aws]` settings.
    pub async fn config(&self, settings: &AwsSettings) -> &SdkConfig {
        self.config
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &settings.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(profile) = &settings.profile {
                    loader = loader.profile_name(profile);
                }
                if let Some(url) = &settings.endpoint_url {
                    loader = loader.endpoint_url(url);
                }
                loader.load().await
            })
            .await
    }

    /// Checks, once per process, that the credentials belong to the runbook's account and the
    /// region is the runbook's. Every AWS action calls this before its first request.
    pub async fn guard(&self, settings: &AwsSettings) -> Result<(&SdkConfig, &Identity), String> {
        let config = self.config(settings).await;
        let identity = self
            .identity
            .get_or_try_init(|| async {
                let sts = aws_sdk_sts::Client::new(config);
                let out = sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| explain("sts:GetCallerIdentity", &e))?;
                Ok::<_, String>(Identity {
                    account: out.account().unwrap_or_default().to_string(),
                    arn: out.arn().unwrap_or_default().to_string(),
                })
            })
            .await?;
        if let Some(expected) = settings.account_id.as_deref().filter(|a| !a.is_empty()) {
            if identity.account != expected {
                return Err(format!(
                    "wrong AWS account: the runbook is for {expected}, the credentials in use are for {} ({}){}. Nothing was done.",
                    identity.account,
                    identity.arn,
                    settings
                        .profile
                        .as_deref()
                        .map(|p| format!(", profile {p}"))
                        .unwrap_or_default()
                ));
            }
        }
        let region = config.region().map(|r| r.to_string());
        if let (Some(expected), Some(actual)) = (settings.region.as_deref(), region.as_deref()) {
            if expected != actual {
                return Err(format!(
                    "wrong AWS region: the runbook is for {expected}, the session is in {actual}"
                ));
            }
        }
        Ok((config, identity))
    }
}

pub use crate::aws_error::explain;

/// The AWS action kinds, sharing one session.
pub fn actions(session: Arc<Session>) -> Vec<Arc<dyn Action>> {
    vec![
        Arc::new(identity::CheckIdentity(session.clone())),
        Arc::new(ecs::RunTask(session.clone())),
        Arc::new(ecs::Deploy(session.clone())),
        Arc::new(rds::Snapshot(session.clone())),
        Arc::new(rds::Wait(session.clone())),
        Arc::new(ssm::Sync(session.clone())),
        Arc::new(ssm::Verify(session.clone())),
        Arc::new(ssm::Restore(session.clone())),
        Arc::new(network::Verify(session.clone())),
        Arc::new(elb::Health(session.clone())),
        Arc::new(elb::Maintenance(session.clone())),
        Arc::new(ecr::Image(session.clone())),
        Arc::new(ecr::Repository(session.clone())),
        Arc::new(dns::Point(session.clone())),
        Arc::new(dns::Ttl(session.clone())),
        Arc::new(dns::Restore(session.clone())),
        Arc::new(budget::Ensure(session.clone())),
        Arc::new(logs::Search(session.clone())),
        Arc::new(logs::Tail(session.clone())),
        Arc::new(logs::Group(session.clone())),
        Arc::new(soak::Gate(session.clone())),
        Arc::new(tunnel::Tunnel(session)),
    ]
}

/// What every AWS action starts with: its parameters, and the SDK configuration once the
/// account and region are confirmed.
pub(crate) async fn prepare<T: serde::de::DeserializeOwned>(
    session: &Session,
    ctx: &super::ActionContext,
) -> Result<(T, SdkConfig), Outcome> {
    let params = ctx.params()?;
    let (config, _) = session.guard(&ctx.aws).await.map_err(Outcome::failed)?;
    Ok((params, config.clone()))
}

/// Sleeps, or returns `Err(Outcome::Cancelled)` when the step is cancelled first.
pub(crate) async fn pause(
    cancel: &tokio_util::sync::CancellationToken,
    time: std::time::Duration,
) -> Result<(), Outcome> {
    tokio::select! {
        () = tokio::time::sleep(time) => Ok(()),
        () = cancel.cancelled() => Err(Outcome::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    //! Error responses moto does not produce (it enforces no IAM, never expires or throttles),
    //! as the SDK would surface them.
    use super::*;
    use aws_sdk_sts::error::{ErrorMetadata, SdkError};
    use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    fn service_error(code: &str, status: u16) -> SdkError<GetCallerIdentityError, Response> {
        let err = GetCallerIdentityError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("from AWS")
                .build(),
        );
        let raw = Response::new(
            StatusCode::try_from(status).unwrap_or_else(|e| panic!("{e}")),
            SdkBody::empty(),
        );
        SdkError::service_error(err, raw)
    }

    #[test]
    fn each_failure_names_what_to_do() {
        let denied = explain("ecs:RunTask", &service_error("AccessDeniedException", 400));
        assert!(
            denied.starts_with("access denied: these credentials may not call ecs:RunTask"),
            "{denied}"
        );
        let expired = explain("ecs:RunTask", &service_error("ExpiredTokenException", 400));
        assert!(
            expired.contains("expired") && expired.contains("aws sso login"),
            "{expired}"
        );
        let throttled = explain(
            "logs:GetLogEvents",
            &service_error("ThrottlingException", 400),
        );
        assert!(
            throttled.contains("throttled logs:GetLogEvents even after retries"),
            "{throttled}"
        );
        let rejected = explain(
            "sts:GetCallerIdentity",
            &service_error("InvalidClientTokenId", 403),
        );
        assert!(rejected.contains("credentials were rejected"), "{rejected}");
        let other = explain(
            "ecs:RunTask",
            &service_error("ClusterNotFoundException", 400),
        );
        assert_eq!(
            other, "ecs:RunTask failed (ClusterNotFoundException): from AWS",
            "the service's message, without the raw response"
        );
    }
}
