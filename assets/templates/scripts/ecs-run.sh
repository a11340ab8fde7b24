#!/usr/bin/env bash
# Runs a one-off command as an ECS task (the replacement for `heroku run`), through cutover:
# it waits for the task, streams its CloudWatch log and exits with the container's exit code.
#   scripts/ecs-run.sh node dist/src/console.js generate-embeddings
#   scripts/ecs-run.sh yarn migration:run
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARG...]" >&2
  exit 2
fi
exec cutover ecs-run --cluster "${CLUSTER:-@@cluster@@}" --service "${SERVICE:-@@service@@}" -- "$@"
