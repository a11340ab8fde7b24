//! `budget.ensure`: an AWS Budgets monthly cost budget with an e-mail alert at a threshold.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_budgets::error::ProvideErrorMetadata;
use aws_sdk_budgets::types::{
    Budget, BudgetType, ComparisonOperator, Notification, NotificationType,
    NotificationWithSubscribers, Spend, Subscriber, SubscriptionType, ThresholdType, TimeUnit,
};

use super::{explain, Session};
use crate::actions::{Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Ensure(pub Arc<Session>);

static SCHEMA: ActionSchema = ActionSchema {
    kind: "budget.ensure",
    summary: "creates or updates a monthly cost budget with an e-mail alert",
    params: &[
        ParamSpec::required("name", ParamType::String, "budget name"),
        ParamSpec::required("amount", ParamType::String, "monthly USD, e.g. \"60\""),
        ParamSpec::required("email", ParamType::String, "who is alerted"),
        ParamSpec::optional(
            "threshold_percent",
            ParamType::Integer,
            "alert at this % of the amount, actual spend (80)",
        ),
    ],
    outputs: &[],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    amount: serde_json::Value,
    email: String,
    threshold_percent: Option<serde_json::Value>,
}

fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().or_else(|| {
        v.as_str()
            .and_then(|s| s.trim().trim_start_matches('$').parse().ok())
    })
}

#[async_trait]
impl Action for Ensure {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "monthly budget {} of ${} with an alert to {}",
            params.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
            params
                .get("amount")
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default(),
            params.get("email").and_then(|v| v.as_str()).unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let p: Params = match ctx.params() {
            Ok(p) => p,
            Err(o) => return o,
        };
        let (config, account) = match self.0.guard(&ctx.aws).await {
            Ok((config, identity)) => (config.clone(), identity.account.clone()),
            Err(reason) => return Outcome::failed(reason),
        };
        let Some(amount) = number(&p.amount).filter(|a| *a > 0.0) else {
            return Outcome::failed(format!("`amount` {} is not a positive number", p.amount));
        };
        let threshold = p
            .threshold_percent
            .as_ref()
            .and_then(number)
            .unwrap_or(80.0);
        let budgets = aws_sdk_budgets::Client::new(&config);
        let limit = match Spend::builder()
            .amount(format!("{amount:.2}"))
            .unit("USD")
            .build()
        {
            Ok(l) => l,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let budget = match Budget::builder()
            .budget_name(&p.name)
            .budget_type(BudgetType::Cost)
            .time_unit(TimeUnit::Monthly)
            .budget_limit(limit)
            .build()
        {
            Ok(b) => b,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let existing = budgets
            .describe_budget()
            .account_id(&account)
            .budget_name(&p.name)
            .send()
            .await;
        let current = match existing {
            Ok(found) => found
                .budget()
                .and_then(|b| b.budget_limit())
                .and_then(|l| l.amount().parse::<f64>().ok())
                .or(Some(f64::NAN)),
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NotFoundException") => {
                None
            }
            Err(e) => return Outcome::failed(explain("budgets:DescribeBudget", &e)),
        };
        if let Some(current) = current {
            if (current - amount).abs() < 0.005 {
                ctx.report
                    .info(format!("budget {} is already ${amount:.2}/month", p.name))
                    .await;
                return Outcome::Succeeded {
                    note: Some(format!(
                        "budget {} is ${amount:.2}/month (unchanged)",
                        p.name
                    )),
                };
            }
            if let Err(e) = budgets
                .update_budget()
                .account_id(&account)
                .new_budget(budget)
                .send()
                .await
            {
                return Outcome::failed(explain("budgets:UpdateBudget", &e));
            }
            ctx.report
                .info(format!(
                    "updated budget {} from ${current:.2} to ${amount:.2}/month",
                    p.name
                ))
                .await;
            return Outcome::Succeeded {
                note: Some(format!("budget {} is ${amount:.2}/month", p.name)),
            };
        }
        let notification = Notification::builder()
            .notification_type(NotificationType::Actual)
            .comparison_operator(ComparisonOperator::GreaterThan)
            .threshold(threshold)
            .threshold_type(ThresholdType::Percentage)
            .build();
        let subscriber = Subscriber::builder()
            .subscription_type(SubscriptionType::Email)
            .address(&p.email)
            .build();
        let (notification, subscriber) = match (notification, subscriber) {
            (Ok(n), Ok(s)) => (n, s),
            (Err(e), _) => return Outcome::failed(e.to_string()),
            (_, Err(e)) => return Outcome::failed(e.to_string()),
        };
        let with = match NotificationWithSubscribers::builder()
            .notification(notification)
            .subscribers(subscriber)
            .build()
        {
            Ok(w) => w,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        if let Err(e) = budgets
            .create_budget()
            .account_id(&account)
            .budget(budget)
            .notifications_with_subscribers(with)
            .send()
            .await
        {
            return Outcome::failed(explain("budgets:CreateBudget", &e));
        }
        ctx.report
            .info(format!("created budget {}: ${amount:.2}/month, alert to {} at {threshold}% of actual spend", p.name, p.email))
            .await;
        Outcome::Succeeded {
            note: Some(format!("budget {} is ${amount:.2}/month", p.name)),
        }
    }
}
