# Shared by scripts/test and scripts/rehearse: installing what is missing, free loopback ports,
# and the local stand-ins for AWS (moto) and PostgreSQL. Sourced, not run.
# shellcheck shell=bash

log() { printf '==> %s\n' "$*" >&2; }

# Everything started registers its stop here; `cleanup` runs them newest first, on every exit.
CLEANUP=()
cleanup() {
  local status=$?
  trap - EXIT
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUP[i]}" || true
  done
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

need_cmd() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  if ! need_cmd apt-get; then
    log "cannot install $* (no apt-get)"; return 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# port_in_use PORT: something listens on 127.0.0.1:PORT.
port_in_use() {
  python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))) != 0)" "$1" 2>/dev/null
}

wait_for_port() {
  local port=$1 name=$2
  for _ in $(seq 1 150); do
    port_in_use "$port" && return 0
    sleep 0.2
  done
  log "$name did not start on port $port"; return 1
}

ensure_moto() {
  if ! python3 -c 'import moto.server, flask, boto3' >/dev/null 2>&1; then
    log "installing moto[server] (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  fi
  # The rehearsal's app stand-in connects to PostgreSQL (pure Python driver).
  if ! python3 -c 'import pg8000.native' >/dev/null 2>&1; then
    log "installing pg8000 (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'pg8000>=1.30'
  fi
}

# tf_mirror: the directory of a local filesystem mirror holding the hashicorp/aws provider
# (CUTOVER_TF_MIRROR, or the usual places), printed; nothing and status 1 when there is none.
tf_mirror() {
  local dir
  for dir in ${CUTOVER_TF_MIRROR:-} /opt/tf-plugins /usr/local/share/terraform/plugins \
    /usr/share/terraform/plugins "$HOME/.terraform.d/plugins" "$HOME/.local/share/terraform/plugins"; do
    if [ -d "$dir/registry.terraform.io/hashicorp/aws" ]; then
      printf '%s\n' "$dir"; return 0
    fi
  done
  dir=$(find / -maxdepth 6 -path '*registry.terraform.io/hashicorp/aws' -type d 2>/dev/null | head -n 1)
  [ -n "$dir" ] || return 1
  printf '%s\n' "${dir%/registry.terraform.io/hashicorp/aws}"
}

# tf_cli_config MIRROR FILE: a Terraform CLI configuration that installs hashicorp/aws from the
# mirror only (no registry, no network).
tf_cli_config() {
  cat >"$2" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$1"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/aws"]
  }
}
EOF
}

# start_moto PORT LOG [RECORDING]: moto's AWS API server on 127.0.0.1:PORT; with RECORDING,
# every request is appended to that file (moto's recorder) so the account can be replayed.
start_moto() {
  local port=$1 logfile=$2 recording=${3:-} pid
  ensure_moto
  # Services report their tasks running, so a deployment can complete.
  if [ -n "$recording" ]; then
    MOTO_ECS_SERVICE_RUNNING=1 MOTO_ENABLE_RECORDING=True MOTO_RECORDER_FILEPATH="$recording" \
      python3 "$SCRIPTS_DIR/moto_server.py" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 &
  else
    MOTO_ECS_SERVICE_RUNNING=1 python3 "$SCRIPTS_DIR/moto_server.py" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 &
  fi
  pid=$!
  CLEANUP+=("kill $pid 2>/dev/null; wait $pid 2>/dev/null")
  wait_for_port "$port" moto || { cat "$logfile" >&2; return 1; }
}

# psql_on PORT PASSWORD DB ARGS...: psql from the pgserver wheel against a local cluster.
psql_on() {
  local port=$1 password=$2 db=$3; shift 3
  PGPASSWORD=$password "$PG_BIN/psql" -q -X -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}

# psql_as PORT USER PASSWORD DB ARGS...: the same, as another role.
psql_as() {
  local port=$1 user=$2 password=$3 db=$4; shift 4
  PGPASSWORD=$password "$PG_BIN/psql" -q -X -h 127.0.0.1 -p "$port" -U "$user" -d "$db" -v ON_ERROR_STOP=1 "$@"
}

# start_pg DIR PORT PASSWORD: a PostgreSQL 16 + pgvector cluster, stopped at exit.
start_pg() {
  "$SCRIPTS_DIR/pg-cluster" start "$1" "$2" "$3"
  CLEANUP+=("'$SCRIPTS_DIR/pg-cluster' stop '$1'")
}

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
