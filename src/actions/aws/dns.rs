//! `dns.point`: Route 53 UPSERT of the domain to the ALB (alias or CNAME). Destructive in the
//! runbook; the record it replaces is an output (so the journal keeps it for the rollback); it
//! waits until the change is INSYNC. `dns.ttl`: the same record with a lower TTL, ahead of the
//! cutover, so resolvers forget the old answer quickly when it changes.

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
pub struct Ttl(pub Arc<Session>);
pub struct Restore(pub Arc<Session>);

static TTL_SCHEMA: ActionSchema = ActionSchema {
    kind: "dns.ttl",
    summary: "lowers the TTL of a name's records in Route 53 (same values), ahead of a cutover, and waits until it is in sync",
    params: &[
        ParamSpec::required("zone", ParamType::String, "hosted zone id, or its domain name"),
        ParamSpec::required("name", ParamType::String, "the record, e.g. api.example.com"),
        ParamSpec::optional("ttl", ParamType::Integer, "the TTL to set, in seconds (60)"),
        ParamSpec::optional("deadline", ParamType::Duration, "how long to wait for INSYNC (5m)"),
    ],
    outputs: &["previous_ttl", "ttl"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlParams {
    zone: String,
    name: String,
    ttl: Option<serde_json::Value>,
    deadline: Option<String>,
}

/// The TTL Route 53 answers an alias to an ALB with.
const ALIAS_TTL: i64 = 60;

#[async_trait]
impl Action for Ttl {
    fn schema(&self) -> &'static ActionSchema {
        &TTL_SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "Route 53: TTL of {} down to {}s (same records)",
            params.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
            params.get("ttl").map_or("60".to_string(), |v| v
                .to_string()
                .trim_matches('"')
                .to_string())
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<TtlParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        lower_ttl(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

async fn lower_ttl(
    config: &aws_config::SdkConfig,
    p: &TtlParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let deadline = parse_duration(p.deadline.as_deref(), Duration::from_secs(300), "deadline")?;
    let wanted = parse_integer(p.ttl.as_ref(), "ttl")?.unwrap_or(60);
    let r53 = aws_sdk_route53::Client::new(config);
    let zone_id = zone_id(&r53, &p.zone).await?;
    let name = fqdn(&p.name);
    let records = address_records(&r53, &zone_id, &name).await?;
    if records.is_empty() {
        return Err(Outcome::failed(format!(
            "{name} has no A, AAAA or CNAME record in {}",
            p.zone
        )));
    }
    let ttl_of = |r: &ResourceRecordSet| r.ttl().unwrap_or(ALIAS_TTL);
    let previous = records.iter().map(ttl_of).max().unwrap_or(ALIAS_TTL);
    ctx.report
        .output("previous_ttl", previous.to_string())
        .await;
    let lower: Vec<&ResourceRecordSet> = records
        .iter()
        .filter(|r| r.alias_target().is_none() && ttl_of(r) > wanted)
        .collect();
    if lower.is_empty() {
        ctx.report
            .output("ttl", previous.min(wanted.max(previous)).to_string())
            .await;
        return Ok(Outcome::Succeeded {
            note: Some(format!(
                "{name}: TTL already {previous}s (≤ {wanted}s, or an alias answered with its target's): nothing to change"
            )),
        });
    }
    let changes = lower
        .iter()
        .map(|record| {
            let mut lowered = (*record).clone();
            lowered.ttl = Some(wanted);
            (ChangeAction::Upsert, lowered)
        })
        .collect();
    let change_id = submit(&r53, &zone_id, "cutover dns.ttl", changes).await?;
    if let Some(failed) = wait_insync(&r53, &change_id, deadline, ctx).await? {
        return Ok(failed);
    }
    let after = address_records(&r53, &zone_id, &name).await?;
    let now = after.iter().map(ttl_of).max().unwrap_or(ALIAS_TTL);
    if after
        .iter()
        .any(|r| r.alias_target().is_none() && ttl_of(r) > wanted)
    {
        return Ok(Outcome::failed(format!(
            "the change is INSYNC but {name} still has a TTL of {now}s"
        )));
    }
    ctx.report.output("ttl", now.to_string()).await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{name}: TTL {previous}s → {now}s; resolvers may hold the old TTL for {previous}s more, so the cutover waits that long after this step"
        )),
    })
}

/// Sends one batch of changes to a zone; the change's id, to wait for.
async fn submit(
    r53: &aws_sdk_route53::Client,
    zone_id: &str,
    comment: &str,
    changes: Vec<(ChangeAction, ResourceRecordSet)>,
) -> Result<String, Outcome> {
    let changes = changes
        .into_iter()
        .map(|(action, record)| {
            Change::builder()
                .action(action)
                .resource_record_set(record)
                .build()
                .map_err(|e| Outcome::failed(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let changed = r53
        .change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(
            ChangeBatch::builder()
                .comment(comment)
                .set_changes(Some(changes))
                .build()
                .map_err(|e| Outcome::failed(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("route53:ChangeResourceRecordSets", &e)))?;
    Ok(changed
        .change_info()
        .map(|c| c.id().to_string())
        .unwrap_or_default())
}

/// A hosted zone's id, from its id or its domain name.
async fn zone_id(r53: &aws_sdk_route53::Client, zone: &str) -> Result<String, Outcome> {
    if zone.starts_with('Z') || zone.starts_with("/hostedzone/") {
        return Ok(zone.trim_start_matches("/hostedzone/").to_string());
    }
    let zones = r53
        .list_hosted_zones_by_name()
        .dns_name(fqdn(zone))
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("route53:ListHostedZonesByName", &e)))?;
    // The name the world resolves is in the public zone: a private zone of the same name
    // (split-horizon) answers only inside its VPCs. Two public zones of one name are a
    // choice cutover does not make.
    let wanted = fqdn(zone);
    let named: Vec<_> = zones
        .hosted_zones()
        .iter()
        .filter(|z| z.name().eq_ignore_ascii_case(&wanted))
        .collect();
    let public: Vec<_> = named
        .iter()
        .filter(|z| !z.config().is_some_and(|c| c.private_zone()))
        .collect();
    let id = |z: &aws_sdk_route53::types::HostedZone| {
        z.id().trim_start_matches("/hostedzone/").to_string()
    };
    match public.as_slice() {
        [one] => Ok(id(one)),
        [] if named.is_empty() => Err(Outcome::failed(format!("no hosted zone {zone}"))),
        [] => Err(Outcome::failed(format!(
            "{zone} has only private hosted zones ({}): the public zone, which the world resolves, is not in this account",
            named.iter().map(|z| id(z)).collect::<Vec<_>>().join(", ")
        ))),
        many => Err(Outcome::failed(format!(
            "{zone} has {} public hosted zones ({}): give the zone's id instead of its name",
            many.len(),
            many.iter().map(|z| id(z)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Waits until a change is INSYNC: `Some(failed)` when the deadline passes first.
async fn wait_insync(
    r53: &aws_sdk_route53::Client,
    change_id: &str,
    deadline: Duration,
    ctx: &ActionContext,
) -> Result<Option<Outcome>, Outcome> {
    let started = Instant::now();
    loop {
        let status = r53
            .get_change()
            .id(change_id)
            .send()
            .await
            .map_err(|e| Outcome::failed(explain("route53:GetChange", &e)))?
            .change_info()
            .map(|c| c.status().clone());
        if status == Some(ChangeStatus::Insync) {
            return Ok(None);
        }
        if started.elapsed() >= deadline {
            return Ok(Some(Outcome::failed(format!(
                "change {change_id} is not INSYNC after {}",
                humantime::format_duration(deadline)
            ))));
        }
        pause(&ctx.cancel, Duration::from_secs(2)).await?;
    }
}

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
    outputs: &["previous", "current", "change_id", "at"],
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

/// A name as Route 53 keeps it: lowercase (DNS names have no case), ending with the root's dot.
fn fqdn(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    if name.ends_with('.') {
        name
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
        "alias": r.alias_target().map(|a| serde_json::json!({"dns_name": a.dns_name(), "zone_id": a.hosted_zone_id(), "evaluate_target_health": a.evaluate_target_health()})),
    })
    .to_string()
}

/// Records as [`describe_record`] wrote them, space-separated, or `none`.
fn parse_records(text: &str) -> Result<Vec<ResourceRecordSet>, String> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut records = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
        let v = value.map_err(|e| format!("not a record as dns.point journaled it: {e}"))?;
        let text = |k: &str| v[k].as_str().map(str::to_string);
        let name = text("name").ok_or("a record without a name")?;
        let kind = text("type").ok_or("a record without a type")?;
        let mut record = ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::from(kind.as_str()));
        if let Some(ttl) = v["ttl"].as_i64() {
            record = record.ttl(ttl);
        }
        for value in v["values"].as_array().into_iter().flatten() {
            let value = value.as_str().ok_or("a record value that is not text")?;
            record = record.resource_records(
                ResourceRecord::builder()
                    .value(value)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        if let Some(alias) = v["alias"].as_object() {
            let get = |k: &str| alias.get(k).and_then(|x| x.as_str()).unwrap_or_default();
            record = record.alias_target(
                AliasTarget::builder()
                    .dns_name(get("dns_name"))
                    .hosted_zone_id(get("zone_id"))
                    .evaluate_target_health(
                        alias
                            .get("evaluate_target_health")
                            .and_then(|x| x.as_bool())
                            .unwrap_or(false),
                    )
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        records.push(record.build().map_err(|e| e.to_string())?);
    }
    Ok(records)
}

/// The same records, in any order, compared as `dns.point` journals them (names and alias
/// targets without case or a trailing dot).
fn same_records(a: &[ResourceRecordSet], b: &[ResourceRecordSet]) -> bool {
    let key = |r: &ResourceRecordSet| describe_record(r).to_ascii_lowercase().replace(".\"", "\"");
    let mut a: Vec<String> = a.iter().map(key).collect();
    let mut b: Vec<String> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

fn records_text(records: &[ResourceRecordSet]) -> String {
    if records.is_empty() {
        "none".to_string()
    } else {
        records
            .iter()
            .map(describe_record)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

static RESTORE_SCHEMA: ActionSchema = ActionSchema {
    kind: "dns.restore",
    summary: "puts a name's records back as a dns.point step found them (alias or CNAME, its TTL), after checking the name still holds what that step set",
    params: &[
        ParamSpec::required("zone", ParamType::String, "hosted zone id, or its domain name"),
        ParamSpec::required("name", ParamType::String, "the record, e.g. api.example.com"),
        ParamSpec::required("record", ParamType::String, "what to put back: the `previous` output of the dns.point step"),
        ParamSpec::required("expect", ParamType::String, "what the name must hold now: the `current` output of that step (else someone changed it since, and nothing is touched)"),
        ParamSpec::optional("deadline", ParamType::Duration, "how long to wait for INSYNC (5m)"),
    ],
    outputs: &["change_id"],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreParams {
    zone: String,
    name: String,
    record: String,
    expect: String,
    deadline: Option<String>,
}

#[async_trait]
impl Action for Restore {
    fn schema(&self) -> &'static ActionSchema {
        &RESTORE_SCHEMA
    }

    /// What the name held before is what the cutover set: there is nothing known to go back to
    /// (the name already held that record when the step first ran).
    fn nothing_to_undo(&self, params: &serde_json::Value) -> Option<String> {
        let get = |k: &str| params.get(k).and_then(|v| v.as_str());
        let wanted = parse_records(get("record")?).ok()?;
        let expected = parse_records(get("expect")?).ok()?;
        same_records(&wanted, &expected).then(|| {
            format!(
                "the record journaled as before the cutover is the one the cutover set ({}): what the name held before it is not known to cutover — put it back by hand",
                records_text(&expected)
            )
        })
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        let get = |k: &str| params.get(k).and_then(|v| v.as_str()).unwrap_or("?");
        format!(
            "Route 53: {} back to {} — if it still holds {}",
            get("name"),
            get("record"),
            get("expect")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<RestoreParams>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        restore(&config, &p, &ctx).await.unwrap_or_else(|o| o)
    }
}

async fn restore(
    config: &aws_config::SdkConfig,
    p: &RestoreParams,
    ctx: &ActionContext,
) -> Result<Outcome, Outcome> {
    let deadline = parse_duration(p.deadline.as_deref(), Duration::from_secs(300), "deadline")?;
    let wanted = parse_records(&p.record).map_err(|e| Outcome::failed(format!("record: {e}")))?;
    let expected = parse_records(&p.expect).map_err(|e| Outcome::failed(format!("expect: {e}")))?;
    let r53 = aws_sdk_route53::Client::new(config);
    let zone_id = zone_id(&r53, &p.zone).await?;
    let name = fqdn(&p.name);
    if let Some(other) = wanted
        .iter()
        .find(|r| !r.name().eq_ignore_ascii_case(&name))
    {
        return Err(Outcome::failed(format!(
            "record: it is for {}, not {name}",
            other.name()
        )));
    }
    // What is there must be what the step set: a record someone changed since is not ours to
    // overwrite.
    let live = address_records(&r53, &zone_id, &name).await?;
    ctx.report
        .info(format!("{name} holds: {}", records_text(&live)))
        .await;
    // Already as before (a rollback interrupted after its change, or put back by hand):
    // nothing to do, and that is a success. Only a third state is refused.
    if same_records(&live, &wanted) {
        return Ok(Outcome::Succeeded {
            note: Some(format!(
                "{name} already holds what it held before the cutover ({}): nothing to change",
                records_text(&wanted)
            )),
        });
    }
    if !same_records(&live, &expected) {
        return Err(Outcome::failed(format!(
            "{name} holds {}: neither what the cutover set ({}) nor what it held before ({}). Someone changed it since; nothing was touched",
            records_text(&live),
            records_text(&expected),
            records_text(&wanted)
        )));
    }
    ctx.report
        .info(format!("putting back: {}", records_text(&wanted)))
        .await;
    let mut changes: Vec<(ChangeAction, ResourceRecordSet)> = live
        .iter()
        .filter(|r| !wanted.iter().any(|w| w.r#type() == r.r#type()))
        .map(|old| (ChangeAction::Delete, old.clone()))
        .collect();
    changes.extend(wanted.iter().map(|w| (ChangeAction::Upsert, w.clone())));
    let change_id = submit(&r53, &zone_id, "cutover dns.restore", changes).await?;
    ctx.report.output("change_id", change_id.clone()).await;
    if let Some(failed) = wait_insync(&r53, &change_id, deadline, ctx).await? {
        return Ok(failed);
    }
    let after = address_records(&r53, &zone_id, &name).await?;
    if !same_records(&after, &wanted) {
        return Ok(Outcome::failed(format!(
            "the change is INSYNC but {name} reads back {}, not {}",
            records_text(&after),
            records_text(&wanted)
        )));
    }
    ctx.report
        .info(format!("read back: {}", records_text(&after)))
        .await;
    Ok(Outcome::Succeeded {
        note: Some(format!(
            "{name} holds again what it held before the cutover"
        )),
    })
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

/// DNS names are compared without case (and without the root's dot), as resolvers do;
/// Route 53 returns them as they were created, and escapes some characters (`\052` for `*`).
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.trim_end_matches('.')
            .replace("\\052", "*")
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
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
            same_name(r.name(), name)
                && matches!(r.r#type(), RrType::A | RrType::Aaaa | RrType::Cname)
        })
        .cloned()
        .collect())
}

/// Whether a name's address records are exactly `record` (its type and target, as the
/// read-back judges them: Route 53 answers an alias with a TTL of its own).
fn holds_record(records: &[ResourceRecordSet], record: &ResourceRecordSet) -> bool {
    read_back_matches(&records.iter().collect::<Vec<_>>(), record).is_ok()
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
    let zone_id = zone_id(&r53, &p.zone).await?;
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
    // What is replaced goes into the journal first: the rollback restores it. A re-run that
    // finds this step's own record (an earlier attempt changed it, then failed or was reset)
    // keeps what that attempt recorded as before; any other record is the world as it is now
    // (changed by hand, or put back by a rollback and changed since), and is recorded anew.
    let earlier = ctx
        .recorded
        .get(&ctx.step)
        .and_then(|o| o.get("previous"))
        .filter(|_| holds_record(&previous, &record));
    let before = match earlier {
        Some(earlier) => {
            ctx.report
                .info(format!(
                    "{name} already holds this step's record (an earlier attempt's change): the record to go back to stays the one that attempt found"
                ))
                .await;
            earlier.clone()
        }
        None => records_text(&previous),
    };
    if earlier.is_none() && holds_record(&previous, &record) {
        ctx.report
            .info(format!(
                "{name} already held this record before the step ran: a rollback will have nothing to go back to"
            ))
            .await;
    }
    ctx.report.output("previous", before.clone()).await;
    ctx.report.recorded().await;
    ctx.report.info(format!("replacing: {before}")).await;
    // A record of another type under the name must go in the same batch (CNAME ↔ alias A).
    let mut changes: Vec<(ChangeAction, ResourceRecordSet)> = previous
        .iter()
        .filter(|r| r.r#type() != record.r#type())
        .map(|old| (ChangeAction::Delete, old.clone()))
        .collect();
    changes.push((ChangeAction::Upsert, record.clone()));
    let change_id = submit(&r53, &zone_id, "cutover dns.point", changes).await?;
    ctx.report.output("change_id", change_id.clone()).await;
    if let Some(failed) = wait_insync(&r53, &change_id, deadline, ctx).await? {
        return Ok(failed);
    }
    // INSYNC says the change was applied; what the zone now answers is the proof.
    let after = address_records(&r53, &zone_id, &name).await?;
    let now: Vec<&ResourceRecordSet> = after.iter().collect();
    if let Err(problem) = read_back_matches(&now, &record) {
        return Ok(Outcome::failed(format!(
            "the change is INSYNC but {name} reads back wrong: {problem}"
        )));
    }
    let current = records_text(&after);
    ctx.report.output("current", current.clone()).await;
    // When the name read back pointing at the target: where the soak's evidence starts.
    ctx.report.output("at", crate::clock::now_rfc3339()).await;
    ctx.report.info(format!("read back: {current}")).await;
    let shown = match &p.alias_zone_id {
        Some(_) => "alias A record (TTL is the target's)".to_string(),
        None => {
            format!("CNAME, TTL {ttl}s: resolvers may serve the old answer for up to that long")
        }
    };
    Ok(Outcome::Succeeded {
        note: Some(format!("{name} → {} in sync; {shown}", p.target)),
    })
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
