"""The rehearsal's twin of what AWS *runs*, loaded into moto's server process.

moto stores what the AWS APIs are told and answers for it; it runs nothing. Left alone it reports
every ECS task as exited 0, every target healthy, and the domain is only a record. This module
makes the rehearsal's real parts decide instead:

  Fargate   each task of a service, and each RunTask, runs the app stand-in (standin.py
            container ...) as a local process with the environment ECS would give it: the task
            definition's `environment` plus its `secrets`, read from SSM when the task starts
            (a task started before a parameter changed keeps the old value, as on AWS). Its
            output goes to CloudWatch Logs (the awslogs stream ECS would write); a one-off task's
            exit code is its command's. A new deployment (UpdateService) starts new tasks, then
            stops the old ones.
  the ALB   a service task is registered in the service's target group as 127.0.1.N:PORT; its
            health (DescribeTargetHealth) is the answer of its real health check path (the
            target group's). A service with no load balancer (a worker) only runs its tasks.
  CloudWatch the ALB's RequestCount, TargetResponseTime, 5xx (the target's, the ALB's own) and
            fixed responses for each request through the edge; every 10 s each target group's
            HealthyHostCount, and RDS's DatabaseConnections and FreeStorageSpace (read from the
            "RDS" cluster): what the soak's gate reads. Heroku's router lines for the requests
            "Heroku" answered go to standins/heroku-router.log (`heroku logs`).
  images    a task runs the files its image was "built" from (TWIN_IMAGE, TWIN_IMAGES: what the
            workflow stand-in kept for each tag it pushed), e.g. the migrations a release runs.
  the domain the "internet" edge (one loopback port, the rehearsal's public_url) resolves the
            domain through the emulated Route 53 zone for every request: an alias or CNAME to
            the ALB's name reaches a healthy target (or, when a listener rule answers every path
            with a fixed response — the way back's maintenance rule — that answer, as the ALB
            evaluates rules before its default action); a CNAME to *.herokuapp.com reaches "Heroku"
            (the app stand-in on Heroku's database, behind Heroku's router: 503 in maintenance
            mode); anything else does not resolve.

  the VPC  a task reaches RDS by its real host name: the emulated RDS instances' endpoints
            resolve (inside the "VPC" only) to the "RDS" cluster (TWIN_RDS_SERVER), and a task's
            connections leave from its own address (127.0.1.N).
  ECS Exec  a service's enableExecuteCommand is kept; its running tasks are listed and described
            as ECS does (the ExecuteCommandAgent, a runtime id) and ssm:StartSession to
            `ecs:<cluster>_<task>_<runtime>` is answered as Session Manager does: refused
            (TargetNotConnected) when the task has ECS Exec off or its task role lacks the
            ssmmessages channel permissions; otherwise the stream URL carries, for the rehearsal's
            session-manager-plugin stand-in, where the port forward leads from that task.

Every log line says `[twin ...]`. Configured by scripts/rehearse through the environment:
CUTOVER_TWIN_DIR (state), TWIN_EDGE_PORT, TWIN_DOMAIN, TWIN_RDS_SERVER, REHEARSAL_SOURCE_URL. Until the file
CUTOVER_TWIN_DIR/live exists (a resumed rehearsal replaying its recorded requests) nothing is
started: tasks replayed then are settled with the exit code they had.
"""

import ctypes
import http.client
import http.server
import fnmatch
import json
import os
import queue
import re
import secrets
import uuid
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import moto.ecs.models as ecs_models
import moto.elbv2.models as elbv2_models
from moto.ecs.models import ecs_backends
from moto.cloudwatch.models import cloudwatch_backends
from moto.elbv2.models import elbv2_backends
from moto.logs.models import logs_backends
from moto.core.exceptions import JsonRESTError
from moto.iam.models import iam_backends
from moto.rds.models import rds_backends
from moto.route53.models import route53_backends
from moto.ssm.models import ssm_backends
import moto.ecs.responses as ecs_responses
import moto.ssm.responses as ssm_responses

ACCOUNT = "123456789012"
REGION = os.environ.get("AWS_REGION", "us-east-1")
HERE = Path(__file__).resolve().parent
STANDIN = HERE / "standin.py"
DIR = Path(os.environ.get("CUTOVER_TWIN_DIR", "/nonexistent"))
LOCK = threading.RLock()


def say(what: str, text: str) -> None:
    sys.stderr.write(f"[twin {what}] {text}\n")
    sys.stderr.flush()


def live() -> bool:
    return (DIR / "live").exists()


def load(name: str, default):
    try:
        return json.loads((DIR / name).read_text())
    except (FileNotFoundError, ValueError):
        return default


def save(name: str, value) -> None:
    path = DIR / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


# --- processes: started from one long-lived thread, so that they die with this process -------

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_spawn_requests: "queue.Queue" = queue.Queue()


def _die_with_parent():
    # The death signal follows the thread that forked: hence the one spawner thread below.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()


def _spawner():
    while True:
        argv, env, done = _spawn_requests.get()
        try:
            done["process"] = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        except OSError as error:
            done["error"] = error
        done["event"].set()


def spawn(argv, env) -> subprocess.Popen:
    done = {"event": threading.Event()}
    _spawn_requests.put((argv, env, done))
    done["event"].wait()
    if "error" in done:
        raise done["error"]
    return done["process"]


def container_env(extra: dict, source: str = "", vpc: bool = True) -> dict:
    """What a container sees: its task's environment and nothing of the operator's, and the
    VPC's name resolution (the app stand-in reads TWIN_RESOLVE where a resolver would answer)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": "/tmp"}
    for name in ("PYENV_ROOT", "PYTHONPATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra)
    if vpc:
        env["TWIN_RESOLVE"] = json.dumps(vpc_hosts())
    if source:
        env["TWIN_SOURCE"] = source
    return env


def vpc_hosts() -> dict:
    """What resolves inside the VPC: each RDS instance's endpoint, to the "RDS" cluster."""
    server = os.environ.get("TWIN_RDS_SERVER", "")
    if not server:
        return {}
    hosts = {}
    for db in rds_backends[ACCOUNT][REGION].databases.values():
        hosts[f"{db.address}:{db.port or 5432}"] = server
    return hosts


# --- Fargate -------------------------------------------------------------------------------------


def ecs():
    return ecs_backends[ACCOUNT][REGION]


def ssm_value(value_from: str) -> str:
    """A task definition secret's value, as the ECS agent reads it when the task starts."""
    name = value_from
    if value_from.startswith("arn:"):
        name = "/" + value_from.split(":parameter/", 1)[1]
    parameter = ssm_backends[ACCOUNT][REGION].get_parameter(name)
    if parameter is None:
        raise LookupError(f"ResourceInitializationError: unable to pull secrets: parameter {name} not found")
    return parameter.decrypt(parameter.value) if parameter.parameter_type == "SecureString" else parameter.value


def task_environment(definition) -> dict:
    container = definition.container_definitions[0]
    env = {e["name"]: e["value"] for e in container.get("environment") or []}
    for secret in container.get("secrets") or []:
        env[secret["name"]] = ssm_value(secret["valueFrom"])
    return env


def log_stream_of(definition, task_id: str):
    container = definition.container_definitions[0]
    options = (container.get("logConfiguration") or {}).get("options") or {}
    group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
    if not group or not prefix:
        return None
    return group, f"{prefix}/{container['name']}/{task_id}"


def put_log(target, line: str) -> None:
    if target is None:
        return
    group, stream = target
    backend = logs_backends[ACCOUNT][REGION]
    with LOCK:
        try:
            if stream not in backend.groups[group].streams:
                backend.create_log_stream(group, stream)
            backend.put_log_events(group, stream, [{"timestamp": int(time.time() * 1000), "message": line}])
        except Exception as error:  # a group deleted under us: the line is lost, as on AWS
            say("fargate", f"cannot write to {group}/{stream}: {error}")


def pump(process: subprocess.Popen, target, echo: str) -> None:
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        put_log(target, line)
        sys.stderr.write(f"[{echo}] {line}\n")


def set_stopped(task, code, reason: str) -> None:
    with LOCK:
        task._twin_status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stopped_reason = reason
        task.stop_code = "EssentialContainerExited" if code is not None else "TaskFailedToStart"
        for container in task.containers:
            container.last_status = "STOPPED"
            if code is None:
                container.exitCode = None
            else:
                container.exitCode = code
                container.reason = reason


def record_exit(task_arn: str, code, reason: str) -> None:
    with LOCK:
        exits = load("exits.json", {})
        exits[task_arn] = {"code": code, "reason": reason}
        save("exits.json", exits)


def run_one_off(task, definition, command) -> None:
    """A RunTask: the command runs with the task's environment; its exit code is the task's."""
    task_id = task.task_arn.rsplit("/", 1)[-1]
    target = log_stream_of(definition, task_id)
    try:
        env = task_environment(definition)
    except LookupError as error:
        say("fargate", f"task {task_id}: {error}")
        set_stopped(task, None, str(error))
        record_exit(task.task_arn, None, str(error))
        return
    say("fargate", f"task {task_id} runs: {' '.join(command) or '(the image command)'}")
    # Its own address in the "VPC", as every Fargate task has (its connections leave from it).
    _next_address[0] += 1
    source = f"127.0.2.{_next_address[0] % 250 + 1}"
    env["TWIN_IMAGE"] = definition.container_definitions[0].get("image") or ""
    env["TWIN_IMAGES"] = str(DIR.parent / "images")
    process = spawn([sys.executable, str(STANDIN), "container", *command], container_env(env, source))
    ONE_OFF_PROCESSES[task.task_arn] = process
    with LOCK:
        task._twin_status = "RUNNING"
    pump(process, target, f"task {task_id[:8]}")
    code = process.wait()
    ONE_OFF_PROCESSES.pop(task.task_arn, None)
    reason = "Essential container in task exited"
    say("fargate", f"task {task_id} exited {code}")
    set_stopped(task, code, reason)
    record_exit(task.task_arn, code, reason)


_run_task = ecs_models.EC2ContainerServiceBackend.run_task


def run_task(self, *args, **kwargs):
    tasks = _run_task(self, *args, **kwargs)
    for task in tasks:
        task._twin_status = "PROVISIONING"
        if not live():
            # A replayed RunTask: it ran when it was first asked; settle it as it ended then.
            ended = load("exits.json", {}).get(task.task_arn, {"code": 0, "reason": "replayed"})
            set_stopped(task, ended["code"], ended["reason"])
            continue
        definition = self.describe_task_definition(task.task_definition_arn)
        overrides = (task.overrides or {}).get("containerOverrides") or []
        command = next((o.get("command") for o in overrides if o.get("command")), None)
        command = command or definition.container_definitions[0].get("command") or []
        threading.Thread(target=run_one_off, args=(task, definition, list(command)), daemon=True).start()
    return tasks


def _last_status(self):
    twin = getattr(self, "_twin_status", None)
    return twin if twin is not None else self.status


def _set_last_status(self, value):
    if getattr(self, "_twin_status", None) is not None:
        self._twin_status = value
    else:
        self.status = value


_stop_task = ecs_models.EC2ContainerServiceBackend.stop_task


def stop_task(self, cluster_str, task_str, reason):
    """StopTask of a one-off task: its process is stopped (SIGTERM, as the ECS agent does)."""
    task = _stop_task(self, cluster_str, task_str, reason)
    process = ONE_OFF_PROCESSES.pop(task.task_arn, None)
    if process is not None:
        process.terminate()
    return task


# --- services: tasks kept at the desired count, targets registered, deployments rolled --------

ONE_OFF_PROCESSES: dict = {}
_next_address = [0]


class ServiceTask:
    def __init__(self, service, definition, generation):
        _next_address[0] += 1
        n = _next_address[0]
        self.ip = f"127.0.1.{n % 250 + 1}"
        self.port = free_port(self.ip)
        self.generation = generation
        self.process = None
        self.definition = definition
        self.service = service
        self.exec_enabled = False
        # A task id as ECS writes them (32 hex digits), and the container's runtime id.
        self.task_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{service.arn}/{self.ip}:{self.port}").hex
        self.runtime_id = f"{self.task_id}-{self.port}"

    def start(self):
        # Not added to moto's task list: creating a moto Task draws on moto's seeded random ids
        # (its ENI), and a resumed rehearsal replays the recorded requests expecting the same ids.
        # ListTasks and DescribeTasks show it all the same (ExecTask).
        definition = self.definition
        task_id = self.task_id
        # As on ECS: a task keeps the ECS Exec setting its service had when it started.
        self.exec_enabled = bool(getattr(self.service, "enable_execute_command", False))
        try:
            env = task_environment(definition)
        except LookupError as error:
            say("fargate", f"service {self.service.name}: task {task_id} failed to start: {error}")
            return False
        env["TWIN_LISTEN"] = f"{self.ip}:{self.port}"
        env["TWIN_IMAGE"] = definition.container_definitions[0].get("image") or ""
        env["TWIN_IMAGES"] = str(DIR.parent / "images")
        command = definition.container_definitions[0].get("command") or []
        self.process = spawn([sys.executable, str(STANDIN), "container", *command], container_env(env, self.ip))
        target = log_stream_of(definition, task_id)
        threading.Thread(target=pump, args=(self.process, target, f"{self.service.name} {task_id}"), daemon=True).start()
        say("fargate", f"service {self.service.name}: task {task_id} on {self.ip}:{self.port} ({definition.family}:{definition.revision})")
        return True

    def stop(self, reason):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        say("fargate", f"service {self.service.name}: task on {self.ip}:{self.port} stopped: {reason}")


class ExecTask:
    """A service task as ListTasks and DescribeTasks show it (attributes as moto's Task)."""

    def __init__(self, t: "ServiceTask"):
        service = t.service
        self.id = t.task_id
        self.cluster_arn = service.cluster_arn
        self.task_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{service.cluster_name}/{t.task_id}"
        self.task_definition_arn = t.definition.arn
        self.last_status = "RUNNING"
        self.desired_status = "RUNNING"
        self.launch_type = "FARGATE"
        self.group = f"service:{service.name}"
        self.started_by = f"ecs-svc/{abs(hash(service.arn)) % 10**19}"
        self.enable_execute_command = t.exec_enabled
        self.tags = []
        self.containers = [{
            "name": t.definition.container_definitions[0].get("name"),
            "lastStatus": "RUNNING",
            "runtimeId": t.runtime_id,
            "taskArn": self.task_arn,
            "managedAgents": [{"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"}] if t.exec_enabled else [],
        }]


def running_service_tasks():
    with LOCK:
        return [t for tasks in RUNNING.values() for t in tasks if t.process is not None and t.process.poll() is None]


_list_tasks = ecs_models.EC2ContainerServiceBackend.list_tasks


def list_tasks(self, cluster_str=None, container_instance=None, family=None, started_by=None, service_name=None, desiredStatus=None):
    tasks = _list_tasks(self, cluster_str, container_instance, family, started_by, service_name, desiredStatus)
    if service_name or not (container_instance or family or started_by):
        if desiredStatus in (None, "RUNNING"):
            cluster = cluster_str.rsplit("/", 1)[-1] if cluster_str else None
            for t in running_service_tasks():
                if (cluster is None or t.service.cluster_name == cluster) and (not service_name or t.service.name == service_name.rsplit("/", 1)[-1]):
                    tasks.append(ExecTask(t))
    return tasks


_describe_tasks = ecs_models.EC2ContainerServiceBackend.describe_tasks


def describe_tasks(self, cluster_str, tasks):
    found = _describe_tasks(self, cluster_str, tasks)
    wanted = {str(t).rsplit("/", 1)[-1] for t in tasks}
    found.extend(ExecTask(t) for t in running_service_tasks() if t.task_id in wanted)
    return found


_create_service = ecs_responses.EC2ContainerServiceResponse.create_service


def create_service(self):
    result = _create_service(self)
    service = result._result["service"]
    service.enable_execute_command = bool(self._get_param("enableExecuteCommand", False))
    return result


_describe_services = ecs_models.EC2ContainerServiceBackend.describe_services


def describe_services(self, cluster_str, service_names_or_arns):
    """The services with the counts their tasks give (moto's would be whatever
    MOTO_ECS_SERVICE_RUNNING says, e.g. 1 running for a service that wants 0): running is the
    current deployment's live tasks; the rollout is COMPLETED once they are as many as wanted
    and no task of an older deployment runs, as `aws ecs wait services-stable` reads it."""
    result = _describe_services(self, cluster_str, service_names_or_arns)
    if not live():
        return result
    services = result[0] if isinstance(result, tuple) else result
    with LOCK:
        for service in services:
            if getattr(service, "status", None) != "ACTIVE" or not service.deployments:
                continue
            generation = generation_of(service)
            tasks = [t for t in RUNNING.get(service.arn, []) if t.process is not None and t.process.poll() is None]
            running = sum(1 for t in tasks if t.generation == generation)
            older = len(tasks) - running
            service.running_count = running
            service.pending_count = max(service.desired_count - running, 0)
            primary = service.deployments[0]
            primary.update({"desiredCount": service.desired_count, "runningCount": running, "pendingCount": service.pending_count})
            # An older deployment's tasks still running: ECS lists it beside the primary (ACTIVE).
            service.deployments = [primary] + ([{
                "id": "ecs-svc/older", "status": "ACTIVE", "desiredCount": 0, "runningCount": older, "pendingCount": 0,
                "failedTasks": 0, "launchType": primary.get("launchType"), "rolloutState": "COMPLETED",
                "taskDefinition": next((t.definition.arn for t in tasks if t.generation != generation), primary.get("taskDefinition")),
                "createdAt": primary.get("createdAt"), "updatedAt": primary.get("updatedAt"),
            }] if older else [])
            if running == service.desired_count and not older:
                if primary.get("rolloutState") != "COMPLETED":
                    service_event(service, f"(deployment {primary['id']}) deployment completed.")
                    service_event(service, "has reached a steady state.")
                primary["rolloutState"] = "COMPLETED"
                primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
            else:
                primary["rolloutState"] = "IN_PROGRESS"
                primary["rolloutStateReason"] = f"ECS deployment {primary['id']} in progress."
    return result


_update_service = ecs_models.EC2ContainerServiceBackend.update_service


def update_service(self, service_properties):
    service = _update_service(self, service_properties)
    # ECS's new PRIMARY deployment runs the task definition given; moto's keeps the old one's
    # name (what a deploy's check of the running image reads).
    if service.deployments and service.task_definition:
        service.deployments[0]["taskDefinition"] = service.task_definition
    if "enable_execute_command" in service_properties:
        service.enable_execute_command = bool(service_properties["enable_execute_command"])
    return service


# --- Session Manager: StartSession to an ECS task, as AWS answers it ----------------------------

EXEC_CHANNELS = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]


def role_allows(role_arn: str, actions) -> list:
    """The actions of `actions` the role's policies do not allow (inline and attached)."""
    iam = iam_backends[ACCOUNT]["global"]
    try:
        role = iam.get_role_by_arn(role_arn)
    except Exception:
        return list(actions)
    documents = list(role.policies.values())
    for policy in role.managed_policies.values():
        for version in getattr(policy, "versions", []):
            if version.version_id == policy.default_version_id:
                documents.append(version.document)
    allowed = []
    for document in documents:
        try:
            statements = json.loads(document).get("Statement", [])
        except (TypeError, ValueError):
            continue
        for statement in statements if isinstance(statements, list) else [statements]:
            if statement.get("Effect") != "Allow":
                continue
            listed = statement.get("Action", [])
            allowed.extend(listed if isinstance(listed, list) else [listed])
    return [a for a in actions if not any(fnmatch.fnmatchcase(a.lower(), p.lower()) for p in allowed)]


def not_connected(target: str, why: str):
    say("session-manager", f"StartSession {target} refused: {why}")
    return JsonRESTError("TargetNotConnected", f"{target} is not connected.")


def start_session(self):
    params = json.loads(self.body or "{}")
    target = params.get("Target", "")
    document = params.get("DocumentName", "")
    parameters = params.get("Parameters") or {}
    if not target.startswith("ecs:") or target.count("_") < 2:
        raise JsonRESTError("InvalidParameterException", f"the target {target!r} is not an ECS task target (ecs:<cluster>_<task>_<runtime id>)")
    cluster, task_id, runtime_id = target[4:].rsplit("_", 2)
    task = next((t for t in running_service_tasks() if t.task_id == task_id and t.service.cluster_name == cluster), None)
    if task is None or task.runtime_id != runtime_id:
        raise not_connected(target, "no running task has that id and runtime id")
    if not task.exec_enabled:
        raise not_connected(target, "the task runs with ECS Exec off (the service's enableExecuteCommand was false when it started)")
    missing = role_allows(task.definition.task_role_arn or "", EXEC_CHANNELS)
    if missing:
        raise not_connected(target, f"its task role ({task.definition.task_role_arn}) may not {', '.join(missing)}: the agent cannot open its channels")
    if document != "AWS-StartPortForwardingSessionToRemoteHost":
        raise JsonRESTError("InvalidDocument", f"the rehearsal plays only AWS-StartPortForwardingSessionToRemoteHost, not {document!r}")
    host = (parameters.get("host") or [""])[0]
    port = (parameters.get("portNumber") or ["5432"])[0]
    forward = vpc_hosts().get(f"{host}:{port}", "")
    session_id = f"rehearsal-{secrets.token_hex(8)}"
    say("session-manager", f"session {session_id}: task {task_id} ({task.ip}) forwards to {host}:{port}" + ("" if forward else " (which does not resolve in the VPC)"))
    stream = f"wss://ssmmessages.{REGION}.amazonaws.com/v1/data-channel/{session_id}?role=publish_subscribe&twin-forward={forward}&twin-source={task.ip}"
    return json.dumps({"SessionId": session_id, "StreamUrl": stream, "TokenValue": secrets.token_urlsafe(32)})


def terminate_session(self):
    params = json.loads(self.body or "{}")
    return json.dumps({"SessionId": params.get("SessionId", "")})


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


RUNNING: dict = {}  # service arn -> list of ServiceTask


def generation_of(service) -> str:
    deployment = service.deployments[0]["id"] if service.deployments else ""
    return f"{service.task_definition}|{deployment}"


def target_groups_of(service):
    return [lb.get("targetGroupArn") for lb in service.load_balancers or [] if lb.get("targetGroupArn")]


def service_event(service, message: str) -> None:
    """An entry of the service's event list, newest first, as ECS keeps its last 100: what
    `ecs.deploy` prints and the soak's pictures mark (a task started is a restart)."""
    from moto.core.utils import utcnow
    service.events.insert(0, {"id": str(uuid.uuid4()), "createdAt": utcnow(), "message": f"(service {service.name}) {message}"})
    del service.events[100:]


def reconcile() -> None:
    backend = ecs()
    elb = elbv2_backends[ACCOUNT][REGION]
    for service in list(backend.services.values()):
        if service.status != "ACTIVE" or not service.task_definition:
            continue
        tasks = RUNNING.setdefault(service.arn, [])
        generation = generation_of(service)
        current = [t for t in tasks if t.generation == generation and (t.process is None or t.process.poll() is None)]
        # A crashed task is replaced, as the service scheduler does.
        for t in [t for t in tasks if t.process is not None and t.process.poll() is not None]:
            deregister(elb, service, t)
            t.stop(f"Essential container in task exited ({t.process.returncode})")
            tasks.remove(t)
            service_event(service, f"has stopped 1 running tasks: (task {t.task_id}).")
        missing = service.desired_count - len(current)
        # Scaled down: the surplus tasks stop (newest first), as the service scheduler does.
        for t in current[service.desired_count:] if missing < 0 else []:
            deregister(elb, service, t)
            t.stop("scaled down")
            tasks.remove(t)
            service_event(service, f"has stopped 1 running tasks: (task {t.task_id}).")
        for _ in range(max(0, missing)):
            definition = backend.describe_task_definition(service.task_definition)
            t = ServiceTask(service, definition, generation)
            if t.start():
                tasks.append(t)
                service_event(service, f"has started 1 tasks: (task {t.task_id}).")
                for tg in target_groups_of(service):
                    elb.register_targets(tg, [{"Id": t.ip, "Port": t.port}])
        # Old deployment's tasks go once the new ones answer their target group's health check
        # (a service with no load balancer, a worker: once they run), or at once if none is new.
        old = [t for t in tasks if t.generation != generation]
        if old:
            new = [t for t in tasks if t.generation == generation]
            paths = [elb.target_groups[arn].health_check_path for arn in target_groups_of(service) if arn in elb.target_groups]

            def up(t):
                if not paths:
                    return t.process is not None and t.process.poll() is None
                return all(probe(t.ip, t.port, path)[0] == "healthy" for path in paths)

            if all(up(t) for t in new) or not new:
                for t in old:
                    deregister(elb, service, t)
                    t.stop("replaced by a new deployment")
                    tasks.remove(t)
                    service_event(service, f"has stopped 1 running tasks: (task {t.task_id}).")


def deregister(elb, service, t) -> None:
    for tg in target_groups_of(service):
        try:
            elb.deregister_targets(tg, [{"Id": t.ip, "Port": t.port}])
        except Exception:
            pass


def scheduler() -> None:
    published = 0.0
    while True:
        time.sleep(1)
        if not live():
            continue
        try:
            with LOCK:
                reconcile()
            heroku_dynos()
            if time.time() - published >= 10:
                published = time.time()
                publish_gauges()
        except Exception:
            say("fargate", "scheduler error:\n" + traceback.format_exc())


# --- CloudWatch: what AWS publishes about the ALB and RDS ---------------------------------------


def alb_dimension(lb) -> str:
    """The LoadBalancer dimension CloudWatch names an ALB by: its ARN's `app/NAME/ID`."""
    return lb.arn.split(":loadbalancer/", 1)[-1]


def publish(namespace: str, name: str, value, dims) -> None:
    """One data point, now, as AWS publishes its own metrics (moto's CloudWatch keeps it)."""
    try:
        with LOCK:
            cloudwatch_backends[ACCOUNT][REGION].put_metric_data(
                namespace, [{"MetricName": name, "Value": float(value), "Dimensions": [{"Name": k, "Value": v} for k, v in dims]}]
            )
    except Exception as error:
        say("cloudwatch", f"cannot publish {namespace} {name}: {error}")


FAILED_CHECKS: dict = {}


def publish_gauges() -> None:
    """Every 10 s: each ALB target group's healthy targets (as the ALB's own health checks see
    them), and RDS's connections and free storage (the "RDS" cluster's, read as its superuser:
    what RDS's own monitoring reads)."""
    with LOCK:
        groups = []
        for lb in elbv2_backends[ACCOUNT][REGION].load_balancers.values():
            for listener in lb.listeners.values():
                for action in listener.default_actions:
                    arn = action.data.get("TargetGroupArn") if action.type == "forward" else None
                    group = elbv2_backends[ACCOUNT][REGION].target_groups.get(arn) if arn else None
                    if group is not None:
                        targets = [(t["Id"], t["Port"]) for t in group.targets.values()]
                        groups.append((alb_dimension(lb), group.arn.rsplit(":", 1)[-1], group.health_check_path, targets))
        databases = [(db.db_instance_identifier, db.allocated_storage) for db in rds_backends[ACCOUNT][REGION].databases.values()]
    for lb, tg, path, targets in set((a, b, c, tuple(d)) for a, b, c, d in groups):
        healthy = 0
        for ip, port in targets:
            # As the ALB counts: unhealthy after 2 failed checks in a row (its threshold), not
            # after one slow answer on a busy machine.
            key = (tg, ip, port)
            FAILED_CHECKS[key] = 0 if probe(ip, port, path)[0] == "healthy" else FAILED_CHECKS.get(key, 0) + 1
            healthy += FAILED_CHECKS[key] < 2
        # Dimensions in this order: moto matches a query's only in the same order.
        publish("AWS/ApplicationELB", "HealthyHostCount", healthy, [("TargetGroup", tg), ("LoadBalancer", lb)])
    url = os.environ.get("REHEARSAL_RDS_URL")
    if not databases or not url:
        return
    try:
        import pg8000.native
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        connection = pg8000.native.Connection(
            user=unquote(parts.username or "postgres"), password=unquote(parts.password or "") or None,
            host=parts.hostname, port=parts.port or 5432, database="postgres", timeout=5,
        )
        try:
            (connections,) = connection.run("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")[0]
            (used,) = connection.run("SELECT sum(pg_database_size(datname))::float8 FROM pg_database")[0]
        finally:
            connection.close()
    except Exception as error:
        say("cloudwatch", f"cannot read RDS's figures: {type(error).__name__}: {error}")
        return
    for identifier, allocated in databases:
        dims = [("DBInstanceIdentifier", identifier)]
        publish("AWS/RDS", "DatabaseConnections", connections, dims)
        publish("AWS/RDS", "FreeStorageSpace", max(float(allocated or 0) * 1024**3 - float(used or 0), 0.0), dims)


# --- the ALB's health checks --------------------------------------------------------------------


def probe(ip: str, port, path: str = "/health") -> tuple:
    """A health check of one target, as the ALB makes it: GET of the target group's health
    check path, 200 is healthy."""
    try:
        connection = http.client.HTTPConnection(ip, int(port), timeout=3)
        connection.request("GET", path or "/health")
        status = connection.getresponse().status
        connection.close()
    except OSError as error:
        return "unhealthy", "Target.FailedHealthChecks", f"Health checks failed: {error}"
    if status == 200:
        return "healthy", None, None
    return "unhealthy", "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{status}]"


_health_for = elbv2_models.FakeTargetGroup.health_for


def health_for(self, target, ec2_backend):
    status = _health_for(self, target, ec2_backend)
    if status.status == "healthy" and str(target.get("Id", "")).startswith("127."):
        port = self.targets.get(target["Id"], {}).get("Port", target.get("Port"))
        status.status, status.reason, status.description = probe(target["Id"], port, self.health_check_path)
    return status


# --- Heroku: the app on Heroku's database, behind Heroku's router --------------------------------

HEROKU = {"process": None, "port": None}


_HEROKU_STATE = [{}]


def heroku_state() -> dict:
    """Heroku's app as the heroku stand-in left it; the last one read when the file is being
    replaced (never "no maintenance mode" because of a read at the wrong moment)."""
    try:
        _HEROKU_STATE[0] = json.loads((DIR.parent / "standins" / "heroku.json").read_text())
    except FileNotFoundError:
        _HEROKU_STATE[0] = {}
    except ValueError:
        pass
    return _HEROKU_STATE[0]


def heroku_dynos() -> None:
    state = heroku_state()
    formation = state.get("formation") or {}
    web = formation.get("web", state.get("dynos", 1))
    # One process plays the web dyno, with the in-process cron: scaled to 0, both stop.
    wanted = not state.get("destroyed") and web > 0
    process = HEROKU["process"]
    running = process is not None and process.poll() is None
    if wanted and not running:
        HEROKU["port"] = free_port("127.0.0.1")
        env = {"TWIN_LISTEN": f"127.0.0.1:{HEROKU['port']}", "PORT": str(HEROKU["port"]), "DYNO": "web.1"}
        if "heroku-postgresql" in state.get("addons", ["heroku-postgresql"]):
            env["DATABASE_URL"] = os.environ["REHEARSAL_SOURCE_URL"]
        HEROKU["process"] = spawn([sys.executable, str(STANDIN), "container"], container_env(env, vpc=False))
        threading.Thread(target=pump, args=(HEROKU["process"], None, "heroku web.1"), daemon=True).start()
        say("heroku", f"web.1 up on 127.0.0.1:{HEROKU['port']} (Heroku's database)")
    elif not wanted and running:
        process.terminate()
        process.wait()
        HEROKU["process"] = None
        say("heroku", "web.1 stopped (dynos scaled to 0, or the app destroyed)")


# --- the edge: the domain as Route 53 resolves it ----------------------------------------------


def router_log(request, status, service_ms, at) -> None:
    """The line Heroku's router logs for a request it answered (`heroku logs` prints them: the
    heroku stand-in reads this file), with the dyno's service time, or none when the router
    answered itself (H80, H14)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}+00:00"
    app = os.environ.get("REHEARSAL_HEROKU_APP", "gengar-api")
    dyno, service = ("web.1", f"{service_ms}ms") if service_ms is not None else ("", "")
    line = (
        f'{stamp} heroku[router]: {at} method={request.command} path="{request.path}" host={app}.herokuapp.com '
        f'request_id={uuid.uuid4()} fwd="{request.client_address[0]}" dyno={dyno} connect={"0ms" if dyno else ""} service={service} '
        f'status={status} bytes= protocol=https\n'
    )
    with LOCK:
        with open(DIR.parent / "standins" / "heroku-router.log", "a") as log:
            log.write(line)


def resolve(domain: str):
    """("alb", lb) / ("heroku", None) / (None, why): where the domain's record leads."""
    zones = route53_backends[ACCOUNT]["aws"].zones.values()
    name = domain.rstrip(".") + "."
    for zone in zones:
        if not name.endswith("." + zone.name.rstrip(".") + ".") and name != zone.name:
            continue
        for record in zone.rrsets:
            if record.name.rstrip(".") + "." != name or record.type not in ("A", "AAAA", "CNAME"):
                continue
            if record.alias_target:
                value = record.alias_target.get("DNSName", "")
            elif record.records:
                value = record.records[0]
            else:
                continue
            value = value.rstrip(".").lower()
            if value.startswith("dualstack."):
                value = value[len("dualstack."):]
            for lb in elbv2_backends[ACCOUNT][REGION].load_balancers.values():
                if lb.dns_name.lower() == value:
                    return "alb", lb
            if value.endswith(".herokuapp.com") or value.endswith(".herokudns.com"):
                return "heroku", None
            return None, f"{domain} points at {value}, which nothing in this rehearsal serves"
    return None, f"{domain} has no A, AAAA or CNAME record in the emulated Route 53"


def alb_fixed_response(lb):
    """The fixed response a listener rule answers every path with (the way back's maintenance
    rule, elb.maintenance), as the ALB evaluates rules: by priority, before the default action.
    Only the HTTPS listener's rules count: the edge plays the domain's https traffic."""
    for listener in sorted(lb.listeners.values(), key=lambda l: 0 if str(l.port) == "443" else 1):
        if listener.default_actions and all(a.type == "redirect" for a in listener.default_actions):
            continue
        rules = sorted(getattr(listener, "_non_default_rules", {}).values(), key=lambda r: int(r.priority))
        for rule in rules:
            every_path = any(
                c.get("Field") == "path-pattern"
                and ("/*" in (c.get("Values") or []) or "/*" in ((c.get("PathPatternConfig") or {}).get("Values") or []))
                for c in rule.conditions
            )
            fixed = [a for a in rule.actions if a.type == "fixed-response"]
            if every_path and fixed:
                config = fixed[0].data.get("FixedResponseConfig") or {}
                return int(config.get("StatusCode", "503")), config.get("MessageBody", "")
        return None
    return None


def alb_targets(lb):
    """The registered targets of the target groups the ALB's listeners forward to."""
    elb = elbv2_backends[ACCOUNT][REGION]
    groups = []
    for listener in lb.listeners.values():
        for action in listener.default_actions:
            if action.type == "forward":
                arn = action.data.get("TargetGroupArn")
                if arn:
                    groups.append(arn)
                for tg in (action.data.get("ForwardConfig") or {}).get("TargetGroups", []):
                    groups.append(tg.get("TargetGroupArn"))
    targets = []
    for arn in groups:
        group = elb.target_groups.get(arn)
        if group is not None:
            targets += [(t["Id"], t["Port"], group.health_check_path) for t in group.targets.values()]
    return targets


class Edge(http.server.BaseHTTPRequestHandler):
    server_version = "rehearsal-edge"

    def route(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        domain = os.environ.get("TWIN_DOMAIN", "")
        with LOCK:
            where, detail = resolve(domain)
            if where == "alb":
                fixed = alb_fixed_response(detail)
                candidates = alb_targets(detail)
        if where is None:
            return self.answer(502, f"[twin dns] {detail}\n")
        if where == "heroku":
            state = heroku_state()
            if state.get("destroyed"):
                return self.answer(404, "[twin heroku] no such app\n")
            if state.get("maintenance"):
                router_log(self, 503, None, 'at=info code=H80 desc="Maintenance mode"')
                return self.answer(503, "[twin heroku] Application offline for maintenance (H80)\n", via="heroku")
            if HEROKU["process"] is None or HEROKU["process"].poll() is not None:
                router_log(self, 503, None, 'at=error code=H14 desc="No web processes running"')
                return self.answer(503, "[twin heroku] Application error: no web dyno running (H14)\n", via="heroku")
            started = time.time()
            status = self.forward("127.0.0.1", HEROKU["port"], body, via="heroku")
            router_log(self, status, int((time.time() - started) * 1000), "at=info")
            return status
        lb = alb_dimension(detail)
        if fixed is not None:
            status, message = fixed
            publish("AWS/ApplicationELB", "HTTP_Fixed_Response_Count", 1, [("LoadBalancer", lb)])
            return self.answer(status, f"[twin alb] {detail.name}: {message}\n", via=f"alb {detail.name}")
        publish("AWS/ApplicationELB", "RequestCount", 1, [("LoadBalancer", lb)])
        healthy = [(ip, port) for ip, port, path in candidates if probe(ip, port, path)[0] == "healthy"]
        if not healthy:
            publish("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", 1, [("LoadBalancer", lb)])
            return self.answer(503, f"[twin alb] {detail.name}: no healthy target ({len(candidates)} registered)\n")
        ip, port = healthy[int(time.time() * 1000) % len(healthy)]
        started = time.time()
        status = self.forward(ip, port, body, via=f"alb {detail.name}")
        publish("AWS/ApplicationELB", "TargetResponseTime", time.time() - started, [("LoadBalancer", lb)])
        if status >= 500:
            publish("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", 1, [("LoadBalancer", lb)])
        return status

    def forward(self, host, port, body, via):
        """Forwards the request; returns the status answered."""
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            headers["X-Rehearsal-Via"] = via
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as error:
            self.answer(502, f"[twin {via}] the target did not answer: {error}\n")
            return 502
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("X-Rehearsal-Via", via)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return response.status

    def answer(self, status, text, via=None):
        data = text.encode()
        self.send_response(status)
        if via:
            self.send_header("X-Rehearsal-Via", via)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = route

    def log_message(self, fmt, *args):
        sys.stderr.write("[twin edge] " + (fmt % args) + "\n")


# --- installing it --------------------------------------------------------------------------------


def install() -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    ecs_models.Task.last_status = property(_last_status, _set_last_status)
    ecs_models.EC2ContainerServiceBackend.run_task = run_task
    ecs_models.EC2ContainerServiceBackend.stop_task = stop_task
    ecs_models.EC2ContainerServiceBackend.list_tasks = list_tasks
    ecs_models.EC2ContainerServiceBackend.describe_tasks = describe_tasks
    ecs_models.EC2ContainerServiceBackend.update_service = update_service
    ecs_models.EC2ContainerServiceBackend.describe_services = describe_services
    ecs_responses.EC2ContainerServiceResponse.create_service = create_service
    ssm_responses.SimpleSystemManagerResponse.start_session = start_session
    ssm_responses.SimpleSystemManagerResponse.terminate_session = terminate_session
    elbv2_models.FakeTargetGroup.health_for = health_for
    threading.Thread(target=_spawner, daemon=True, name="twin-spawner").start()
    threading.Thread(target=scheduler, daemon=True, name="twin-scheduler").start()
    port = int(os.environ.get("TWIN_EDGE_PORT", "0"))
    if port:
        edge = http.server.ThreadingHTTPServer(("127.0.0.1", port), Edge)
        threading.Thread(target=edge.serve_forever, daemon=True, name="twin-edge").start()
        say("edge", f"{os.environ.get('TWIN_DOMAIN')} as the emulated Route 53 resolves it, on 127.0.0.1:{port}")
