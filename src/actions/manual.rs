//! `manual`: something only a person can do; done when the operator says so, with a note.

use async_trait::async_trait;

use super::{Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Manual;

static SCHEMA: ActionSchema = ActionSchema {
    kind: "manual",
    summary: "the operator does it by hand and confirms it with a note",
    params: &[ParamSpec::optional(
        "checklist",
        ParamType::StringList,
        "items the operator ticks off",
    )],
    outputs: &[],
    needs_operator_note: true,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    checklist: Vec<String>,
}

#[async_trait]
impl Action for Manual {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let items = params
            .get("checklist")
            .and_then(|c| c.as_array())
            .map_or(0, Vec::len);
        if items == 0 {
            "done by hand; confirmed with a note".to_string()
        } else {
            format!("done by hand ({items} checklist items); confirmed with a note")
        }
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let params: Params = match ctx.params() {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        let Some(note) = ctx.operator_note.clone().filter(|n| !n.trim().is_empty()) else {
            return Outcome::failed("a manual step is done only with the operator's note");
        };
        for item in &params.checklist {
            ctx.report.info(format!("[x] {item}")).await;
        }
        ctx.report
            .info(format!("confirmed by the operator: {note}"))
            .await;
        Outcome::Succeeded { note: Some(note) }
    }
}
