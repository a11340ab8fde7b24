#!/usr/bin/env python3
"""The rehearsal's stand-ins: everything `scripts/rehearse` cannot run for real on one machine.

  standin.py docker|terraform|heroku|gh ARGS...   a labelled stand-in for that command line tool
  standin.py serve --port P                       the deployed app behind "the ALB", and "Fargate"
                                                  writing each ECS task's log lines
  standin.py app --port P                         the app in a local container (`docker run`)
  standin.py account                              the AWS account before Terraform: the domain's
                                                  hosted zone, pointing at Heroku

Every line a stand-in prints starts with "[stand-in <tool>]" and says what the real command
would have done. What is real in a rehearsal: the AWS API calls (moto), both PostgreSQL
databases, the HTTP checks and the journal.

The environment comes from scripts/rehearse: REHEARSAL_DIR, REHEARSAL_SOURCE_URL,
REHEARSAL_ALB_ADDRESS, REHEARSAL_RECORDING, CUTOVER_AWS_ENDPOINT_URL and the AWS test
credentials.
"""

import hashlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
REGION = os.environ.get("AWS_REGION", "us-east-1")


def rehearsal_dir() -> Path:
    return Path(os.environ["REHEARSAL_DIR"])


def say(tool: str, text: str) -> None:
    for line in text.splitlines() or [""]:
        print(f"[stand-in {tool}] {line}", flush=True)


def fail(tool: str, text: str, code: int = 1) -> NoReturn:
    print(f"[stand-in {tool}] error: {text}", file=sys.stderr, flush=True)
    sys.exit(code)


def aws(service: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=os.environ["CUTOVER_AWS_ENDPOINT_URL"],
        region_name=REGION,
    )


def state_file(name: str) -> Path:
    """What a stand-in remembers between calls (the rehearsal's heroku app, GitHub repository)."""
    return rehearsal_dir() / "standins" / name


def flag(args, name, default=None):
    """The value of `--name VALUE`, `--name=VALUE` or `-n VALUE` in args."""
    names = name if isinstance(name, tuple) else (name,)
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return default


# --- docker -----------------------------------------------------------------------------------


def docker(args):
    tool = "docker"
    if not args:
        fail(tool, "no command")
    command, rest = args[0], args[1:]
    if command == "build":
        context = Path(rest[-1] if rest else ".")
        dockerfile = context / "Dockerfile"
        if not dockerfile.is_file():
            fail(tool, f"{dockerfile}: no such file (scaffold it first)")
        text = dockerfile.read_text()
        stages = re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
        platform = flag(rest, "--platform", "(host)")
        tag = flag(rest, ("-t", "--tag"), "(untagged)")
        say(tool, f"would build {tag} for {platform} from {dockerfile}: nothing is built in a rehearsal")
        for image, name in stages:
            say(tool, f"  stage {name or '?'}: FROM {image}")
        for needle, what in [("USER ", "a non-root USER"), ("EXPOSE ", "EXPOSE"), ("--expose-gc", "CMD with --expose-gc")]:
            if needle not in text:
                fail(tool, f"the Dockerfile has no {what}")
        say(tool, f"checked: {len(stages)} stages, {what_platforms(text)}, USER, EXPOSE, CMD")
        return 0
    if command == "run":
        name = flag(rest, "--name", "container")
        env_file = flag(rest, "--env-file")
        if env_file and not Path(env_file).is_file():
            fail(tool, f"open {env_file}: no such file or directory", 125)
        publish = flag(rest, ("-p", "--publish"))
        if not publish:
            fail(tool, "the stand-in needs -p HOST:CONTAINER to play the container", 125)
        host_port = publish.split(":")[-2] if publish.count(":") >= 1 else publish
        container_id = hashlib.sha256(f"{name}{time.time()}".encode()).hexdigest()[:12]
        containers = rehearsal_dir() / "containers"
        containers.mkdir(parents=True, exist_ok=True)
        log = open(containers / f"{container_id}.log", "w")
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "app", "--port", host_port, "--name", name],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        (containers / f"{container_id}.pid").write_text(str(child.pid))
        print(f"[stand-in docker] would start {rest[-1]} as {name}; the local app stand-in answers on 127.0.0.1:{host_port}", file=sys.stderr, flush=True)
        print(container_id, flush=True)
        return 0
    if command == "stop":
        for container_id in rest:
            pid_file = rehearsal_dir() / "containers" / f"{container_id}.pid"
            if not pid_file.is_file():
                fail(tool, f"No such container: {container_id}")
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
            pid_file.unlink()
            print(container_id, flush=True)
        return 0
    say(tool, f"would run: docker {' '.join(args)}")
    return 0


def what_platforms(text: str) -> str:
    found = sorted(set(re.findall(r"--platform=(\S+)", text)))
    return "platform " + ", ".join(found) if found else "no platform"


# --- terraform --------------------------------------------------------------------------------

OUTPUT_NAMES = [
    "alb_dns_name",
    "alb_zone_id",
    "ecr_repository_url",
    "ecs_cluster_name",
    "ecs_service_name",
    "rds_endpoint",
    "deploy_role_arn",
]


def terraform(args):
    tool = "terraform"
    args = [a for a in args if not a.startswith("-chdir")]
    command = args[0] if args else ""
    tf_state = Path(".terraform") / "rehearsal-state.json"
    if command == "init":
        Path(".terraform").mkdir(exist_ok=True)
        say(tool, "Initializing the backend... (no providers downloaded in a rehearsal)")
        say(tool, "Terraform has been successfully initialized!")
        return 0
    if command == "plan":
        out = flag(args, "-out")
        if not out:
            fail(tool, "the stand-in plans only with -out")
        applied = set(load_json(tf_state, {}).get("resources", []))
        addresses = []
        for tf in sorted(Path(".").glob("*.tf")):
            for kind, name in re.findall(r'^resource\s+"([^"]+)"\s+"([^"]+)"', tf.read_text(), re.M):
                addresses.append((kind, name))
        if not addresses:
            fail(tool, "no resources in *.tf here")
        changes = []
        for kind, name in addresses:
            address = f"{kind}.{name}"
            actions = ["no-op"] if address in applied else ["create"]
            changes.append({"address": address, "type": kind, "name": name, "change": {"actions": actions}})
            if actions == ["create"]:
                say(tool, f"  # {address} will be created")
        plan = {"format_version": "1.2", "rehearsal": True, "resource_changes": changes}
        Path(out).write_text(json.dumps(plan, indent=1))
        creates = sum(1 for c in changes if c["change"]["actions"] == ["create"])
        say(tool, f"Plan: {creates} to add, 0 to change, 0 to destroy. (read from the scaffolded *.tf; nothing was asked of AWS)")
        return 0
    if command == "show":
        print(Path(args[-1]).read_text())
        return 0
    if command == "apply":
        plan = load_json(Path(args[-1]), None)
        if plan is None:
            fail(tool, f"cannot read the saved plan {args[-1]}")
        creates = [c["address"] for c in plan["resource_changes"] if c["change"]["actions"] == ["create"]]
        say(tool, f"applying {len(creates)} resources into the emulated AWS account (moto)")
        outputs = build_infrastructure(lambda line: say(tool, line))
        state = {"resources": sorted({c["address"] for c in plan["resource_changes"]}), "outputs": outputs}
        save_json(tf_state, state)
        say(tool, f"Apply complete! Resources: {len(creates)} added, 0 changed, 0 destroyed.")
        return 0
    if command == "output":
        state = load_json(tf_state, None)
        if state is None:
            fail(tool, "no state: apply first")
        print(json.dumps({k: {"value": v, "type": "string", "sensitive": False} for k, v in state["outputs"].items()}))
        return 0
    say(tool, f"would run: terraform {' '.join(args)}")
    return 0


def load_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return default


def save_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def build_infrastructure(report) -> dict:
    """What infra/*.tf creates, in moto: the network, ECS, the ALB, RDS, ECR, logs and IAM.

    Idempotent: an apply after a partial one completes it."""
    app, port = "gengar", 3000
    ec2, ecs, elb, rds, ecr, logs, iam = (
        aws(s) for s in ("ec2", "ecs", "elbv2", "rds", "ecr", "logs", "iam")
    )

    def tagged(kind, vpc_filter=None):
        filters = [{"Name": "tag:Name", "Values": [kind]}]
        if vpc_filter:
            filters.append({"Name": "vpc-id", "Values": [vpc_filter]})
        return filters

    vpcs = ec2.describe_vpcs(Filters=tagged(app))["Vpcs"]
    if vpcs:
        vpc = vpcs[0]["VpcId"]
    else:
        vpc = ec2.create_vpc(
            CidrBlock="10.0.0.0/16",
            TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": app}]}],
        )["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        report(f"aws_vpc.main: Creation complete [id={vpc}]")
    subnets = {s["Tags"][0]["Value"]: s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"] if s.get("Tags")}
    if len(subnets) < 4:
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        report(f"aws_internet_gateway.main: Creation complete [id={igw}]")
        for i, (kind, az) in enumerate([("public", "a"), ("public", "b"), ("private", "a"), ("private", "b")]):
            name = f"{app}-{kind}-{az}"
            subnet = ec2.create_subnet(
                VpcId=vpc,
                CidrBlock=f"10.0.{i}.0/24",
                AvailabilityZone=f"{REGION}{az}",
                TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": name}]}],
            )["Subnet"]["SubnetId"]
            if kind == "public":
                ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
            subnets[name] = subnet
            report(f"aws_subnet.{kind}[{az}]: Creation complete [id={subnet}]")
    public = [subnets[f"{app}-public-a"], subnets[f"{app}-public-b"]]
    private = [subnets[f"{app}-private-a"], subnets[f"{app}-private-b"]]

    def group(name, description):
        found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
        if found:
            return found[0]["GroupId"], False
        gid = ec2.create_security_group(GroupName=name, Description=description, VpcId=vpc)["GroupId"]
        report(f"aws_security_group.{name.split('-')[-1]}: Creation complete [id={gid}]")
        return gid, True

    alb_sg, new = group(f"{app}-alb", "ALB: HTTP and HTTPS from the internet")
    if new:
        for p in (80, 443):
            ec2.authorize_security_group_ingress(GroupId=alb_sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    task_sg, new = group(f"{app}-fargate", "Fargate tasks: the container port from the ALB only")
    if new:
        ec2.authorize_security_group_ingress(GroupId=task_sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "UserIdGroupPairs": [{"GroupId": alb_sg}]}])
    db_sg, new = group(f"{app}-rds", "RDS: PostgreSQL from the Fargate tasks only")
    if new:
        ec2.authorize_security_group_ingress(GroupId=db_sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": task_sg}]}])

    repo_name = "mentionai/gengar"
    try:
        repo = ecr.describe_repositories(repositoryNames=[repo_name])["repositories"][0]
    except ecr.exceptions.RepositoryNotFoundException:
        repo = ecr.create_repository(repositoryName=repo_name, imageScanningConfiguration={"scanOnPush": True})["repository"]
        report(f"aws_ecr_repository.app: Creation complete [id={repo_name}]")
    repo_url = repo["repositoryUri"]

    log_group = f"/ecs/{app}"
    if not logs.describe_log_groups(logGroupNamePrefix=log_group)["logGroups"]:
        logs.create_log_group(logGroupName=log_group)
        logs.put_retention_policy(logGroupName=log_group, retentionInDays=30)
        report(f"aws_cloudwatch_log_group.app: Creation complete [id={log_group}]")

    roles = {}
    for role, service in (("ecs-execution", "ecs-tasks.amazonaws.com"), ("ecs-task", "ecs-tasks.amazonaws.com"), ("deploy", None)):
        name = f"{app}-{role}"
        try:
            roles[role] = iam.get_role(RoleName=name)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            principal = {"Service": service} if service else {"Federated": f"arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"}
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole" if service else "sts:AssumeRoleWithWebIdentity"}]}
            roles[role] = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"]
            report(f"aws_iam_role.{role.replace('-', '_')}: Creation complete [id={name}]")
    if not iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        iam.create_open_id_connect_provider(Url="https://token.actions.githubusercontent.com", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["6938fd4d98bab03faadb97b34396831e3780aea1"])
        report("aws_iam_openid_connect_provider.github: Creation complete")

    if not ecs.describe_clusters(clusters=[app])["clusters"]:
        ecs.create_cluster(clusterName=app, capacityProviders=["FARGATE", "FARGATE_SPOT"])
        report(f"aws_ecs_cluster.main: Creation complete [id={app}]")

    lbs = [lb for lb in elb.describe_load_balancers()["LoadBalancers"] if lb["LoadBalancerName"] == app]
    if lbs:
        lb = lbs[0]
    else:
        lb = elb.create_load_balancer(Name=app, Subnets=public, SecurityGroups=[alb_sg], Scheme="internet-facing", Type="application")["LoadBalancers"][0]
        report(f"aws_lb.main: Creation complete [id={lb['LoadBalancerArn']}]")
    tgs = [t for t in elb.describe_target_groups()["TargetGroups"] if t["TargetGroupName"] == f"{app}-tg"]
    if tgs:
        tg = tgs[0]["TargetGroupArn"]
    else:
        tg = elb.create_target_group(Name=f"{app}-tg", Protocol="HTTP", Port=port, VpcId=vpc, TargetType="ip", HealthCheckPath="/health")["TargetGroups"][0]["TargetGroupArn"]
        elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
        report("aws_lb_target_group.app: Creation complete")
        report("aws_lb_listener.http: Creation complete")

    ecs.register_task_definition(
        family=app,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="512",
        memory="1024",
        runtimePlatform={"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
        executionRoleArn=roles["ecs-execution"],
        taskRoleArn=roles["ecs-task"],
        containerDefinitions=[{
            "name": app,
            "image": f"{repo_url}:latest",
            "essential": True,
            "cpu": 512,
            "memory": 1024,
            "portMappings": [{"containerPort": port, "protocol": "tcp"}],
            "command": ["node", "--expose-gc", "dist/src/main.js"],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": log_group, "awslogs-region": REGION, "awslogs-stream-prefix": "ecs"}},
        }],
    )
    services = [s for s in ecs.describe_services(cluster=app, services=[app])["services"] if s["status"] == "ACTIVE"]
    if not services:
        ecs.create_service(
            cluster=app,
            serviceName=app,
            taskDefinition=app,
            desiredCount=1,
            launchType="FARGATE",
            loadBalancers=[{"targetGroupArn": tg, "containerName": app, "containerPort": port}],
            healthCheckGracePeriodSeconds=120,
            deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
            networkConfiguration={"awsvpcConfiguration": {"subnets": public, "securityGroups": [task_sg], "assignPublicIp": "ENABLED"}},
        )
        # ECS registers the service's task in the target group; moto runs no tasks, so the
        # stand-in registers one address for it.
        elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": "10.0.0.10", "Port": port}])
        report(f"aws_ecs_service.app: Creation complete [id={app}]")

    try:
        db = rds.describe_db_instances(DBInstanceIdentifier=app)["DBInstances"][0]
    except rds.exceptions.DBInstanceNotFoundFault:
        rds.create_db_subnet_group(DBSubnetGroupName=app, DBSubnetGroupDescription="private subnets for RDS", SubnetIds=private)
        db = rds.create_db_instance(
            DBInstanceIdentifier=app,
            DBInstanceClass="db.t4g.micro",
            Engine="postgres",
            EngineVersion="16.4",
            AllocatedStorage=20,
            StorageType="gp3",
            MasterUsername="gengar",
            MasterUserPassword="rehearsal-only-password",
            DBName=app,
            DBSubnetGroupName=app,
            VpcSecurityGroupIds=[db_sg],
            PubliclyAccessible=False,
            MultiAZ=False,
            StorageEncrypted=True,
        )["DBInstance"]
        report(f"aws_db_instance.main: Creation complete [id={app}]")
    endpoint = db.get("Endpoint", {})
    return {
        # The rehearsal's ALB is the local app stand-in: the HTTP checks reach it there.
        "alb_dns_name": os.environ["REHEARSAL_ALB_ADDRESS"],
        "alb_zone_id": "Z35SXDOTRQ7X7K",
        "ecr_repository_url": repo_url,
        "ecs_cluster_name": app,
        "ecs_service_name": app,
        "rds_endpoint": f"{endpoint.get('Address', app)}:{endpoint.get('Port', 5432)}",
        "deploy_role_arn": roles["deploy"],
    }


# --- heroku -----------------------------------------------------------------------------------


def heroku(args):
    tool = "heroku"
    command = args[0] if args else ""
    app = flag(args, ("-a", "--app"), "?")
    state = load_json(state_file("heroku.json"), {"maintenance": False, "addons": ["heroku-postgresql"], "destroyed": False})
    if state["destroyed"] and command != "apps:destroy":
        fail(tool, f"Couldn't find that app ({app}): it was destroyed")
    if command == "config:get":
        key = args[1]
        if key != "DATABASE_URL":
            fail(tool, f"the stand-in knows DATABASE_URL only, not {key}")
        if "heroku-postgresql" not in state["addons"]:
            fail(tool, "DATABASE_URL is not set: the Postgres add-on was removed")
        print(os.environ["REHEARSAL_SOURCE_URL"], flush=True)
        return 0
    if command == "config":
        config = json.loads((HERE / "heroku-config.json").read_text())
        config["DATABASE_URL"] = os.environ["REHEARSAL_SOURCE_URL"]
        print(json.dumps(config, indent=2), flush=True)
        print(f"[stand-in heroku] the config vars of {app}, as `heroku config --json` prints them (rehearsal values)", file=sys.stderr)
        return 0
    if command in ("maintenance:on", "maintenance:off"):
        state["maintenance"] = command.endswith(":on")
        save_json(state_file("heroku.json"), state)
        say(tool, f"{'Enabling' if state['maintenance'] else 'Disabling'} maintenance mode for ⬢ {app}... done")
        say(tool, "(the real command freezes writes on Heroku; here the source database stays as it is)")
        return 0
    if command == "addons:destroy":
        if "--confirm" not in args:
            fail(tool, "destroying an add-on needs --confirm APP")
        addon = args[1]
        if addon not in state["addons"]:
            fail(tool, f"Couldn't find that add-on: {addon}")
        state["addons"].remove(addon)
        save_json(state_file("heroku.json"), state)
        say(tool, f"Destroying {addon} on ⬢ {app}... done (the rehearsal's source database is kept)")
        return 0
    if command == "apps:destroy":
        if flag(args, "--confirm") != app:
            fail(tool, f"destroying {app} needs --confirm {app}")
        state["destroyed"] = True
        save_json(state_file("heroku.json"), state)
        say(tool, f"Destroying ⬢ {app} (including all add-ons)... done")
        return 0
    say(tool, f"would run: heroku {' '.join(args)}")
    return 0


# --- gh ---------------------------------------------------------------------------------------

GITHUB_SECRETS = ["HEROKU_API_KEY", "HEROKU_APP_NAME", "HEROKU_EMAIL", "ROLLBAR_TOKEN"]


def gh(args):
    tool = "gh"
    state = load_json(state_file("github.json"), {"secrets": GITHUB_SECRETS, "runs": 0})
    words = positionals(args, {"-R", "--repo", "-b", "--body", "--workflow", "-L", "--limit", "--json", "-q", "--jq", "--ref"})
    if words[:2] == ["secret", "list"]:
        for name in state["secrets"]:
            print(f"{name}\tUpdated 2026-01-15", flush=True)
        return 0
    if words[:2] == ["secret", "set"]:
        name, body = words[2], flag(args, ("-b", "--body"), "")
        if not body:
            fail(tool, f"no value for {name}: the real command would prompt for it")
        if name not in state["secrets"]:
            state["secrets"].append(name)
        save_json(state_file("github.json"), state)
        print(f"✓ Set Actions secret {name} for {flag(args, ('-R', '--repo'), '?')} (stand-in: GitHub was not asked)", flush=True)
        return 0
    if words[:2] == ["secret", "delete"]:
        name = words[2]
        if name not in state["secrets"]:
            fail(tool, f"failed to delete secret {name}: HTTP 404")
        state["secrets"].remove(name)
        save_json(state_file("github.json"), state)
        print(f"✓ Deleted secret {name} (stand-in: GitHub was not asked)", flush=True)
        return 0
    if words[:2] == ["workflow", "run"]:
        state["runs"] += 1
        save_json(state_file("github.json"), state)
        say(tool, f"✓ Created workflow_dispatch event for {words[2]} (run {state['runs']})")
        return 0
    if words[:2] == ["run", "list"]:
        run_id = 1000 + state["runs"]
        if flag(args, ("-q", "--jq")):
            print(run_id)  # what `--jq '.[0].databaseId'` leaves
        elif "--json" in args:
            print(json.dumps([{"databaseId": run_id}]))
        else:
            print(f"{run_id}\tdeploy-backend")
        return 0
    if words[:2] == ["run", "watch"]:
        if words[2:] != [str(1000 + state["runs"])]:
            fail(tool, f"no run {' '.join(words[2:]) or '(none given)'}: `gh run list` gives the id")
        return play_workflow(state)
    say(tool, f"would run: gh {' '.join(args)}")
    return 0


def positionals(args, with_values):
    """The arguments that are not options (nor an option's value)."""
    words, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in with_values:
            skip = True
        elif not a.startswith("-"):
            words.append(a)
    return words


def play_workflow(state) -> int:
    """What deploy-backend.yml does, against the emulated account: push the image, then deploy."""
    tool = "gh"
    sha = hashlib.sha1(str(state["runs"]).encode()).hexdigest()[:12]
    say(tool, "deploy-backend · checkout · configure AWS credentials (OIDC) · ECR login")
    ecr = aws("ecr")
    digest = "sha256:" + hashlib.sha256(sha.encode()).hexdigest()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1234, "platform": {"os": "linux", "architecture": "arm64"}}],
    }
    for tag in (sha, "latest"):
        try:
            ecr.put_image(repositoryName="mentionai/gengar", imageManifest=json.dumps(index), imageManifestMediaType="application/vnd.oci.image.index.v1+json", imageTag=tag)
        except ecr.exceptions.RepositoryNotFoundException:
            fail(tool, "the ECR repository mentionai/gengar does not exist: apply the Terraform first")
        except ecr.exceptions.ImageAlreadyExistsException:
            pass
    say(tool, f"build and push linux/arm64: mentionai/gengar:{sha} and :latest (an image index put into ECR; nothing was built)")
    say(tool, "migrations as an ECS RunTask · force a new deployment · wait for stability: left to the runbook's steps in a rehearsal")
    say(tool, "✓ deploy-backend completed")
    return 0


# --- the app and Fargate ----------------------------------------------------------------------


class AppHandler(http.server.BaseHTTPRequestHandler):
    server_version = "gengar-rehearsal"

    def do_GET(self):  # noqa: N802 (the http.server API)
        if self.path == "/health":
            self.reply(200, {"status": "ok"})
        elif self.path.startswith("/api/"):
            self.reply(200, {"ok": True, "path": self.path})
        elif self.path == "/":
            self.reply(200, {"app": "gengar", "rehearsal": True})
        else:
            self.reply(404, {"statusCode": 404, "message": f"Cannot GET {self.path}"})

    def do_HEAD(self):  # noqa: N802
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("[app] " + (fmt % args) + "\n")


def serve_http(port: int):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), AppHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


TASK_LINES = {
    "migration:run": ["query: SELECT * FROM \"migrations\"", "No migrations are pending"],
    "generate-embeddings": ["generate-embeddings: 0 documents without an embedding", "done"],
    "generate-metadata": ["generate-metadata: 0 documents without metadata", "done"],
    "--help": ["Usage: console [options] [command]", "Commands: generate-embeddings, generate-metadata"],
}


def play_fargate(stop: threading.Event):
    """Plays the containers ECS would run (moto runs nothing): each task started writes its log
    lines to CloudWatch Logs, and the service's in-process cron writes its line once the
    service runs. It follows moto's request recording rather than polling the API, so the
    recording (replayed when a rehearsal resumes) holds only the rehearsal's own requests."""
    recording = Path(os.environ["REHEARSAL_RECORDING"])
    ecs, logs = aws("ecs"), aws("logs")
    seen: set[str] = set()
    with open(recording, "a+") as file:
        file.seek(0, os.SEEK_END)
        pending = ""
        while not stop.is_set():
            chunk = file.read()
            if not chunk:
                stop.wait(0.05)
                continue
            pending += chunk
            *lines, pending = pending.split("\n")
            targets = {target_of(line) for line in lines}
            try:
                if "RunTask" in targets:
                    for cluster in ecs.list_clusters()["clusterArns"]:
                        arns = ecs.list_tasks(cluster=cluster)["taskArns"]
                        new = [a for a in arns if a not in seen]
                        if new:
                            for task in ecs.describe_tasks(cluster=cluster, tasks=new)["tasks"]:
                                seen.add(task["taskArn"])
                                write_task_log(ecs, logs, task)
                if targets & {"CreateService", "UpdateService"}:
                    write_cron_line(logs)
            except Exception as error:  # the account not built yet, or moto stopping
                sys.stderr.write(f"[fargate] {error}\n")


def target_of(line: str) -> str:
    """The ECS operation of one recorded request ("" for anything else)."""
    try:
        headers = json.loads(line).get("headers", {})
    except ValueError:
        return ""
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
    prefix = "AmazonEC2ContainerServiceV20141113."
    return target[len(prefix):] if target.startswith(prefix) else ""


def write_task_log(ecs, logs, task):
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    container = definition["containerDefinitions"][0]
    options = container.get("logConfiguration", {}).get("options", {})
    group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
    if not group or not prefix:
        return
    overrides = task.get("overrides", {}).get("containerOverrides", [])
    command = next((o.get("command") for o in overrides if o.get("command")), None) or container.get("command", [])
    task_id = task["taskArn"].rsplit("/", 1)[-1]
    stream = f"{prefix}/{container['name']}/{task_id}"
    lines = [f"[rehearsal Fargate] the container would run: {' '.join(command)}"]
    lines += next((v for k, v in TASK_LINES.items() if k in command), [])
    put_lines(logs, group, stream, lines)


def write_cron_line(logs) -> None:
    put_lines(logs, "/ecs/gengar", "ecs/gengar/service", ["[Nest] 1  - LOG [UsageResetService] monthly usage reset: nothing due today"])


def put_lines(logs, group, stream, lines):
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
    )


def serve(args):
    port = int(flag(args, "--port"))
    stop = threading.Event()
    threading.Thread(target=play_fargate, args=(stop,), daemon=True).start()
    serve_http(port)


def app(args):
    serve_http(int(flag(args, "--port")))


def account(_args):
    """Before Terraform: the domain's hosted zone, with the record that points at Heroku."""
    r53 = aws("route53")
    zone = r53.create_hosted_zone(Name="example.com.", CallerReference="rehearsal")["HostedZone"]["Id"]
    r53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {"Name": "api.example.com.", "Type": "CNAME", "TTL": 300, "ResourceRecords": [{"Value": "gengar-api.herokuapp.com"}]}}]},
    )
    return 0


COMMANDS = {"docker": docker, "terraform": terraform, "heroku": heroku, "gh": gh, "serve": serve, "app": app, "account": account}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]) or 0)
