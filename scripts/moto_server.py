"""moto's AWS API server, with its answers brought to the shapes AWS's API has.

moto copies a task definition's container `cpu` and `memory` into a task's containers as
numbers; the ECS API returns them as strings, and the Rust SDK (unlike boto3) refuses numbers
there. Everything else is moto as published.
"""

import sys

import moto.ecs.models as ecs_models
from moto.server import main

_container_init = ecs_models.Container.__init__


def _container_init_with_string_sizes(self, *args, **kwargs):
    _container_init(self, *args, **kwargs)
    for attr in ("cpu", "memory"):
        value = getattr(self, attr, None)
        if value is not None:
            setattr(self, attr, str(value))


ecs_models.Container.__init__ = _container_init_with_string_sizes

if __name__ == "__main__":
    sys.exit(main())
