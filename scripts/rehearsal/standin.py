#!/usr/bin/env python3
"""The rehearsal's stand-ins: everything `scripts/rehearse` cannot run for real on one machine.

  standin.py docker|terraform|heroku|gh ARGS...   a labelled stand-in for that command line tool
  standin.py session-manager-plugin ...           the Session Manager plugin's port forward
  standin.py rds-tls --listen --upstream --cert --key   RDS's TLS in front of the "RDS" cluster
  standin.py app --port P                         the app in a local container (`docker run`)
  standin.py container [CMD...]                   the image as a task runs it: the app server, or
                                                  one of its commands (twin.py starts these)
  standin.py account                              the AWS account before Terraform: the domain's
                                                  hosted zone, pointing at Heroku
  standin.py heroku-api --listen H:P --answers F  the Heroku Platform API as `cutover init` reads
                                                  it: recorded-shape answers (path -> JSON)

Every line a stand-in prints starts with "[stand-in <tool>]" and says what the real command
would have done. `terraform` is the real one wherever the machine has it and the provider's
local mirror (REHEARSAL_TERRAFORM): then only a rehearsal override file is added beside the
scaffolded files. What is real in a rehearsal: the AWS API calls (moto), both PostgreSQL
databases, the HTTP checks, the journal; what AWS runs (tasks, the ALB, DNS) is twin.py.

The environment comes from scripts/rehearse: REHEARSAL_DIR, REHEARSAL_SOURCE_URL,
CUTOVER_AWS_ENDPOINT_URL, REHEARSAL_TERRAFORM and REHEARSAL_TF_CLI_CONFIG, and the AWS test
credentials.
"""

import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
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
        needles = [("USER ", "a non-root USER"), ("EXPOSE ", "EXPOSE"), ("CMD ", "CMD")]
        if "dist/src/main.js" in text:  # gengar's: the heap is collected on demand
            needles.append(("--expose-gc", "CMD with --expose-gc"))
        for needle, what in needles:
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
        # The container's environment: its --env-file, as docker gives it, and nothing of ours.
        env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": "/tmp"}
        if env_file:
            env.update(dotenv(Path(env_file).read_text()))
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "app", "--port", host_port, "--name", name],
            env=env,
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


def dotenv(text: str) -> dict:
    """KEY=VALUE lines of an env file, as `docker run --env-file` reads them."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value
    return env


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
    "rds_address",
    "deploy_role_arn",
]


# The AWS services the scaffolded infra/*.tf uses, pointed at the emulated account.
TERRAFORM_SERVICES = ["acm", "budgets", "cloudwatchlogs", "ec2", "ecr", "ecs", "elbv2", "iam", "rds", "route53", "ssm", "sts"]
OVERRIDE_FILE = "rehearsal_override.tf"


def rehearsal_override(endpoint: str) -> str:
    """The only thing a rehearsal adds to the scaffolded Terraform: a file Terraform merges over
    the user's (https://developer.hashicorp.com/terraform/language/files/override). It points the
    provider at the emulated account and replaces what moto cannot serve."""
    endpoints = "\n".join(f"    {name:<14} = \"{endpoint}\"" for name in TERRAFORM_SERVICES)
    return f"""# Written by scripts/rehearse for a rehearsal only: never apply this file for real.
# Terraform merges it over the scaffolded files, which stay exactly as they will be applied.

provider "aws" {{
  # The emulated account (moto on loopback), and no instance-metadata lookup.
  skip_metadata_api_check = true
  endpoints {{
{endpoints}
  }}
}}

# moto's Budgets API never reports a budget created, so the provider waits forever: the runbook's
# budget.ensure step creates the same budget through the API instead.
resource "aws_budgets_budget" "monthly" {{
  count = 0
}}
"""


def real_terraform(binary: str, args) -> int:
    """The real Terraform on the scaffolded files, with the rehearsal's override beside them and
    the provider from the local mirror (no network)."""
    text = rehearsal_override(os.environ["CUTOVER_AWS_ENDPOINT_URL"])
    path = Path(OVERRIDE_FILE)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if args and args[0] in ("init", "plan", "apply"):
        print(
            f"[rehearsal terraform] real Terraform ({binary}) on the scaffolded *.tf, with {OVERRIDE_FILE} "
            "pointing the AWS provider at the emulated account; the provider comes from the local mirror",
            file=sys.stderr,
            flush=True,
        )
    # One request at a time: the emulated account is recorded to be replayed on resume, and moto
    # draws its ids from one seeded stream — parallel requests would record in one order and
    # draw ids in another, so a replay could give a resource another id (and what refers to it,
    # such as the RDS instance's subnets, would fail to be created again).
    env = dict(
        os.environ,
        TF_CLI_CONFIG_FILE=os.environ["REHEARSAL_TF_CLI_CONFIG"],
        TF_CLI_ARGS_apply="-parallelism=1",
        TF_CLI_ARGS_plan="-parallelism=1",
        TF_CLI_ARGS_destroy="-parallelism=1",
    )
    os.execve(binary, [binary, *args], env)
    return 127


def terraform(args):
    real = os.environ.get("REHEARSAL_TERRAFORM")
    if real:
        return real_terraform(real, args)
    # No Terraform or no provider mirror on this machine: the older stand-in, which plans from
    # the files and builds a hand-written picture of them (scripts/rehearse says so).
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
    """Written whole or not at all: the twin reads Heroku's state on every request through the
    domain, and a half-written file must never read as "not in maintenance mode"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


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
    # As iam.tf: the task role may open ECS Exec's Session Manager channels (the tunnel to RDS).
    exec_policy = {"Version": "2012-10-17", "Statement": [{"Sid": "EcsExecChannels", "Effect": "Allow", "Action": [
        "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"], "Resource": "*"}]}
    iam.put_role_policy(RoleName=f"{app}-ecs-task", PolicyName="app-bucket", PolicyDocument=json.dumps(exec_policy))
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

    # As ssm.tf: one SecureString per key of .env.example, a placeholder until ssm.sync.
    ssm = aws("ssm")
    keys = sorted(dotenv(Path("../gengar/.env.example").read_text()))
    secrets = []
    for key in keys:
        name = f"/gengar/prod/{key}"
        try:
            ssm.put_parameter(Name=name, Value="set-by-cutover-ssm-sync", Type="SecureString", Overwrite=False)
        except ssm.exceptions.ParameterAlreadyExists:
            pass
        secrets.append({"name": key, "valueFrom": f"arn:aws:ssm:{REGION}:123456789012:parameter{name}"})
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
            "environment": [{"name": "PORT", "value": str(port)}],
            "secrets": secrets,
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
            enableExecuteCommand=True,
            deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
            networkConfiguration={"awsvpcConfiguration": {"subnets": public, "securityGroups": [task_sg], "assignPublicIp": "ENABLED"}},
        )
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
        "alb_dns_name": lb["DNSName"],
        "alb_zone_id": "Z35SXDOTRQ7X7K",
        "ecr_repository_url": repo_url,
        "ecs_cluster_name": app,
        "ecs_service_name": app,
        "rds_endpoint": f"{endpoint.get('Address', app)}:{endpoint.get('Port', 5432)}",
        "rds_address": endpoint.get("Address", app),
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
        if key == "DATABASE_URL" and "heroku-postgresql" not in state["addons"]:
            fail(tool, "DATABASE_URL is not set: the Postgres add-on was removed")
        config = heroku_config()
        if key not in config:
            fail(tool, f"{key} is not set on {app}")
        print(config[key], flush=True)
        return 0
    if command == "config":
        config = heroku_config()
        print(json.dumps(config, indent=2), flush=True)
        print(f"[stand-in heroku] the config vars of {app}, as `heroku config --json` prints them (rehearsal values)", file=sys.stderr)
        return 0
    if command in ("maintenance:on", "maintenance:off"):
        state["maintenance"] = command.endswith(":on")
        save_json(state_file("heroku.json"), state)
        say(tool, f"{'Enabling' if state['maintenance'] else 'Disabling'} maintenance mode for ⬢ {app}... done")
        if state["maintenance"]:
            say(tool, "(as on Heroku: the router answers 503 to every request; the dynos keep running, and keep their database connections, until scaled down)")
        return 0
    if command == "logs":
        # The router's lines the twin wrote for each request Heroku answered (the app's own
        # lines are not kept): the latest --num of them, as `heroku logs` prints them.
        num = int(flag(args, ("-n", "--num"), "100"))
        log = rehearsal_dir() / "standins" / "heroku-router.log"
        lines = log.read_text().splitlines() if log.is_file() else []
        for line in lines[-num:]:
            print(line, flush=True)
        return 0
    formation = heroku_formation(state)
    if command == "ps:scale":
        pairs = [a for a in args[1:] if "=" in a and not a.startswith("-")]
        if not pairs:
            # Without arguments Heroku prints the formation: what a rollback scales back to.
            print(" ".join(f"{kind}={count}:Standard-1X" for kind, count in formation.items()), flush=True)
            return 0
        # TYPE=QTY or TYPE=QTY:SIZE, as Heroku takes them (its own formation prints the second).
        sizes = {"standard-1x", "standard-2x", "performance-m", "performance-l", "basic", "eco"}
        for pair in pairs:
            kind, value = pair.split("=", 1)
            count, _, size = value.partition(":")
            if not count.isdigit():
                fail(tool, f"Invalid quantity for {kind}: {value}")
            if size and size.lower() not in sizes:
                fail(tool, f"No such size as {size}. Use eco, basic, standard-1x, standard-2x, performance-m, performance-l.")
            if kind not in formation:
                # As Heroku answers for a process type the app's Procfile does not declare.
                fail(tool, f"Couldn't find that process type ({kind}).")
        for pair in pairs:
            kind, value = pair.split("=", 1)
            formation[kind] = int(value.partition(":")[0])
        state["formation"] = formation
        state.pop("dynos", None)
        save_json(state_file("heroku.json"), state)
        print(f"Scaling dynos... done, now running {', '.join(f'{k} at {v}:Standard-1X' for k, v in formation.items())}", flush=True)
        say(tool, "(the rehearsal's twin starts or stops Heroku's dynos, and the in-process cron with the web dyno, within a second)")
        return 0
    if command == "ps":
        dynos = [
            {"type": kind, "name": f"{kind}.{i}", "state": "up", "size": "Standard-1X", "command": command_of(kind), "app": {"name": app}}
            for kind, count in formation.items()
            for i in range(1, count + 1)
        ]
        if "--json" in args:
            print(json.dumps(dynos, indent=2), flush=True)
        else:
            for dyno in dynos:
                print(f"=== {dyno['type']} ({dyno['size']}): {dyno['command']} (1)\n{dyno['name']}: up", flush=True)
            if not dynos:
                print(f"No dynos on ⬢ {app}", flush=True)
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


def shape_answers() -> dict:
    """The Heroku Platform API's answers of the rehearsed shape (REHEARSAL_SHAPE_DIR), or {}
    for the bundled gengar rehearsal."""
    shape = os.environ.get("REHEARSAL_SHAPE_DIR")
    return json.loads((Path(shape) / "heroku-api.json").read_text()) if shape else {}


def heroku_config() -> dict:
    """The app's config vars, as Heroku holds them: the rehearsal's values, each database
    attachment naming Heroku's database (which Heroku rotates)."""
    answers = shape_answers()
    app = os.environ.get("REHEARSAL_HEROKU_APP", "gengar-api")
    if answers:
        config = dict(answers[f"/apps/{app}/config-vars"])
        attached = [v for a in answers.get(f"/apps/{app}/addons", []) if a["addon_service"]["name"] == "heroku-postgresql" for v in a["config_vars"]]
        # Heroku Redis is not played: its URL leads nowhere (its data is never moved).
        for name, value in config.items():
            if value.startswith(("redis://", "rediss://")):
                config[name] = "rediss://:rehearsal-heroku-redis@127.0.0.1:9/0"
    else:
        config = json.loads((HERE / "heroku-config.json").read_text())
        attached = ["DATABASE_URL", "HEROKU_POSTGRESQL_ROSE_URL"]
    for name in attached:
        config[name] = os.environ["REHEARSAL_SOURCE_URL"]
    return config


def procfile_types() -> dict:
    """The process types of the rehearsal app's Procfile (type -> command), as Heroku reads it."""
    repo = os.environ.get("REHEARSAL_APP_REPO")
    procfile = Path(repo) / "Procfile" if repo else rehearsal_dir() / "gengar-repo" / "gengar" / "Procfile"
    if not procfile.is_file():
        procfile = HERE / "gengar-repo" / "gengar" / "Procfile"
    types = {}
    for line in procfile.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            kind, command = line.split(":", 1)
            # The release phase is no dyno: Heroku's formation has no `release`.
            if kind.strip() != "release":
                types[kind.strip()] = command.strip()
    return types or {"web": "node dist/src/main.js"}


def command_of(kind: str) -> str:
    return procfile_types().get(kind, "?")


def heroku_formation(state) -> dict:
    """How many dynos of each process type run: the web one at 1 until scaled (the Procfile's
    other types at 0), as the rehearsal's Heroku app starts."""
    formation = {kind: (1 if kind == "web" else 0) for kind in procfile_types()}
    app = os.environ.get("REHEARSAL_HEROKU_APP", "gengar-api")
    for dyno in shape_answers().get(f"/apps/{app}/formation", []):
        if dyno["type"] in formation:
            formation[dyno["type"]] = dyno["quantity"]
    if "dynos" in state:  # a rehearsal from before the formation was kept
        formation["web"] = int(state["dynos"])
    formation.update(state.get("formation") or {})
    return formation


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
        state["workflow"] = words[2] if len(words) > 2 else ""
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
        return play_actions_workflow(Path(".github/workflows") / state.get("workflow", "deploy.yml"), state)
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


EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def play_actions_workflow(path: Path, state) -> int:
    """The repository's own workflow file, played as GitHub Actions runs its one job: each
    `run:` step is run for real with bash (-e -o pipefail), the workflow's and the step's env,
    $GITHUB_OUTPUT read back into `steps.<id>.outputs`; the AWS CLI in them reaches the emulated
    account (AWS_ENDPOINT_URL). Each `uses:` action is played by what it does to the account
    (ACTIONS below): the image "build" puts an image index into ECR and keeps the files it was
    built from (REHEARSAL_DIR/images/<tag>: what a task of that image runs). A failing step
    stops the job there, as Actions does."""
    tool = "gh"
    if not path.is_file():
        fail(tool, f"could not find any workflow named {path.name} (in {path.parent})")
    import yaml  # PyYAML: the rehearsal's Python has it (moto needs it)

    workflow = yaml.safe_load(path.read_text())
    if len(workflow["jobs"]) != 1:
        fail(tool, f"{path}: the rehearsal plays a workflow of one job, not {len(workflow['jobs'])}")
    job_name, job = next(iter(workflow["jobs"].items()))
    unplayed = {"if", "continue-on-error", "working-directory", "shell"}
    for key in [k for k in ("defaults", "env", "if", "needs", "strategy") if k in job] + [
        f"{st.get('name', '?')}: {k}" for st in job["steps"] for k in st if k in unplayed
    ]:
        fail(tool, f"{path}: the rehearsal does not play `{key}`")
    sha = hashlib.sha1(f"{state['runs']}".encode()).hexdigest()
    context = {"github.sha": sha, "github.ref": "refs/heads/main"}
    outputs: dict = {}
    env_base = {k: str(v) for k, v in (workflow.get("env") or {}).items()}

    def expand(text: str, env: dict) -> str:
        def one(match):
            expr = match.group(1)
            if re.fullmatch(r"env\.\w+", expr):
                return env.get(expr[4:], "")
            step = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
            if step:
                return outputs.get(step.group(1), {}).get(step.group(2), "")
            if re.fullmatch(r"secrets\.\w+", expr):
                # GitHub never shows a secret's value: a stand-in word where one is set.
                return "rehearsal-secret" if expr[len("secrets."):] in state["secrets"] else ""
            if expr in context:
                return context[expr]
            fail(tool, f"{path}: the rehearsal cannot evaluate ${{{{ {expr} }}}}")
        return EXPRESSION.sub(one, text)

    say(tool, f"{workflow.get('name', path.stem)} · job {job_name} · {path} played step by step (run: steps for real; actions by what they do)")
    for number, step in enumerate(job["steps"], 1):
        name = step.get("name") or step.get("uses") or f"step {number}"
        env = dict(env_base)
        env.update({k: expand(str(v), env) for k, v in (step.get("env") or {}).items()})
        if "uses" in step:
            action = step["uses"].split("@", 1)[0]
            given = {k: expand(str(v), env) for k, v in (step.get("with") or {}).items()}
            if action not in ACTIONS:
                fail(tool, f"{name}: the rehearsal does not play the action {action}")
            say(tool, f"[{number}] {name} ({step['uses']})")
            try:
                result = ACTIONS[action](given, env) or {}
            except SystemExit:
                say(tool, f"X {name} failed: the job stops here")
                raise
        else:
            say(tool, f"[{number}] {name}")
            with open(rehearsal_dir() / "standins" / "github-output", "w") as out:
                out.write("")
            # A runner's environment: no variable of the operator's or of the rehearsal's own
            # (the databases' URLs) but the emulated account's credentials and endpoint.
            keep = ("PATH", "HOME", "LANG", "TMPDIR", "PYENV_ROOT", "PYENV_VERSION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "CUTOVER_AWS_ENDPOINT_URL")
            run_env = {k: os.environ[k] for k in keep if k in os.environ}
            run_env["AWS_PAGER"] = ""
            run_env.update(env)
            run_env["GITHUB_OUTPUT"] = str(rehearsal_dir() / "standins" / "github-output")
            run_env["GITHUB_SHA"] = sha
            code = subprocess.call(["bash", "-e", "-o", "pipefail", "-c", expand(step["run"], env)], env=run_env)
            if code != 0:
                say(tool, f"X {name} failed (exit {code}): the job stops here; no later step runs")
                fail(tool, f"{workflow.get('name', path.stem)} failed at {name!r}")
            result = dotenv((rehearsal_dir() / "standins" / "github-output").read_text())
        if step.get("id"):
            outputs[step["id"]] = result
    say(tool, f"✓ {workflow.get('name', path.stem)} completed")
    return 0


def action_checkout(_given, _env):
    say("gh", "  the repository as it is on this machine (the rehearsal's app repository)")


def action_aws_credentials(given, _env):
    say("gh", f"  OIDC: would assume {given.get('role-to-assume') or '(no role!)'}; the rehearsal's test credentials are used")
    if not given.get("role-to-assume"):
        fail("gh", "configure-aws-credentials: role-to-assume is empty (is AWS_ROLE_ARN set in the repository's secrets?)")


def action_ecr_login(_given, _env):
    return {"registry": f"123456789012.dkr.ecr.{REGION}.amazonaws.com"}


def action_nothing(_given, _env):
    say("gh", "  nothing to do in a rehearsal")


def action_build_push(given, _env):
    """docker/build-push-action: nothing is built; each tag gets an image index in ECR for the
    platforms asked, and the context's files are kept as that image's (images/<tag>)."""
    context = Path(given.get("context") or ".")
    platforms = [p.strip() for p in (given.get("platforms") or "linux/amd64").split(",") if p.strip()]
    tags = [t.strip() for t in (given.get("tags") or "").splitlines() if t.strip()]
    if not tags:
        fail("gh", "build-push-action: no tags")
    ecr = aws("ecr")
    manifests = []
    for platform in platforms:
        os_name, _, arch = platform.partition("/")
        digest = "sha256:" + hashlib.sha256(f"{tags[0]}{platform}".encode()).hexdigest()
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1234, "platform": {"os": os_name, "architecture": arch}})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    for ref in tags:
        repository, _, tag = ref.split("/", 1)[1].rpartition(":")
        try:
            ecr.put_image(repositoryName=repository, imageManifest=json.dumps(index), imageManifestMediaType="application/vnd.oci.image.index.v1+json", imageTag=tag)
        except ecr.exceptions.RepositoryNotFoundException:
            fail("gh", f"build-push-action: the ECR repository {repository} does not exist")
        except ecr.exceptions.ImageAlreadyExistsException:
            pass
        image = rehearsal_dir() / "images" / tag
        if image.exists():
            shutil.rmtree(image)
        shutil.copytree(context, image, ignore=shutil.ignore_patterns(".git", "node_modules", "infra", ".terraform"))
        say("gh", f"  pushed {ref} ({', '.join(platforms)}): an image index in ECR; nothing was built; its files kept as images/{tag}")


def action_render_task_definition(given, _env):
    """amazon-ecs-render-task-definition: the file with the container's image replaced."""
    definition = json.loads(Path(given["task-definition"]).read_text())
    containers = [c for c in definition["containerDefinitions"] if c["name"] == given["container-name"]]
    if not containers:
        fail("gh", f"render-task-definition: no container named {given['container-name']}")
    containers[0]["image"] = given["image"]
    out = rehearsal_dir() / "standins" / "task-definition.rendered.json"
    out.write_text(json.dumps(definition, indent=2))
    return {"task-definition": str(out)}


ACTIONS = {
    "actions/checkout": action_checkout,
    "aws-actions/configure-aws-credentials": action_aws_credentials,
    "aws-actions/amazon-ecr-login": action_ecr_login,
    "docker/setup-qemu-action": action_nothing,
    "docker/setup-buildx-action": action_nothing,
    "docker/build-push-action": action_build_push,
    "aws-actions/amazon-ecs-render-task-definition": action_render_task_definition,
}


# --- the app ---------------------------------------------------------------------------------
#
# What the scaffolded NestJS app does that the migration can get wrong: it connects to its
# DATABASE_URL (one pooled connection, held), /health runs a query and says which database it
# reached (the server's system identifier, as the scaffolded health module does), and every
# request to an API path writes a row. The one-off commands the runbook runs as ECS tasks do
# real work against DATABASE_URL.


def pg_connect(url: str):
    """A connection to a postgres:// URL (pg8000, pure Python), as a task in the VPC makes it:
    the host name resolved by the VPC's resolver (TWIN_RESOLVE, from twin.py; a name it does not
    know goes to the system's), the connection leaving from the task's address (TWIN_SOURCE),
    TLS verified for the host name when the URL asks for verify-full."""
    import socket
    import ssl
    from urllib.parse import unquote, urlsplit, parse_qs

    import pg8000.native

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    sslmode = (query.get("sslmode") or ["prefer"])[0]
    context = None
    if sslmode in ("require", "verify-ca", "verify-full"):
        context = ssl.create_default_context(cafile=(query.get("sslrootcert") or [None])[0])
        if sslmode == "require":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5432
    resolved = json.loads(os.environ.get("TWIN_RESOLVE") or "{}").get(f"{host}:{port}")
    address = (resolved.rsplit(":", 1)[0], int(resolved.rsplit(":", 1)[1])) if resolved else (host, port)
    source = os.environ.get("TWIN_SOURCE")
    sock = socket.create_connection(address, 10, (source, 0) if source else None)
    sock.settimeout(None)
    return pg8000.native.Connection(
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or "") or None,
        host=host,
        port=port,
        sock=sock,
        database=unquote(parts.path.lstrip("/")) or None,
        application_name=os.environ.get("DYNO") and "gengar (heroku " + os.environ["DYNO"] + ")" or "gengar",
        ssl_context=context,
        timeout=10,
    )


class Database:
    """The app's pool: one connection, opened on first use and again after an error."""

    def __init__(self, url):
        self.url = url
        self.lock = threading.Lock()
        self.connection = None

    def run(self, sql, **params):
        if not self.url:
            raise RuntimeError("DATABASE_URL is not set")
        with self.lock:
            try:
                if self.connection is None:
                    self.connection = pg_connect(self.url)
                return self.connection.run(sql, **params)
            except Exception:
                try:
                    if self.connection is not None:
                        self.connection.close()
                except Exception:
                    pass
                self.connection = None
                raise


def json_reply(handler, status, body):
    """A JSON answer from a http.server handler (the app's, the Platform API stand-in's)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class AppHandler(http.server.BaseHTTPRequestHandler):
    server_version = "gengar-rehearsal"
    database: Database

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.handle_request()

    def do_POST(self):  # noqa: N802
        self.handle_request()

    def handle_request(self):
        if self.path == "/up":
            # Rails' rails/health#show: 200 once the app booted; it asks no database.
            return self.reply(200, {"status": "up"})
        if self.path == "/health":
            try:
                system_identifier, name = self.database.run(
                    "SELECT s.system_identifier::text, current_database() FROM pg_control_system() s"
                )[0]
            except Exception as error:
                print(f"[Nest] ERROR [HealthController] database unreachable: {type(error).__name__}", flush=True)
                return self.reply(503, {"status": "error", "database": "unreachable"})
            return self.reply(200, {"status": "ok", "database": {"system_identifier": system_identifier, "name": name}})
        if self.path == "/api/notes" and self.command == "POST":
            # A write the app acknowledges with its id: the note and the request's page view in
            # one statement (one transaction), as the app's NotesController does.
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                text = str(body.get("body") or "")
            except ValueError:
                return self.reply(400, {"statusCode": 400, "message": "a JSON body is expected"})
            try:
                (note_id,) = self.database.run(
                    "WITH note AS (INSERT INTO notes (body) VALUES (:body) RETURNING id), "
                    "view AS (INSERT INTO page_views (path, viewed_at, referrer) VALUES (:path, now(), :referrer)) "
                    "SELECT id FROM note",
                    body=text,
                    path=self.path,
                    referrer=self.headers.get("Referer"),
                )[0]
            except Exception as error:
                print(f"[Nest] ERROR [ExceptionsHandler] {type(error).__name__}: {error}", flush=True)
                return self.reply(500, {"statusCode": 500, "message": "Internal server error"})
            return self.reply(200, {"id": str(note_id)})
        if self.path.startswith("/api/notes/") and self.command == "GET":
            note = self.path.rsplit("/", 1)[1]
            if not note.isdigit():
                return self.reply(400, {"statusCode": 400, "message": "Validation failed (numeric string is expected)"})
            try:
                rows = self.database.run("SELECT id, body, created_at::text FROM notes WHERE id = :id", id=int(note))
            except Exception as error:
                print(f"[Nest] ERROR [ExceptionsHandler] {type(error).__name__}: {error}", flush=True)
                return self.reply(500, {"statusCode": 500, "message": "Internal server error"})
            if not rows:
                return self.reply(404, {"statusCode": 404, "message": f"Note {note} not found"})
            return self.reply(200, {"id": str(rows[0][0]), "body": rows[0][1], "created_at": rows[0][2]})
        if self.path.startswith("/api/"):
            try:
                self.database.run(
                    "INSERT INTO page_views (path, viewed_at, referrer) VALUES (:path, now(), :referrer)",
                    path=self.path,
                    referrer=self.headers.get("Referer"),
                )
            except Exception as error:
                print(f"[Nest] ERROR [ExceptionsHandler] {type(error).__name__}: {error}", flush=True)
                return self.reply(500, {"statusCode": 500, "message": "Internal server error"})
            return self.reply(200, {"ok": True, "path": self.path})
        if self.path == "/":
            return self.reply(200, {"app": "gengar", "rehearsal": True})
        return self.reply(404, {"statusCode": 404, "message": f"Cannot GET {self.path}"})

    def do_HEAD(self):  # noqa: N802
        self.send_response(200 if self.path in ("/health", "/up") else 404)
        self.end_headers()

    reply = json_reply

    def log_message(self, fmt, *args):
        sys.stderr.write("[app] " + (fmt % args) + "\n")


def serve_app(host: str, port: int, rails: bool = False):
    """The app's server: `node dist/src/main.js` in the image (gengar), or Puma (the Rails
    shape): the same requests answered, /up as Rails' own health check."""
    AppHandler.database = Database(os.environ.get("DATABASE_URL"))
    server = http.server.ThreadingHTTPServer((host, port), AppHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if rails:
        print(f"Puma starting in single mode... * Listening on http://{host}:{port} (the rehearsal's Rails stand-in)", flush=True)
        server.serve_forever()
        return
    print(f"[Nest] LOG [NestApplication] Nest application successfully started on {host}:{port}", flush=True)
    # The in-process cron (@nestjs/schedule) says it ran: smoke-cron looks for this line.
    print("[Nest] LOG [UsageResetService] monthly usage reset: nothing due today", flush=True)
    try:
        AppHandler.database.run("SELECT 1")  # the pool connects at start, as TypeORM's does
    except Exception as error:
        print(f"[Nest] ERROR [TypeOrmModule] Unable to connect to the database: {type(error).__name__}", flush=True)
    server.serve_forever()


def app(args):
    """`docker run` of the image: the app on --port, with the environment docker gave it."""
    serve_app("127.0.0.1", int(flag(args, "--port")))


MIGRATIONS = [(1700000000000, "InitialSchema1700000000000"), (1730000000000, "AddDocumentEmbeddings1730000000000")]


def console_command(name):
    """A command of the image run against DATABASE_URL: its own lines, exit 1 on any error."""

    def wrap(work):
        def run() -> int:
            try:
                work(Database(os.environ.get("DATABASE_URL")))
                return 0
            except Exception as error:
                print(f"{name} failed: {type(error).__name__}: {error}", flush=True)
                return 1

        return run

    return wrap


@console_command("migration:run")
def migration_run(db):
    """`yarn migration:run`: TypeORM's migrations table in public, and the pending ones applied."""
    print("query: SELECT * FROM current_schema()", flush=True)
    db.run('CREATE TABLE IF NOT EXISTS public."migrations" ("id" SERIAL PRIMARY KEY, "timestamp" bigint NOT NULL, "name" varchar NOT NULL)')
    done = {row[0] for row in db.run('SELECT "name" FROM public."migrations"')}
    pending = [(ts, name) for ts, name in MIGRATIONS if name not in done]
    if not pending:
        print("No migrations are pending", flush=True)
    for ts, name in pending:
        db.run('INSERT INTO public."migrations" ("timestamp", "name") VALUES (:ts, :name)', ts=ts, name=name)
        print(f"Migration {name} has been executed successfully.", flush=True)


def migration_show() -> int:
    """`yarn migration:show` (TypeORM's migration:show): every migration, `[X] <id> <name>` when
    executed, `[ ] <name>` when pending; exit 1 when one is pending, 0 when none (and 1 on an
    error). Like TypeORM it creates the migrations table when there is none."""
    try:
        db = Database(os.environ.get("DATABASE_URL"))
        print("query: SELECT * FROM current_schema()", flush=True)
        db.run('CREATE TABLE IF NOT EXISTS public."migrations" ("id" SERIAL PRIMARY KEY, "timestamp" bigint NOT NULL, "name" varchar NOT NULL)')
        print('query: SELECT * FROM "migrations" "migrations" ORDER BY "id" DESC', flush=True)
        done = {row[1]: row[0] for row in db.run('SELECT "id", "name" FROM public."migrations"')}
    except Exception as error:
        print(f"migration:show failed: {type(error).__name__}: {error}", flush=True)
        return 1
    pending = False
    for _, name in MIGRATIONS:
        if name in done:
            print(f" [X] {done[name]} {name}", flush=True)
        else:
            pending = True
            print(f" [ ] {name}", flush=True)
    return 1 if pending else 0


@console_command("generate-embeddings")
def generate_embeddings(db):
    """The console command: an embedding for every document without one."""
    rows = db.run("SELECT id FROM documents WHERE embedding IS NULL ORDER BY id")
    for (doc_id,) in rows:
        db.run(
            "UPDATE documents SET embedding = (SELECT array_agg(((:id * 31 + g) % 997 / 997.0)::real) FROM generate_series(1, 1536) g)::text::heroku_ext.vector WHERE id = :id",
            id=doc_id,
        )
    print(f"generate-embeddings: {len(rows)} document(s) embedded", flush=True)


@console_command("generate-metadata")
def generate_metadata(db):
    (count,) = db.run("SELECT count(*) FROM documents WHERE title IS NULL OR title = ''")[0]
    print(f"generate-metadata: {count} document(s) without metadata", flush=True)


def container(args):
    """The image's entry point, as a Fargate task runs it: the app server (no command), or a
    command given by the task definition or a RunTask override."""
    if not args:
        host, _, port = os.environ.get("TWIN_LISTEN", "127.0.0.1:" + os.environ.get("PORT", "3000")).rpartition(":")
        serve_app(host, int(port))
        return 0
    line = " ".join(args)
    if args[0] in ("sh", "bash", "/bin/sh", "/bin/bash"):
        # `sh -c "exec CMD"` (the Dockerfile's CMD, a process's command, the release phase):
        # the shell would exec CMD, which is the app's own.
        inner = app_command_in(args)
        if inner is not None:
            return container(inner)
        os.execvp(args[0], args)
    # The Rails app (scripts/rehearsal/rails-app): its server, its Sidekiq worker, its release.
    words = args[2:] if args[:2] == ["bundle", "exec"] else args
    if words[:1] == ["puma"] or words[:2] in (["bin/rails", "server"], ["rails", "server"]):
        host, _, port = os.environ.get("TWIN_LISTEN", "127.0.0.1:" + os.environ.get("PORT", "3000")).rpartition(":")
        serve_app(host, int(port), rails=True)
        return 0
    if words[:1] == ["sidekiq"]:
        return sidekiq(words)
    if words[:2] in (["bin/rails", "db:migrate"], ["rails", "db:migrate"]):
        return rails_migrate()
    if "dist/src/main.js" in args:
        return container([])
    if args[:2] == ["yarn", "migration:run"]:
        return migration_run()
    if args[:2] == ["yarn", "migration:show"]:
        return migration_show()
    if args[:2] == ["node", "dist/src/console.js"]:
        if "generate-embeddings" in args:
            return generate_embeddings()
        if "generate-metadata" in args:
            return generate_metadata()
        if "--help" in args or len(args) == 2:
            print("Usage: console [options] [command]\nCommands: generate-embeddings, generate-metadata", flush=True)
            return 0
        print(f"error: unknown command '{' '.join(args[2:])}'", flush=True)
        return 1
    print(f'exec: "{args[0]}": executable file not found in $PATH ({line})', flush=True)
    return 127


APP_COMMANDS = ("bundle", "bin/rails", "rails", "puma", "sidekiq", "yarn", "node")


def app_command_in(args):
    """The app's own command in `sh -c "[exec] CMD ARGS"`, or None for any other shell text."""
    if len(args) != 3 or args[1] != "-c":
        return None
    try:
        words = shlex.split(args[2])
    except ValueError:
        return None
    if words[:1] == ["exec"]:
        words = words[1:]
    if not words or words[0] not in APP_COMMANDS or any(c in args[2] for c in ";&|$`<>"):
        return None
    return words


def image_root():
    """The files of the image this task runs (TWIN_IMAGE): what the workflow's build put there
    (REHEARSAL_DIR/images/<tag>), or REHEARSAL_IMAGE_ROOT (the repository itself, for Heroku's
    slug); None when the image was never pushed, as ECS cannot pull it."""
    if os.environ.get("REHEARSAL_IMAGE_ROOT"):
        return Path(os.environ["REHEARSAL_IMAGE_ROOT"])
    image = os.environ.get("TWIN_IMAGE", "")
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    root = Path(os.environ.get("TWIN_IMAGES") or rehearsal_dir() / "images") / tag
    return root if root.is_dir() else None


def rails_migrate() -> int:
    """`bin/rails db:migrate`: db/migrate's migrations (each file the SQL the Ruby migration
    would run: a stand-in, named so) applied in version order, each once, in a transaction of
    its own with its version in schema_migrations, as Rails does. The first that fails stops
    it, exit 1, and none after it runs."""
    root = image_root()
    if root is None:
        print(f"CannotPullContainerError: {os.environ.get('TWIN_IMAGE', '(no image)')}: not found", flush=True)
        return 1
    try:
        db = Database(os.environ.get("DATABASE_URL"))
        db.run("CREATE TABLE IF NOT EXISTS schema_migrations (version varchar PRIMARY KEY)")
        done = {row[0] for row in db.run("SELECT version FROM schema_migrations")}
    except Exception as error:
        print(f"rails aborted!\nActiveRecord::ConnectionNotEstablished: {type(error).__name__}: {error}", flush=True)
        return 1
    files = sorted((root / "db" / "migrate").glob("*.sql"))
    pending = [f for f in files if f.name.split("_", 1)[0] not in done]
    if not pending:
        print("bin/rails db:migrate: nothing to migrate (schema_migrations is current)", flush=True)
    for path in pending:
        version, _, rest = path.stem.partition("_")
        name = "".join(word.capitalize() for word in rest.split("_"))
        print(f"== {version} {name}: migrating ======", flush=True)
        started = time.time()
        try:
            db.run("BEGIN")
            for statement in [p.strip() for p in strip_sql_comments(path.read_text()).split(";") if p.strip()]:
                print(f"-- execute({statement[:70]!r})", flush=True)
                db.run(statement)
            db.run("INSERT INTO schema_migrations (version) VALUES (:v)", v=version)
            db.run("COMMIT")
        except Exception as error:
            try:
                db.run("ROLLBACK")
            except Exception:
                pass
            detail = error.args[0].get("M", str(error)) if error.args and isinstance(error.args[0], dict) else str(error)
            print("rails aborted!\nStandardError: An error has occurred, this and all later migrations canceled:\n", flush=True)
            print(f"PG::Error: ERROR:  {detail}", flush=True)
            return 1
        print(f"== {version} {name}: migrated ({time.time() - started:.4f}s) ======", flush=True)
    return 0


def strip_sql_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def sidekiq(words) -> int:
    """`bundle exec sidekiq -q QUEUE`: a worker with no port and no load balancer. It connects to
    DATABASE_URL and reads REDIS_URL as Sidekiq does when it boots, then works: every few
    seconds a job (a digest of the notes, read from the database), each logged."""
    queues = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-q", "--queue")] or ["default"]
    redis = os.environ.get("REDIS_URL", "")
    if not redis:
        print("Sidekiq: REDIS_URL is not set: cannot connect to Redis", flush=True)
        return 1
    where = redis.split("@", 1)[-1] if "@" in redis else redis.split("//", 1)[-1]
    print(f"Sidekiq stand-in starting: queues {', '.join(queues)}; Redis at {where} (the URL's password is not printed)", flush=True)
    db = Database(os.environ.get("DATABASE_URL"))
    signal.signal(signal.SIGTERM, lambda *_: (print("Sidekiq: shutting down (TERM)", flush=True), sys.exit(0)))
    jobs = 0
    while True:
        try:
            (notes,) = db.run("SELECT count(*) FROM notes")[0]
            jobs += 1
            print(f"Sidekiq: NotesDigestJob done (job {jobs}): {notes} notes", flush=True)
        except Exception as error:
            print(f"Sidekiq: NotesDigestJob failed: {type(error).__name__}: {error}", flush=True)
        time.sleep(3)


def account(_args):
    """Before Terraform: the domain's hosted zone, with the record that points at Heroku."""
    r53 = aws("route53")
    domain = os.environ.get("TWIN_DOMAIN", "api.example.com")
    zone_name = os.environ.get("REHEARSAL_ZONE", "example.com")
    heroku_app = os.environ.get("REHEARSAL_HEROKU_APP", "gengar-api")
    zone = r53.create_hosted_zone(Name=f"{zone_name}.", CallerReference="rehearsal")["HostedZone"]["Id"]
    r53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {"Name": f"{domain}.", "Type": "CNAME", "TTL": 300, "ResourceRecords": [{"Value": f"{heroku_app}.herokuapp.com"}]}}]},
    )
    return 0


def heroku_api(args):
    """The Heroku Platform API for `cutover init`: each path's recorded answer, to the bearer
    token in HEROKU_API_KEY only (401 otherwise, as Heroku answers), 404 for any other path."""
    listen = flag(args, "--listen")
    answers = json.loads(Path(flag(args, "--answers")).read_text())
    token = os.environ.get("HEROKU_API_KEY", "")
    host, _, port = listen.rpartition(":")

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            if not token or self.headers.get("Authorization") != f"Bearer {token}":
                return self.reply(401, {"id": "unauthorized", "message": "Invalid credentials provided."})
            if self.headers.get("Accept") != "application/vnd.heroku+json; version=3":
                return self.reply(400, {"id": "bad_request", "message": "Accept: application/vnd.heroku+json; version=3"})
            path = self.path.split("?", 1)[0]
            if path not in answers or path.startswith("_"):
                return self.reply(404, {"id": "not_found", "message": "Couldn't find that app."})
            self.reply(200, answers[path])

        reply = json_reply

        def log_message(self, fmt, *args):
            say("heroku-api", fmt % args)

    http.server.ThreadingHTTPServer((host, int(port)), Api).serve_forever()


# --- session-manager-plugin ---------------------------------------------------------------------


def session_manager_plugin(args):
    """The Session Manager plugin for a port-forwarding session, as cutover (like the AWS CLI)
    starts it: `session-manager-plugin AWS_SSM_START_SESSION_RESPONSE REGION StartSession
    PROFILE REQUEST ENDPOINT`, the StartSession response in that environment variable. It
    listens on the request's localPortNumber and carries each connection to where the session
    leads from the task: twin.py's StartSession says so in the stream URL (the real plugin
    opens a websocket there), and the connection leaves from the task's address."""
    import socket
    from urllib.parse import parse_qs, urlsplit

    tool = "session-manager"
    if args[:1] == ["--version"]:
        print("1.2.0.0 (rehearsal stand-in)")
        return 0
    if len(args) < 5 or args[2] != "StartSession":
        fail(tool, "usage: session-manager-plugin AWS_SSM_START_SESSION_RESPONSE REGION StartSession PROFILE REQUEST [ENDPOINT]", 2)
    raw = os.environ.get(args[0]) if args[0] == "AWS_SSM_START_SESSION_RESPONSE" else args[0]
    if not raw:
        fail(tool, f"{args[0]} is not set: no session to start")
    response = json.loads(raw)
    request = json.loads(args[4])
    session = response.get("SessionId", "?")
    query = parse_qs(urlsplit(response.get("StreamUrl", "")).query)
    forward = (query.get("twin-forward") or [""])[0]
    source = (query.get("twin-source") or [""])[0]
    parameters = request.get("Parameters", {})
    local = int(parameters["localPortNumber"][0])
    remote = f"{parameters['host'][0]}:{parameters['portNumber'][0]}"
    listener = socket.create_server(("127.0.0.1", local))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    say(tool, f"Starting session with SessionId: {session}")
    say(tool, f"Port {local} opened for sessionId {session}.")
    say(tool, "Waiting for connections...")

    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        client, _ = listener.accept()
        say(tool, f"Connection accepted for session [{session}]")
        if not forward:
            say(tool, f"Unable to connect to {remote}: it does not resolve from the task")
            client.close()
            continue
        try:
            ip, port = forward.rsplit(":", 1)
            upstream = socket.create_connection((ip, int(port)), 10, (source, 0) if source else None)
            # 10 s to connect; once connected, no idle limit (a long CREATE INDEX sends nothing
            # for minutes; Session Manager's own idle timeout is 20 minutes).
            upstream.settimeout(None)
        except OSError as error:
            say(tool, f"Unable to connect to {remote}: {error}")
            client.close()
            continue
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()


# --- RDS's TLS ---------------------------------------------------------------------------------


def rds_tls(args):
    """RDS always offers TLS; the rehearsal's PostgreSQL build has none. This front listens where
    "RDS" is reached, answers a client's SSLRequest with 'S' and a TLS handshake under the
    rehearsal CA's certificate for RDS's host name, and passes the decrypted stream to the
    cluster. A client that asks for no TLS is passed through as it is. Each connection to the
    cluster leaves from the client's own loopback address, so the server's log names who
    connected (a task, the tunnel's forwarder, cutover)."""
    import select
    import socket
    import ssl
    import struct

    tool = "rds-tls"
    listen, upstream, cert, key = flag(args, "--listen"), flag(args, "--upstream"), flag(args, "--cert"), flag(args, "--key")
    if not (listen and upstream and cert and key):
        fail(tool, "usage: rds-tls --listen HOST:PORT --upstream HOST:PORT --cert PEM --key PEM", 2)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    host, port = listen.rsplit(":", 1)
    server = socket.create_server((host, int(port)))
    up_host, up_port = upstream.rsplit(":", 1)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    say(tool, f"RDS's TLS on {listen} (certificate {cert}) in front of {upstream}")

    def relay(client, server_side):
        # One thread per connection: an SSL object is not to be read and written at once
        # from two threads. Bytes already decrypted (pending) are passed before waiting.
        try:
            while True:
                pending = isinstance(client, ssl.SSLSocket) and client.pending()
                ready = [client] if pending else select.select([client, server_side], [], [])[0]
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (server_side if source is client else client).sendall(data)
        except (OSError, ssl.SSLError):
            return
        finally:
            for s in (client, server_side):
                try:
                    s.close()
                except OSError:
                    pass

    def serve(client, peer):
        try:
            first = b""
            while True:
                head = client.recv(8, socket.MSG_WAITALL)
                if len(head) < 8:
                    client.close()
                    return
                length, code = struct.unpack("!ii", head)
                if length == 8 and code == 80877103:  # SSLRequest
                    client.sendall(b"S")
                    client = context.wrap_socket(client, server_side=True)
                    break
                if length == 8 and code == 80877104:  # GSSENCRequest: not offered
                    client.sendall(b"N")
                    continue
                first = head  # a startup message without TLS: passed through
                break
            server_side = socket.create_connection((up_host, int(up_port)), 10, (peer[0], 0))
            server_side.settimeout(None)
            if first:
                server_side.sendall(first)
        except (OSError, ssl.SSLError) as error:
            say(tool, f"connection from {peer[0]}: {error}")
            client.close()
            return
        relay(client, server_side)

    while True:
        client, peer = server.accept()
        threading.Thread(target=serve, args=(client, peer), daemon=True).start()


COMMANDS = {"rds-tls": rds_tls, "session-manager-plugin": session_manager_plugin, "docker": docker, "terraform": terraform, "heroku": heroku, "gh": gh, "app": app, "container": container, "account": account, "heroku-api": heroku_api}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]) or 0)
