//! `dns.point`: Route 53 UPSERT of the domain to the ALB (alias or CNAME). Destructive in the
//! runbook; the record it replaces is an output (so the journal keeps it for the rollback); it
//! waits until the change is INSYNC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
    ResourceRecordSet, RrType,
};

use super::{explain, pause, prepare, Session};
use crate::actions::{parse_duration, parse_integer, Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Point(pub Arc<Session>);

static SCHEMA: ActionSchema = ActionSchema {
    kind: "dns.point",
    summary: "points a DNS name at a target in Route 53 (alias A record or CNAME) and waits until it is in sync",
    params: &[
        ParamSpec::required("zone", ParamType::String, "hosted zone id, or its domain name"),
        ParamSpec::required("name", ParamType::String, "the record, e.g. api.example.com"),
        ParamSpec::required("target", ParamType::String, "where it points, e.g. the ALB's DNS name"),
        ParamSpec::optional("alias_zone_id", ParamType::String, "the target's hosted zone id: makes an alias A record (else a CNAME)"),
        ParamSpec::optional("ttl", ParamType::Integer, "CNAME TTL in seconds (60)"),
        ParamSpec::optional("deadline", ParamType::Duration, "how long to wait for INSYNC (5m)"),
    ],
    outputs: &["previous", "change_id"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    zone: String,
    name: String,
    target: String,
    alias_zone_id: Option<String>,
    ttl: Option<serde_json::Value>,
    deadline: Option<String>,
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A record set as one line of JSON: what the rollback restores.
fn describe_record(r: &ResourceRecordSet) -> String {
    serde_json::json!({
        "name": r.name(),
        "type": r.r#type().as_str(),
        "ttl": r.ttl(),
        "values": r.resource_records().iter().map(|v| v.value()).collect::<Vec<_>>(),
        "alias": r.alias_target().map(|a| serde_json::json!({"dns_name": a.dns_name(), "zone_id": a.hosted_zone_id()})),
    })
    .to_string()
}

#[async_trait]
impl Action for Point {
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
        let kind = if params.get("alias_zone_id").is_some() {
            "alias A"
        } else {
            "CNAME"
        };
        format!(
            "Route 53 UPSERT {} → {} ({kind})",
            get("name"),
            get("target")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<Params>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        point(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

/// The A, AAAA and CNAME records of a name in a zone.
async fn address_records(
    r53: &aws_sdk_route53::Client,
    zone_id: &str,
    name: &str,
) -> Result<Vec<ResourceRecordSet>, Outcome> {
    let listed = r53
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .start_record_name(name)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("route53:ListResourceRecordSets", &e)))?;
    Ok(listed
        .resource_record_sets()
        .iter()
        .filter(|r| {
            r.name() == name && matches!(r.r#type(), RrType::A | RrType::Aaaa | RrType::Cname)
        })
        .cloned()
        .collect())
}

/// The name's address records after the change must be exactly the one written: same type,
/// same alias target or value (a CNAME left beside an alias A would make resolvers disagree).
fn read_back_matches(now: &[&ResourceRecordSet], wanted: &ResourceRecordSet) -> Result<(), String> {
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    match now {
        [] => Err("no A, AAAA or CNAME record".to_string()),
        [one] if one.r#type() != wanted.r#type() => Err(format!(
            "a {} record instead of {}",
            one.r#type().as_str(),
            wanted.r#type().as_str()
        )),
        [one] => {
            let value = |r: &ResourceRecordSet| match r.alias_target() {
                Some(alias) => norm(alias.dns_name()),
                None => r
                    .resource_records()
                    .first()
                    .map(|v| norm(v.value()))
                    .unwrap_or_default(),
            };
            if value(one) == value(wanted) {
                Ok(())
            } else {
                Err(format!(
                    "it points at {}, not {}",
                    value(one),
                    value(wanted)
                ))
            }
        }
        many => Err(format!(
            "{} records ({}) where one was written",
            many.len(),
            many.iter()
                .map(|r| r.r#type().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

async fn point(
    config: &aws_config::SdkConfig,
    p: &Params,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let deadline = parse_duration(p.deadline.as_deref(), Duration::from_secs(300), "deadline")?;
    let ttl = parse_integer(p.ttl.as_ref(), "ttl")?.unwrap_or(60);
    let r53 = aws_sdk_route53::Client::new(config);
    let zone_id = if p.zone.starts_with('Z') || p.zone.starts_with("/hostedzone/") {
        p.zone.trim_start_matches("/hostedzone/").to_string()
    } else {
        let zones = r53
            .list_hosted_zones_by_name()
            .dns_name(fqdn(&p.zone))
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("route53:ListHostedZonesByName", &e)))?;
        zones
            .hosted_zones()
            .iter()
            .find(|z| z.name() == fqdn(&p.zone))
            .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
            .ok_or_else(|| Outcome::failed(format!("no hosted zone {}", p.zone)))?
    };
    let name = fqdn(&p.name);
    let previous = address_records(&r53, &zone_id, &name).await?;
    let record = match &p.alias_zone_id {
        Some(alias_zone) => ResourceRecordSet::builder()
            .name(&name)
            .r#type(RrType::A)
            .alias_target(
                AliasTarget::builder()
                    .dns_name(&p.target)
                    .hosted_zone_id(alias_zone)
                    .evaluate_target_health(true)
                    .build()
                    .map_err(|e| Outcome::failed(e.to_string()))?,
            )
            .build(),
        None => ResourceRecordSet::builder()
            .name(&name)
            .r#type(RrType::Cname)
            .ttl(ttl)
            .resource_records(
                ResourceRecord::builder()
                    .value(&p.target)
                    .build()
                    .map_err(|e| Outcome::failed(e.to_string()))?,
            )
            .build(),
    }
    .map_err(|e| Outcome::failed(e.to_string()))?;
    // What is replaced goes into the journal first: the rollback restores it.
    let before = if previous.is_empty() {
        "none".to_string()
    } else {
        previous
            .iter()
            .map(describe_record)
            .collect::<Vec<_>>()
            .join(" ")
    };
    ctx.report.output("previous", before.clone()).await;
    ctx.report.info(format!("replacing: {before}")).await;
    // A record of another type under the name must go in the same batch (CNAME ↔ alias A).
    let mut changes = Vec::new();
    for old in previous.iter().filter(|r| r.r#type() != record.r#type()) {
        changes.push(
            Change::builder()
                .action(ChangeAction::Delete)
                .resource_record_set(old.clone())
                .build()
                .map_err(|e| Outcome::failed(e.to_string()))?,
        );
    }
    changes.push(
        Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(record.clone())
            .build()
            .map_err(|e| Outcome::failed(e.to_string()))?,
    );
    let changed = r53
        .change_resource_record_sets()
        .hosted_zone_id(&zone_id)
        .change_batch(
            ChangeBatch::builder()
                .comment("cutover dns.point")
                .set_changes(Some(changes))
                .build()
                .map_err(|e| Outcome::failed(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("route53:ChangeResourceRecordSets", &e)))?;
    let change_id = changed
        .change_info()
        .map(|c| c.id().to_string())
        .unwrap_or_default();
    ctx.report.output("change_id", change_id.clone()).await;
    let started = Instant::now();
    loop {
        let status = r53
            .get_change()
            .id(&change_id)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("route53:GetChange", &e)))?
            .change_info()
            .map(|c| c.status().clone());
        if status == Some(ChangeStatus::Insync) {
            // INSYNC says the change was applied; what the zone now answers is the proof.
            let after = address_records(&r53, &zone_id, &name).await?;
            let now: Vec<&ResourceRecordSet> = after.iter().collect();
            if let Err(problem) = read_back_matches(&now, &record) {
                return Ok(Outcome::failed(format!(
                    "the change is INSYNC but {name} reads back wrong: {problem}"
                )));
            }
            ctx.report
                .info(format!(
                    "read back: {}",
                    now.iter()
                        .map(|r| describe_record(r))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
                .await;
            let shown = match &p.alias_zone_id {
                Some(_) => "alias A record (TTL is the target's)".to_string(),
                None => format!(
                    "CNAME, TTL {ttl}s: resolvers may serve the old answer for up to that long"
                ),
            };
            return Ok(Outcome::Succeeded {
                note: Some(format!("{name} → {} in sync; {shown}", p.target)),
            });
        }
        if started.elapsed() >= deadline {
            return Ok(Outcome::failed(format!(
                "change {change_id} is not INSYNC after {}",
                humantime::format_duration(deadline)
            )));
        }
        pause(&ctx.cancel, Duration::from_secs(2)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cname(value: &str) -> ResourceRecordSet {
        ResourceRecordSet::builder()
            .name("api.example.com.")
            .r#type(RrType::Cname)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value(value).build().unwrap())
            .build()
            .unwrap()
    }

    fn alias(target: &str) -> ResourceRecordSet {
        ResourceRecordSet::builder()
            .name("api.example.com.")
            .r#type(RrType::A)
            .alias_target(
                AliasTarget::builder()
                    .dns_name(target)
                    .hosted_zone_id("Z1")
                    .evaluate_target_health(true)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn the_record_read_back_must_be_the_one_written() {
        let wanted = alias("alb-1.elb.amazonaws.com");
        assert_eq!(
            read_back_matches(&[&alias("ALB-1.elb.amazonaws.com.")], &wanted),
            Ok(())
        );
        assert_eq!(
            read_back_matches(&[], &wanted),
            Err("no A, AAAA or CNAME record".to_string())
        );
        assert_eq!(
            read_back_matches(&[&cname("x.herokuapp.com")], &wanted),
            Err("a CNAME record instead of A".to_string())
        );
        assert_eq!(
            read_back_matches(&[&alias("other.elb.amazonaws.com")], &wanted),
            Err("it points at other.elb.amazonaws.com, not alb-1.elb.amazonaws.com".to_string())
        );
        let left = cname("x.herokuapp.com");
        let new = alias("alb-1.elb.amazonaws.com");
        assert_eq!(
            read_back_matches(&[&left, &new], &wanted),
            Err("2 records (CNAME, A) where one was written".to_string())
        );
    }
}
