//! `network.verify`: the plan's network, rule by rule — two public subnets for Fargate and two
//! private ones for RDS across two AZs, no NAT gateway, the ALB open on 80/443, Fargate reachable
//! only from the ALB, RDS on 5432 only from Fargate and not public, tasks with public IPs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, IpPermission, SecurityGroup};

use super::{explain, prepare, Session};
use crate::actions::{Action, ActionContext, Outcome};
use crate::runbook::{ActionSchema, ParamSpec, ParamType};

pub struct Verify(pub Arc<Session>);

static SCHEMA: ActionSchema = ActionSchema {
    kind: "network.verify",
    summary: "checks the VPC, subnets, security groups, RDS exposure and task networking against the plan",
    params: &[
        ParamSpec::required("vpc", ParamType::String, "VPC id, or the value of its Name tag"),
        ParamSpec::required("alb_security_group", ParamType::String, "the ALB's security group (id or name)"),
        ParamSpec::required("cluster", ParamType::String, "ECS cluster"),
        ParamSpec::required("service", ParamType::String, "ECS service (its tasks' network)"),
        ParamSpec::required("rds_instance", ParamType::String, "RDS instance identifier"),
    ],
    outputs: &[],
    needs_operator_note: false,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    vpc: String,
    alb_security_group: String,
    cluster: String,
    service: String,
    rds_instance: String,
}

/// The verdicts, one per rule.
#[derive(Default)]
struct Checks {
    results: Vec<(bool, String)>,
}

impl Checks {
    fn check(&mut self, ok: bool, text: impl Into<String>) {
        self.results.push((ok, text.into()));
    }
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// One ingress rule: a port range, and who may use it (CIDRs and security group ids).
struct Rule {
    from: Option<i32>,
    to: Option<i32>,
    cidrs: Vec<String>,
    groups: Vec<String>,
}

/// A subnet id and its availability zone.
type SubnetInAz = (String, String);

/// Who may reach a group.
fn ingress(group: &SecurityGroup) -> Vec<Rule> {
    group
        .ip_permissions()
        .iter()
        .map(|p: &IpPermission| {
            let cidrs = p
                .ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip().map(str::to_string))
                .chain(
                    p.ipv6_ranges()
                        .iter()
                        .filter_map(|r| r.cidr_ipv6().map(str::to_string)),
                )
                .collect();
            let groups = p
                .user_id_group_pairs()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_string))
                .collect();
            Rule {
                from: p.from_port(),
                to: p.to_port(),
                cidrs,
                groups,
            }
        })
        .collect()
}

fn covers(from: Option<i32>, to: Option<i32>, port: i32) -> bool {
    match (from, to) {
        (Some(f), Some(t)) if f >= 0 => f <= port && port <= t,
        _ => true, // all traffic
    }
}

#[async_trait]
impl Action for Verify {
    fn schema(&self) -> &'static ActionSchema {
        &SCHEMA
    }

    fn describe(&self, params: &serde_json::Value) -> String {
        format!(
            "verify the network of VPC {} against the plan (subnets, NAT, security groups, RDS, tasks)",
            params.get("vpc").and_then(|v| v.as_str()).unwrap_or("?")
        )
    }

    async fn run(&self, ctx: ActionContext) -> Outcome {
        let (p, config) = match prepare::<Params>(&self.0, &ctx).await {
            Ok(ready) => ready,
            Err(o) => return o,
        };
        let checks = match verify(&config, &p).await {
            Ok(c) => c,
            Err(o) => return o,
        };
        let failed: Vec<&String> = checks
            .results
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, t)| t)
            .collect();
        for (ok, text) in &checks.results {
            ctx.report
                .info(format!("{} {text}", if *ok { "pass" } else { "FAIL" }))
                .await;
        }
        if failed.is_empty() {
            Outcome::Succeeded {
                note: Some(format!("all {} checks pass", checks.results.len())),
            }
        } else {
            Outcome::failed(format!(
                "{} of {} checks fail: {}",
                failed.len(),
                checks.results.len(),
                failed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        }
    }
}

async fn verify(config: &aws_config::SdkConfig, p: &Params) -> Result<Checks, Outcome> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let mut checks = Checks::default();
    let vpcs = if p.vpc.starts_with("vpc-") {
        ec2.describe_vpcs().vpc_ids(&p.vpc).send().await
    } else {
        ec2.describe_vpcs()
            .filters(filter("tag:Name", &p.vpc))
            .send()
            .await
    }
    .map_err(|e| Outcome::failed(explain("ec2:DescribeVpcs", &e)))?;
    let Some(vpc_id) = vpcs
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .map(str::to_string)
    else {
        checks.check(false, format!("VPC {} exists", p.vpc));
        return Ok(checks);
    };
    checks.check(true, format!("VPC {} exists ({vpc_id})", p.vpc));

    let subnets = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc_id))
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ec2:DescribeSubnets", &e)))?;
    let tables = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", &vpc_id))
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ec2:DescribeRouteTables", &e)))?;
    // A subnet is public when its route table (or the main one) sends 0.0.0.0/0 to an IGW.
    let to_igw = |t: &aws_sdk_ec2::types::RouteTable| {
        t.routes().iter().any(|r| {
            r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.gateway_id().is_some_and(|g| g.starts_with("igw-"))
        })
    };
    let main_public = tables
        .route_tables()
        .iter()
        .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
        .is_some_and(to_igw);
    let mut public_of: HashMap<String, bool> = HashMap::new();
    for table in tables.route_tables() {
        for assoc in table.associations() {
            if let Some(subnet) = assoc.subnet_id() {
                public_of.insert(subnet.to_string(), to_igw(table));
            }
        }
    }
    let mut public: Vec<SubnetInAz> = Vec::new();
    let mut private: Vec<SubnetInAz> = Vec::new();
    for s in subnets.subnets() {
        let id = s.subnet_id().unwrap_or_default().to_string();
        let az = s.availability_zone().unwrap_or_default().to_string();
        if *public_of.get(&id).unwrap_or(&main_public) {
            public.push((id, az));
        } else {
            private.push((id, az));
        }
    }
    let azs = |list: &[SubnetInAz]| {
        list.iter()
            .map(|(_, az)| az.clone())
            .collect::<BTreeSet<_>>()
            .len()
    };
    checks.check(
        public.len() >= 2 && azs(&public) >= 2,
        format!(
            "2 public subnets across 2 AZs for Fargate (found {} in {} AZs)",
            public.len(),
            azs(&public)
        ),
    );
    checks.check(
        private.len() >= 2 && azs(&private) >= 2,
        format!(
            "2 private subnets across 2 AZs for RDS (found {} in {} AZs)",
            private.len(),
            azs(&private)
        ),
    );
    let nats = ec2
        .describe_nat_gateways()
        .filter(filter("vpc-id", &vpc_id))
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ec2:DescribeNatGateways", &e)))?;
    let live_nats = nats
        .nat_gateways()
        .iter()
        .filter(|n| {
            n.state()
                .is_some_and(|s| s.as_str() != "deleted" && s.as_str() != "deleting")
        })
        .count();
    checks.check(
        live_nats == 0,
        format!("no NAT gateway (found {live_nats})"),
    );

    let groups = ec2
        .describe_security_groups()
        .filters(filter("vpc-id", &vpc_id))
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ec2:DescribeSecurityGroups", &e)))?;
    let find = |key: &str| {
        groups
            .security_groups()
            .iter()
            .find(|g| g.group_id() == Some(key) || g.group_name() == Some(key))
            .cloned()
    };
    let alb = find(&p.alb_security_group);
    match &alb {
        None => checks.check(
            false,
            format!("ALB security group {} exists", p.alb_security_group),
        ),
        Some(group) => {
            for port in [80, 443] {
                let open = ingress(group).iter().any(|r| {
                    covers(r.from, r.to, port)
                        && r.cidrs.iter().any(|c| c == "0.0.0.0/0" || c == "::/0")
                });
                checks.check(
                    open,
                    format!("ALB security group open to the internet on {port}"),
                );
            }
        }
    }
    let alb_id = alb
        .as_ref()
        .and_then(|g| g.group_id())
        .unwrap_or_default()
        .to_string();

    let ecs = aws_sdk_ecs::Client::new(config);
    let services = ecs
        .describe_services()
        .cluster(&p.cluster)
        .services(&p.service)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("ecs:DescribeServices", &e)))?;
    let awsvpc = services
        .services()
        .first()
        .and_then(|s| s.network_configuration())
        .and_then(|n| n.awsvpc_configuration())
        .cloned();
    let mut fargate_groups: Vec<String> = Vec::new();
    match &awsvpc {
        None => checks.check(
            false,
            format!(
                "service {}/{} has an awsvpc network configuration",
                p.cluster, p.service
            ),
        ),
        Some(net) => {
            let public_ids: BTreeSet<&str> = public.iter().map(|(id, _)| id.as_str()).collect();
            let all_public = !net.subnets().is_empty()
                && net
                    .subnets()
                    .iter()
                    .all(|s| public_ids.contains(s.as_str()));
            checks.check(all_public, "the service's tasks run in public subnets");
            let assign = net
                .assign_public_ip()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default();
            checks.check(
                assign == "ENABLED",
                format!("the service's tasks get a public IP (assignPublicIp {assign})"),
            );
            fargate_groups = net.security_groups().to_vec();
            for id in &fargate_groups {
                let Some(group) = find(id) else {
                    checks.check(
                        false,
                        format!("Fargate security group {id} exists in the VPC"),
                    );
                    continue;
                };
                let rules = ingress(&group);
                let only_alb = !rules.is_empty()
                    && rules.iter().all(|r| {
                        r.cidrs.is_empty()
                            && !r.groups.is_empty()
                            && r.groups.iter().all(|s| *s == alb_id)
                    });
                checks.check(
                    only_alb,
                    format!("Fargate security group {id} reachable only from the ALB's"),
                );
            }
        }
    }

    let rds = aws_sdk_rds::Client::new(config);
    let dbs = rds
        .describe_db_instances()
        .db_instance_identifier(&p.rds_instance)
        .send()
        .await
        .map_err(|e| Outcome::failed(explain("rds:DescribeDBInstances", &e)))?;
    match dbs.db_instances().first() {
        None => checks.check(false, format!("RDS instance {} exists", p.rds_instance)),
        Some(db) => {
            checks.check(
                db.publicly_accessible() != Some(true),
                "RDS is not publicly accessible",
            );
            for membership in db.vpc_security_groups() {
                let id = membership.vpc_security_group_id().unwrap_or_default();
                let Some(group) = find(id) else {
                    checks.check(false, format!("RDS security group {id} exists in the VPC"));
                    continue;
                };
                let rules = ingress(&group);
                let only_fargate = !rules.is_empty()
                    && rules.iter().all(|r| {
                        r.from == Some(5432)
                            && r.to == Some(5432)
                            && r.cidrs.is_empty()
                            && !r.groups.is_empty()
                            && r.groups.iter().all(|s| fargate_groups.contains(s))
                    });
                checks.check(
                    only_fargate,
                    format!("RDS security group {id} allows 5432 only from the Fargate group"),
                );
            }
        }
    }
    Ok(checks)
}
