"""moto's AWS API server, with its answers brought to the shapes AWS's API has.

moto copies a task definition's container `cpu` and `memory` into a task's containers as
numbers; the ECS API returns them as strings, and the Rust SDK (unlike boto3) refuses numbers
there. And RunTask of a Fargate task definition whose container leaves its memory to the task
(as AWS allows, and the scaffolded Terraform does) fails in moto adding None: counted as 0.
And moto gives every RDS instance one DbiResourceId, which the Terraform provider looks an
instance up by: with two instances in one account it finds the other one and fails. Here each
instance's id is its own, drawn from its identifier (so a replay gives the same). moto makes an
ElastiCache replication group's member clusters in name only; AWS makes them, and the provider
reads them: here they are made as AWS does, one cache cluster per member. moto computes no
CloudWatch percentile ("p99"): here it is the nearest rank of the values put in the period.
moto reads who signed a request from its Authorization header only: a presigned one (in the
query) is read as its signer's, as AWS does.

Requests are handled one at a time, in the order moto's recorder writes them down: ids come
from a seeded generator, so a recording replayed into a fresh server (a resumed rehearsal) gives
the same ids only if each request drew its ids in the order it was recorded. Terraform sends ten
at once. Everything else is moto as published, except in a rehearsal (CUTOVER_TWIN_DIR set): then
scripts/rehearsal/twin.py is loaded, which runs what AWS would run (ECS tasks, the ALB's health
checks, the domain as Route 53 resolves it) instead of letting moto claim it.
"""

import math
import os
import sys
import threading
from pathlib import Path

import moto.core.utils as core_utils

import hashlib

import moto.cloudwatch.models as cloudwatch_models
import moto.ecs.models as ecs_models
import moto.elasticache.models as elasticache_models
import moto.rds.models as rds_models
from moto.server import main

_container_init = ecs_models.Container.__init__


def _container_init_with_string_sizes(self, *args, **kwargs):
    _container_init(self, *args, **kwargs)
    for attr in ("cpu", "memory"):
        value = getattr(self, attr, None)
        if value is not None:
            setattr(self, attr, str(value))


ecs_models.Container.__init__ = _container_init_with_string_sizes


def _task_resource_requirements(task_definition):
    requirements = {"CPU": 0, "MEMORY": 0, "PORTS": [], "PORTS_UDP": []}
    for container in task_definition.container_definitions:
        requirements["CPU"] += container.get("cpu") or container.get("Cpu") or 0
        requirements["MEMORY"] += (
            container.get("memory")
            or container.get("Memory")
            or container.get("memoryReservation")
            or container.get("MemoryReservation")
            or 0
        )
        for mapping in container.get("portMappings") or container.get("PortMappings") or []:
            port = mapping.get("hostPort", mapping.get("HostPort"))
            if port is not None:
                requirements["PORTS"].append(port)
    return requirements


_db_instance_init = rds_models.DBInstance.__init__


def _db_instance_init_with_own_resource_id(self, *args, **kwargs):
    _db_instance_init(self, *args, **kwargs)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    digest = hashlib.sha256(
        f"{self.account_id}/{self.region}/{self.db_instance_identifier}".encode()
    ).digest()
    self.dbi_resource_id = "db-" + "".join(alphabet[b % 32] for b in digest[:26])


rds_models.DBInstance.__init__ = _db_instance_init_with_own_resource_id

_create_replication_group = elasticache_models.ElastiCacheBackend.create_replication_group


def _create_replication_group_with_members(self, *args, **kwargs):
    group = _create_replication_group(self, *args, **kwargs)
    for member in group.member_clusters:
        if member in self.cache_clusters:
            continue
        self.create_cache_cluster(
            cache_cluster_id=member,
            replication_group_id=group.replication_group_id,
            az_mode="single-az",
            preferred_availability_zone=None,
            num_cache_nodes=1,
            cache_node_type=kwargs.get("cache_node_type"),
            engine=kwargs.get("engine") or "redis",
            engine_version=kwargs.get("engine_version"),
            cache_parameter_group_name=kwargs.get("cache_parameter_group_name"),
            cache_subnet_group_name=kwargs.get("cache_subnet_group_name"),
            transit_encryption_enabled=kwargs.get("transit_encryption_enabled"),
            network_type=kwargs.get("network_type"),
            ip_discovery=kwargs.get("ip_discovery"),
            snapshot_name=None,
            preferred_maintenance_window=kwargs.get("preferred_maintenance_window"),
            port=kwargs.get("port"),
            notification_topic_arn=None,
            auto_minor_version_upgrade=kwargs.get("auto_minor_version_upgrade"),
            snapshot_retention_limit=kwargs.get("snapshot_retention_limit"),
            snapshot_window=kwargs.get("snapshot_window"),
            auth_token=kwargs.get("auth_token"),
            outpost_mode=None,
            preferred_outpost_arn=None,
            preferred_availability_zones=[],
            cache_security_group_names=[],
            security_group_ids=kwargs.get("security_group_ids") or [],
            tags=[],
            snapshot_arns=[],
            preferred_outpost_arns=[],
            log_delivery_configurations=[],
            cache_node_ids_to_remove=[],
            cache_node_ids_to_reboot=[],
        )
    return group


elasticache_models.ElastiCacheBackend.create_replication_group = _create_replication_group_with_members


# CloudWatch's percentile statistics ("p99", "p95.5"): moto computes Sum, Average, Minimum,
# Maximum and SampleCount only, and answers no value for a percentile. CloudWatch's percentile of
# a period is the value of that rank among the data points' values; here, the nearest rank of
# the raw values put (what put_metric_data gave), which is CloudWatch's figure for raw values.
_get_statistics_for_type = cloudwatch_models.Statistics.get_statistics_for_type


def _get_statistics_with_percentiles(self, stat):
    if isinstance(stat, str) and stat.startswith("p"):
        try:
            p = float(stat[1:])
        except ValueError:
            return _get_statistics_for_type(self, stat)
        values = sorted(self.metric_single_values_list)
        if not values or not 0 <= p <= 100:
            return None
        rank = max(1, min(len(values), math.ceil(p / 100 * len(values))))
        return values[rank - 1]
    return _get_statistics_for_type(self, stat)


cloudwatch_models.Statistics.get_statistics_for_type = _get_statistics_with_percentiles

import moto.moto_server.werkzeug_app as werkzeug_app
from urllib.parse import parse_qs

_dispatch = werkzeug_app.DomainDispatcherApplication.__call__


def _dispatch_presigned_sts(self, environ, start_response):
    """An STS request presigned with SigV4 in its query (an approval's proof of identity, a
    presigned GetCallerIdentity) is its signer's, as AWS reads it: moto looks for the service
    and the signer in the Authorization header only, and would answer it as S3's. Here the
    query's credential is read as that header would be. moto checks no signature, here or
    anywhere."""
    if "HTTP_AUTHORIZATION" not in environ:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        credential = query.get("X-Amz-Credential", [""])[0]
        if credential.split("/")[3:4] == ["sts"]:
            environ["HTTP_AUTHORIZATION"] = (
                f"AWS4-HMAC-SHA256 Credential={credential}, "
                f"SignedHeaders={query.get('X-Amz-SignedHeaders', [''])[0]}, "
                f"Signature={query.get('X-Amz-Signature', [''])[0]}"
            )
    return _dispatch(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _dispatch_presigned_sts

_handle = core_utils.convert_to_flask_response.__call__
_in_order = threading.Lock()


def _handle_in_recorded_order(self, *args, **kwargs):
    from flask import request

    # moto's own API (the replay among it) calls back into this server: not serialised.
    if request.path.startswith("/moto-api"):
        return _handle(self, *args, **kwargs)
    with _in_order:
        return _handle(self, *args, **kwargs)


core_utils.convert_to_flask_response.__call__ = _handle_in_recorded_order

ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(
    _task_resource_requirements
)

if __name__ == "__main__":
    if os.environ.get("CUTOVER_TWIN_DIR"):
        sys.path.insert(0, str(Path(__file__).resolve().parent / "rehearsal"))
        import twin

        twin.install()
    sys.exit(main())
