//! The estimator against figures worked out by hand from the bundled us-east-1 prices.

use super::*;

fn plan_spec() -> CostSpec {
    CostSpec {
        region: "us-east-1".into(),
        expected_monthly: Some(45.0),
        aws: AwsSpec {
            tasks: 1,
            vcpu: 0.5,
            memory_gb: 1.0,
            architecture: "arm64".into(),
            spot: false,
            task_public_ip: true,
            rds_class: "db.t4g.micro".into(),
            rds_storage_gb: 20.0,
            multi_az: false,
            albs: 1,
            alb_azs: 2,
            alb_lcus: 1.0,
            nat_gateways: 0,
            nat_gb: 0.0,
            log_gb: 5.0,
            ecr_gb: 1.0,
            ssm_advanced: 0,
            secrets: 0,
            route53_zones: 0,
            services: Vec::new(),
            cache_node: None,
        },
        heroku: Some(HerokuSpec {
            dynos: [("standard-1x".to_string(), 1)].into(),
            postgres: Some("standard-0".into()),
            dyno_prices: Default::default(),
            addons: Default::default(),
        }),
    }
}

fn run(spec: &CostSpec) -> Estimate {
    let table = PriceTable::bundled("us-east-1").unwrap_or_else(|e| panic!("{e}"));
    let source = PriceSource::Bundled {
        read_on: table.read_on(),
    };
    estimate(spec, &table, source).unwrap_or_else(|e| panic!("{e}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn line(e: &Estimate, id: &str) -> f64 {
    e.items
        .iter()
        .find(|i| i.id == id)
        .and_then(|i| i.monthly)
        .unwrap_or(f64::NAN)
}

#[test]
fn the_plans_specification_comes_to_the_hand_computed_figure() {
    let e = run(&plan_spec());
    // Fargate ARM64: 1 task × (0.5 vCPU × $0.03238 + 1 GB × $0.00356) × 730 h
    let fargate = 1.0 * (0.5 * 0.03238 + 1.0 * 0.00356) * 730.0; // = 14.4175
                                                                 // RDS db.t4g.micro single-AZ: $0.016 × 730 h; gp3: 20 GB × $0.115
    let rds_instance = 0.016 * 730.0; // = 11.68
    let rds_storage = 20.0 * 0.115; // = 2.30
                                    // ALB: $0.0225 × 730 h, plus 1 LCU × $0.008 × 730 h
    let alb = 0.0225 * 730.0; // = 16.425
    let alb_lcu = 1.0 * 0.008 * 730.0; // = 5.84
                                       // Public IPv4: (1 task + 1 ALB × 2 AZs) = 3 × $0.005 × 730 h
    let ipv4 = 3.0 * 0.005 * 730.0; // = 10.95
                                    // ECR: 1 GB × $0.10; logs: 5 GB is within the 5 GB free tier
    let ecr = 1.0 * 0.10;
    let total = fargate + rds_instance + rds_storage + alb + alb_lcu + ipv4 + ecr; // = 61.7125
    for (id, want) in [
        ("fargate", fargate),
        ("rds_instance", rds_instance),
        ("rds_storage", rds_storage),
        ("alb", alb),
        ("alb_lcu", alb_lcu),
        ("public_ipv4", ipv4),
        ("ecr", ecr),
        ("logs_ingestion", 0.0),
        ("logs_storage", 0.0),
    ] {
        assert!(
            close(line(&e, id), want),
            "{id}: {} != {want}",
            line(&e, id)
        );
    }
    assert!(
        close(e.total, total) && close(e.total, 61.7125),
        "{}",
        e.total
    );
    assert!(e.complete);
    assert!(
        !e.items.iter().any(|i| i.id.starts_with("nat")),
        "no NAT line"
    );
    // Heroku today: standard-1x $25 + Postgres standard-0 $50.
    assert!(close(e.heroku_total, 75.0));
    assert!(close(e.difference, total - 75.0));
    // What the RDS step starts billing.
    let rds = e
        .monthly_of(&["rds_instance".into(), "rds_storage".into()])
        .unwrap_or_default();
    assert!(close(rds, 13.98), "{rds}");
    assert_eq!(usd(rds), "$13.98");
}

#[test]
fn the_public_ipv4_lint_fires_with_three_addresses_and_is_quiet_with_none() {
    let e = run(&plan_spec());
    let ids: Vec<&str> = e.lints.iter().map(|l| l.id).collect();
    assert_eq!(ids, vec!["public_ipv4"]);
    let lint = &e.lints[0];
    assert!(close(lint.monthly_delta, 10.95));
    assert!(
        lint.message.contains("3 public IPv4 addresses"),
        "{}",
        lint.message
    );
    assert!(
        lint.message.contains("states $45.00") && lint.message.contains("+$16.71"),
        "{}",
        lint.message
    );

    let mut private = plan_spec();
    private.aws.task_public_ip = false;
    private.aws.albs = 0;
    let e = run(&private);
    assert!(e.lints.is_empty(), "{:?}", e.lints);
    assert!(!e.items.iter().any(|i| i.id == "public_ipv4"));
}

#[test]
fn nat_multi_az_and_spot_lints_fire_on_their_case() {
    let mut nat = plan_spec();
    nat.aws.nat_gateways = 1;
    nat.aws.nat_gb = 10.0;
    let e = run(&nat);
    let lint = e
        .lints
        .iter()
        .find(|l| l.id == "nat_gateway")
        .unwrap_or_else(|| panic!("{:?}", e.lints));
    // $0.045 × 730 h + 10 GB × $0.045
    assert!(
        close(lint.monthly_delta, 0.045 * 730.0 + 10.0 * 0.045),
        "{}",
        lint.monthly_delta
    );

    let mut multi = plan_spec();
    multi.aws.multi_az = true;
    let e = run(&multi);
    let lint = e
        .lints
        .iter()
        .find(|l| l.id == "multi_az")
        .unwrap_or_else(|| panic!("{:?}", e.lints));
    // ($0.032 − $0.016) × 730 h + 20 GB × ($0.23 − $0.115)
    assert!(close(
        lint.monthly_delta,
        (0.032 - 0.016) * 730.0 + 20.0 * (0.23 - 0.115)
    ));
    assert!(close(line(&e, "rds_instance"), 0.032 * 730.0));

    let mut spot = plan_spec();
    spot.aws.spot = true;
    let e = run(&spot);
    let on_demand = (0.5 * 0.03238 + 0.00356) * 730.0;
    assert!(close(line(&e, "fargate"), on_demand * 0.5));
    let lint = e
        .lints
        .iter()
        .find(|l| l.id == "fargate_spot")
        .unwrap_or_else(|| panic!("{:?}", e.lints));
    assert!(close(lint.monthly_delta, -on_demand * 0.5));
    assert!(lint.message.contains("50–70%"), "{}", lint.message);

    for e in [run(&nat), run(&multi)] {
        assert!(!e.lints.iter().any(|l| l.id == "fargate_spot"));
    }
    assert!(!run(&spot)
        .lints
        .iter()
        .any(|l| l.id == "nat_gateway" || l.id == "multi_az"));
}

#[test]
fn unknown_names_list_the_known_ones_and_a_missing_price_is_unknown_not_zero() {
    let table = PriceTable::bundled("us-east-1").unwrap_or_else(|e| panic!("{e}"));
    let source = PriceSource::Bundled {
        read_on: table.read_on(),
    };
    let mut spec = plan_spec();
    // Not an RDS class's name (a typo): refused, naming the known ones.
    spec.aws.rds_class = "t4g.micro".into();
    let e = estimate(&spec, &table, source.clone())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t4g.micro") && e.contains("db.t4g.micro") && e.contains("db.t4g.medium"),
        "{e}"
    );
    // A real class the table has no price for: its line is unknown, the total incomplete.
    spec.aws.rds_class = "db.r7g.16xlarge".into();
    let e = estimate(&spec, &table, source.clone()).unwrap_or_else(|e| panic!("{e}"));
    let rds = e
        .items
        .iter()
        .find(|i| i.id == "rds_instance")
        .unwrap_or_else(|| panic!("{e:#?}"));
    assert_eq!(rds.monthly, None);
    assert!(
        rds.detail.contains("no price for rds_db.r7g.16xlarge_hour"),
        "{}",
        rds.detail
    );
    assert!(!e.complete);
    let mut spec = plan_spec();
    spec.heroku = Some(HerokuSpec {
        dynos: [("hobby".to_string(), 1)].into(),
        postgres: None,
        dyno_prices: Default::default(),
        addons: Default::default(),
    });
    let e = estimate(&spec, &table, source.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("hobby") && e.contains("standard-1x"), "{e}");

    let mut partial = table.clone();
    partial.prices.remove("ecr_gb_month");
    let e = estimate(&plan_spec(), &partial, source).unwrap_or_else(|e| panic!("{e}"));
    let ecr = e
        .items
        .iter()
        .find(|i| i.id == "ecr")
        .unwrap_or_else(|| panic!("no ecr line"));
    assert_eq!(ecr.monthly, None);
    assert!(
        ecr.detail.contains("no price for ecr_gb_month"),
        "{}",
        ecr.detail
    );
    assert!(!e.complete);
    assert!(close(e.total, 61.7125 - 0.10));
}

/// The app's other services, its Redis node and Heroku's add-ons, each a line of its own; a dyno
/// size the table lacks priced as the spec says (from Heroku's API), and an unknown cache node
/// an unknown line, never zero.
#[test]
fn other_services_a_redis_node_and_addons_are_lines_of_their_own() {
    let mut spec = plan_spec();
    spec.aws.services = vec![ServiceSpec {
        name: "worker".into(),
        tasks: 2,
        vcpu: 1.0,
        memory_gb: 2.0,
    }];
    spec.aws.cache_node = Some("cache.t4g.small".into());
    spec.heroku = Some(HerokuSpec {
        dynos: [("standard-1x".to_string(), 1), ("private-s".to_string(), 2)].into(),
        postgres: Some("standard-0".into()),
        dyno_prices: [("private-s".to_string(), 160.0)].into(),
        addons: [("heroku-redis:premium-0".to_string(), 15.0)].into(),
    });
    let e = run(&spec);
    let line = |label: &str| {
        e.items
            .iter()
            .chain(&e.heroku)
            .find(|i| i.label == label)
            .unwrap_or_else(|| panic!("no line {label}: {e:#?}"))
            .clone()
    };
    let worker = line("Fargate ARM64 `worker` (2 tasks)");
    assert!(close(
        worker.monthly.unwrap_or_default(),
        2.0 * (0.03238 + 2.0 * 0.00356) * 730.0
    ));
    assert!(close(
        line("ElastiCache for Redis cache.t4g.small")
            .monthly
            .unwrap_or_default(),
        0.032 * 730.0
    ));
    // 1 web task and 2 worker tasks hold public addresses, as the ALB's 2 AZs do.
    assert_eq!(spec.aws.public_ipv4(), 5);
    assert_eq!(line("Heroku private-s dyno × 2").monthly, Some(320.0));
    assert_eq!(
        line("Heroku add-on heroku-redis:premium-0").monthly,
        Some(15.0)
    );
    assert!(close(e.heroku_total, 25.0 + 320.0 + 50.0 + 15.0));
    spec.aws.cache_node = Some("cache.x9.huge".into());
    let e = run(&spec);
    let unknown = e
        .items
        .iter()
        .find(|i| i.id == "elasticache")
        .unwrap_or_else(|| panic!("{e:#?}"));
    assert_eq!(unknown.monthly, None);
    assert!(!e.complete);
}
