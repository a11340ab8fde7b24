//! `aws.identity`: the credentials in use belong to the runbook's account and region.

use std::sync::Arc;

use async_trait::async_trait;

use super::Session;
use crate::actions::{Action, ActionContext, Outcome};
use crate::runbook::ActionSchema;

pub struct CheckIdentity(pub Arc<Session>);

static SCHEMA: ActionSchema = ActionSchema {
    kind: "aws.identity",
    summary: "checks that the AWS credentials are for the runbook's account and region",
    params: &[],
    outputs: &["account", "arn", "region"],
    needs_operator_note: false,
};

#[async_trait]
impl Action for CheckIdentity {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, _: &serde_json::Value) -> String {
        "sts:GetCallerIdentity, compared with the runbook's [aws] account and region".to_string()
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        match self.0.guard(&ctx.aws).await {
            Ok((config, identity)) => {
                let region = config.region().map(|r| r.to_string()).unwrap_or_default();
                ctx.report
                    .info(format!(
                        "account {} · {} · {region}",
                        identity.account, identity.arn
                    ))
                    .await;
                ctx.report.output("account", identity.account.clone()).await;
                ctx.report.output("arn", identity.arn.clone()).await;
                ctx.report.output("region", region).await;
                Outcome::Succeeded { note: None }
            }
            Err(reason) => Outcome::failed(reason),
        }
    }
}
