#!/usr/bin/env bash
# Validates docker-compose.yml without a Docker engine: `docker-compose config` parses the
# file against the Compose specification and resolves it. Installs Debian's docker-compose
# when no compose tool is present.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
elif command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "==> installing docker-compose (Debian package) to validate docker-compose.yml"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    compose=(docker-compose)
else
    echo "cannot validate docker-compose.yml: install docker-compose (or Docker with the compose plugin)" >&2
    exit 1
fi
echo "==> validating docker-compose.yml with ${compose[*]}"
"${compose[@]}" -f docker-compose.yml config --quiet
echo "==> validating it with the postgres profile and DATABASE_URL set"
resolved=$(mktemp)
trap 'rm -f "$resolved"' EXIT
COMPOSE_PROFILES=postgres DATABASE_URL=postgres://provisioner:provisioner@postgres:5432/provisioner \
    "${compose[@]}" -f docker-compose.yml config > "$resolved"
grep -q "image: postgres:16" "$resolved"
grep -q "DATABASE_URL: postgres://provisioner:provisioner@postgres:5432/provisioner" "$resolved"
echo "==> validating it with the cluster profile and AMQP_NODES set"
COMPOSE_PROFILES=cluster AMQP_NODES=rabbitmq:5672,rabbitmq-2:5672,rabbitmq-3:5672 \
    "${compose[@]}" -f docker-compose.yml config > "$resolved"
grep -q "hostname: rabbitmq-3" "$resolved"
[[ $(grep -c "10-partitions.conf" "$resolved") == 3 ]]
grep -q "AMQP_NODES: rabbitmq:5672,rabbitmq-2:5672,rabbitmq-3:5672" "$resolved"
echo "    docker-compose.yml is valid (all three ways)"
