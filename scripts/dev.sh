#!/usr/bin/env bash
# The local stack in the foreground: vendor-sim (Hetzner, DigitalOcean, OpenStack and
# Compute Engine APIs on 127.0.0.1:8090), moto (a fake of AWS checking request signatures,
# on 127.0.0.1:8091; scripts/moto.sh), provisioner-host with the four plugins pointed at the
# simulator and the AWS plugin pointed at moto, order-api on 127.0.0.1:8080. Does the
# missing set-up first, orders one demo server at each vendor once the stack is ready and
# follows them to `active`, then keeps running until Ctrl-C, which stops everything it
# started.
#
# Every API call needs a token: the first run makes the tenant `demo` and its token, prints
# it and keeps it in .dev/token (curl -H "authorization: Bearer $(cat .dev/token)" ...).
#
# order-api and the host connect to RabbitMQ as broker users of their own, with only the
# permissions their side needs (scripts/rabbitmq-users.sh; passwords in
# .dev/rabbitmq-users.env). Where rabbitmqctl cannot reach the broker both use guest/guest
# and the script says so; AMQP_URL, when set, is used by both as it is.
#
# Usage: scripts/dev.sh [--no-demo]
# State (database, token, logs, plugin manifests, plugin secrets) lives in .dev/; delete it to
# start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

demo=1
[[ "${1:-}" == "--no-demo" ]] && demo=0

scripts/setup.sh
scripts/ensure-rabbitmq.sh

api_addr=127.0.0.1:8080
sim_addr=127.0.0.1:8090
moto_addr=127.0.0.1:8091
# An Amazon Linux 2 image (owner amazon) every region of moto has, by name as orders give it.
aws_image=amzn2-ami-hvm-2.0.20180810-x86_64-gp2
mkdir -p .dev/plugins

if [[ -n "${AMQP_URL:-}" ]]; then
    api_amqp_url=$AMQP_URL
    host_amqp_url=$AMQP_URL
elif AMQP_PASSWORDS_FILE=.dev/rabbitmq-users.env scripts/rabbitmq-users.sh > .dev/rabbitmq-users.log 2>&1; then
    # shellcheck source=/dev/null
    . .dev/rabbitmq-users.env
    api_amqp_url="amqp://${ORDER_API_AMQP_USER:-provisioner-order-api}:$ORDER_API_AMQP_PASSWORD@127.0.0.1:5672/%2f"
    host_amqp_url="amqp://${HOST_AMQP_USER:-provisioner-host}:$HOST_AMQP_PASSWORD@127.0.0.1:5672/%2f"
    echo "==> order-api and the host use broker users of their own (.dev/rabbitmq-users.log)"
else
    echo "==> cannot make the broker users (see .dev/rabbitmq-users.log; rabbitmqctl needs root" >&2
    echo "    or the rabbitmq user): order-api and the host fall back to guest/guest" >&2
    api_amqp_url="amqp://guest:guest@127.0.0.1:5672/%2f"
    host_amqp_url=$api_amqp_url
fi
# A plugin's secrets: only PLUGIN_SECRET_<VENDOR>_... names may be named in a manifest. The
# host reads them from files of those names in .dev/secrets (PLUGIN_SECRETS_DIR), re-read on
# change: write a new vendor's secret there while the stack runs, no restart needed.
PLUGIN_SECRET_HETZNER_TOKEN=sim-hetzner-token
PLUGIN_SECRET_DIGITALOCEAN_TOKEN=sim-digitalocean-token
PLUGIN_SECRET_OPENSTACK_PASSWORD=sim-openstack-password
(
    umask 077
    mkdir -p .dev/secrets
    for name in PLUGIN_SECRET_HETZNER_TOKEN PLUGIN_SECRET_DIGITALOCEAN_TOKEN PLUGIN_SECRET_OPENSTACK_PASSWORD; do
        printf '%s\n' "${!name}" > ".dev/secrets/$name"
    done
)
# write_manifest VENDOR SECRET_KEY SECRET_VARIABLE CONFIG_LINES: a plugin pointed at the
# simulator.
write_manifest() {
    cat > ".dev/plugins/$1.toml" <<TOML
# Written by scripts/dev.sh: the $1 plugin pointed at the local simulator.
vendor = "$1"
component = "$root/target/plugins/$1.wasm"
allowed_hosts = ["http://$sim_addr"]

[config]
$4

[secrets]
$2 = "$3"
TOML
}
write_manifest hetzner token PLUGIN_SECRET_HETZNER_TOKEN "base-url = \"http://$sim_addr/hetzner/v1\""
write_manifest digitalocean token PLUGIN_SECRET_DIGITALOCEAN_TOKEN "base-url = \"http://$sim_addr/digitalocean\""
write_manifest openstack password PLUGIN_SECRET_OPENSTACK_PASSWORD "auth-url = \"http://$sim_addr/openstack/identity/v3\"
username = \"provisioner\"
project-name = \"provisioner\""
# Compute Engine: a service account the simulator learns once it runs (its public key, below),
# whose key JSON (the throwaway key in plugins/gcp/testdata, which grants nothing anywhere
# else) is the plugin's secret; its token_uri is the simulator's token endpoint.
gcp_email=provisioner@sim-project.iam.gserviceaccount.com
write_manifest gcp service-account-key PLUGIN_SECRET_GCP_SERVICE_ACCOUNT_KEY "base-url = \"http://$sim_addr/gcp/compute/v1\"
regions = \"us-central1-a, us-central1-b, us-east1-b, europe-west1-b, europe-west3-a, asia-east1-a\"
sizes = \"e2-micro, e2-small, e2-medium, e2-standard-2, n2-standard-2\""
# json_lines FILE: the file's lines joined with \n, for a JSON string.
json_lines() { awk '{printf "%s\\n", $0}' "$1"; }
(
    umask 077
    cat > .dev/secrets/PLUGIN_SECRET_GCP_SERVICE_ACCOUNT_KEY <<JSON
{"type": "service_account", "project_id": "sim-project", "private_key_id": "dev-1",
 "private_key": "$(json_lines plugins/gcp/testdata/sim-service-account.pem)",
 "client_email": "$gcp_email", "token_uri": "http://$sim_addr/gcp/token"}
JSON
)
# Azure: an app registration the simulator learns once it runs (below), with its resource
# group, virtual network and subnet; its tenant, client id and secret are the plugin's
# secrets, the simulator its identity platform (authority) and Resource Manager.
azure_tenant=11111111-0000-4000-8000-000000000001
azure_client=22222222-0000-4000-8000-000000000002
azure_subscription=33333333-0000-4000-8000-000000000003
cat > .dev/plugins/azure.toml <<TOML
# Written by scripts/dev.sh: the azure plugin pointed at the local simulator.
vendor = "azure"
component = "$root/target/plugins/azure.wasm"
allowed_hosts = ["http://$sim_addr"]

[config]
base-url = "http://$sim_addr/azure"
authority = "http://$sim_addr/azure"
subscription-id = "$azure_subscription"
resource-group = "provisioner-rg"
virtual-network = "provisioner-vnet"
regions = "westeurope, northeurope, eastus"
sizes = "Standard_B1s, Standard_B2s"

[secrets]
tenant-id = "PLUGIN_SECRET_AZURE_TENANT_ID"
client-id = "PLUGIN_SECRET_AZURE_CLIENT_ID"
client-secret = "PLUGIN_SECRET_AZURE_CLIENT_SECRET"
TOML
(
    umask 077
    printf '%s\n' "$azure_tenant" > .dev/secrets/PLUGIN_SECRET_AZURE_TENANT_ID
    printf '%s\n' "$azure_client" > .dev/secrets/PLUGIN_SECRET_AZURE_CLIENT_ID
    printf '%s\n' sim-azure-secret > .dev/secrets/PLUGIN_SECRET_AZURE_CLIENT_SECRET
)
# The AWS plugin talks to moto, with the access key moto makes at each start (its secrets
# are written once moto is up).
cat > .dev/plugins/aws.toml <<TOML
# Written by scripts/dev.sh: the aws plugin pointed at moto (scripts/moto.sh).
vendor = "aws"
component = "$root/target/plugins/aws.wasm"
allowed_hosts = ["http://$moto_addr"]

[config]
endpoint = "http://$moto_addr"
regions = "us-east-1"
image-owners = "amazon"

[secrets]
access-key-id = "PLUGIN_SECRET_AWS_ACCESS_KEY_ID"
secret-access-key = "PLUGIN_SECRET_AWS_SECRET_ACCESS_KEY"
TOML

for addr in $api_addr $sim_addr $moto_addr; do
    if (exec 3<>/dev/tcp/${addr%:*}/${addr#*:}) 2>/dev/null; then
        echo "$addr is already in use: stop what listens there (another dev.sh?) and retry" >&2
        exit 1
    fi
done

if [[ ! -s .dev/token ]]; then
    echo "==> making the tenant 'demo' and its API token (.dev/token)"
    (umask 077 && target/debug/order-api tokens create --tenant demo --label scripts/dev.sh \
        --database-url sqlite://.dev/orders.db > .dev/token)
fi
token=$(cat .dev/token)
auth="authorization: Bearer $token"

pids=()
stop() {
    trap - EXIT INT TERM
    echo
    echo "==> stopping the stack"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

# Each program's output, prefixed with its name, also kept in .dev/<name>.log. The log
# pipeline ignores Ctrl-C so it outlives the programs and shows their shutdown.
run() {
    local name=$1
    shift
    "$@" > >(trap '' INT; tee -a ".dev/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
    pids+=($!)
}

echo "==> starting moto on $moto_addr (its log: .dev/moto.log)"
moto_pid=$(scripts/moto.sh --listen $moto_addr --credentials .dev/moto.env --log .dev/moto.log)
pids+=("$moto_pid")
(
    umask 077
    # shellcheck source=/dev/null
    . .dev/moto.env
    printf '%s\n' "$AWS_ACCESS_KEY_ID" > .dev/secrets/PLUGIN_SECRET_AWS_ACCESS_KEY_ID
    printf '%s\n' "$AWS_SECRET_ACCESS_KEY" > .dev/secrets/PLUGIN_SECRET_AWS_SECRET_ACCESS_KEY
)

export RUST_LOG=${RUST_LOG:-info,lapin=warn}
echo "==> starting vendor-sim, provisioner-host and order-api (Ctrl-C stops them)"
run sim env SIM_LISTEN_ADDR=$sim_addr SIM_HETZNER_TOKEN=$PLUGIN_SECRET_HETZNER_TOKEN \
    SIM_DIGITALOCEAN_TOKEN=$PLUGIN_SECRET_DIGITALOCEAN_TOKEN \
    SIM_OPENSTACK_PASSWORD=$PLUGIN_SECRET_OPENSTACK_PASSWORD \
    target/debug/vendor-sim
run host env AMQP_URL="$host_amqp_url" PLUGINS_DIR=.dev/plugins PLUGIN_SECRETS_DIR=.dev/secrets \
    target/debug/provisioner-host
# order-api runs the same plugins for their `validate` alone (no secrets, no network).
run api env AMQP_URL="$api_amqp_url" LISTEN_ADDR=$api_addr DATABASE_URL=sqlite://.dev/orders.db \
    VALIDATE_PLUGINS_DIR=.dev/plugins target/debug/order-api

for _ in $(seq 1 120); do
    curl -sf "http://$api_addr/readyz" >/dev/null 2>&1 && break
    sleep 0.5
done
if ! curl -sf "http://$api_addr/readyz" >/dev/null; then
    echo "the stack did not become ready; see the logs above and in .dev/" >&2
    exit 1
fi
# The simulator forgets its service accounts when it stops: register the GCP plugin's again.
curl -sf -o /dev/null -X POST "http://$sim_addr/_sim/gcp/service-accounts" \
    -H 'content-type: application/json' \
    -d "{\"client_email\": \"$gcp_email\", \"project_id\": \"sim-project\",
         \"public_key\": \"$(json_lines plugins/gcp/testdata/sim-service-account.pub.pem)\"}" ||
    echo "==> could not register the GCP service account at the simulator: gcp orders will fail" >&2
# Its Azure app registrations too (with the resource group, virtual network and subnet).
curl -sf -o /dev/null -X POST "http://$sim_addr/_sim/azure/apps" \
    -H 'content-type: application/json' \
    -d "{\"tenant_id\": \"$azure_tenant\", \"client_id\": \"$azure_client\",
         \"client_secret\": \"sim-azure-secret\", \"subscription_id\": \"$azure_subscription\",
         \"resource_group\": \"provisioner-rg\", \"location\": \"westeurope\",
         \"virtual_network\": \"provisioner-vnet\", \"subnet\": \"default\"}" ||
    echo "==> could not register the Azure app at the simulator: azure orders will fail" >&2

# One sample order per vendor, as the ready message shows them.
sample_orders=(
    '{"vendor":"hetzner","region":"fsn1","size":"cx22","image":"ubuntu-24.04","name":"web-1"}'
    '{"vendor":"digitalocean","region":"nyc3","size":"s-1vcpu-1gb","image":"ubuntu-24-04-x64","name":"web-2"}'
    '{"vendor":"openstack","region":"RegionOne","size":"m1.small","image":"ubuntu-24.04","name":"web-3"}'
    "{\"vendor\":\"aws\",\"region\":\"us-east-1\",\"size\":\"t3.micro\",\"image\":\"$aws_image\",\"name\":\"web-4\"}"
    '{"vendor":"gcp","region":"us-central1-a","size":"e2-small","image":"projects/debian-cloud/global/images/family/debian-12","name":"web-5"}'
    '{"vendor":"azure","region":"westeurope","size":"Standard_B1s","image":"Canonical:ubuntu-24_04-lts:server:latest","name":"web-6"}'
)
cat <<INFO

==> ready: order-api on http://$api_addr, simulator on http://$sim_addr, moto on http://$moto_addr
    API token of the tenant 'demo' (also in .dev/token): $token
    order a server:
INFO
for order in "${sample_orders[@]}"; do
    printf "      curl -i -X POST %s/v1/orders -H \"%s\" -H 'content-type: application/json' \\\\\n        -d '%s'\n" \
        "$api_addr" "$auth" "$order"
done
cat <<INFO
    follow it:         curl -N -H "$auth" $api_addr/v1/orders/<id>/events
    cancel it:         curl -X POST -H "$auth" $api_addr/v1/orders/<id>/cancel
    delete its server: curl -X DELETE -H "$auth" $api_addr/v1/orders/<id>
    list orders:       curl -H "$auth" $api_addr/v1/orders
    simulator:         curl $sim_addr/_sim/stats
    moto's instances:  (set -a; . .dev/moto.env; target/sdk-venv/bin/python -c \\
        'import boto3; print(boto3.client("ec2", region_name="us-east-1").describe_instances())')

INFO

# follow LOCATION: prints the order's status each time it changes until it settles.
follow() {
    local last="" order status
    for _ in $(seq 1 240); do
        order=$(curl -s -H "$auth" "http://$api_addr$1")
        status=$(printf '%s' "$order" | sed -n 's/^{"id":"[^"]*","tenant":"[^"]*","status":"\([a-z_]*\)".*/\1/p')
        if [[ "$status" != "$last" ]]; then
            echo "    $1: $status"
            last=$status
        fi
        [[ "$status" == active || "$status" == failed ]] && break
        sleep 0.25
    done
    server=$(printf '%s' "$order" | sed -n 's/.*"server":\({[^}]*}\).*/\1/p')
    echo "    $1: server $server"
}

if [[ $demo == 1 ]]; then
    suffix=$(date +%H%M%S)
    locations=()
    for body in \
        '"vendor":"hetzner","region":"fsn1","size":"cx22","image":"ubuntu-24.04"' \
        '"vendor":"digitalocean","region":"nyc3","size":"s-1vcpu-1gb","image":"ubuntu-24-04-x64"' \
        '"vendor":"openstack","region":"RegionOne","size":"m1.small","image":"ubuntu-24.04"' \
        '"vendor":"aws","region":"us-east-1","size":"t3.micro","image":"'"$aws_image"'"' \
        '"vendor":"gcp","region":"us-central1-a","size":"e2-small","image":"projects/debian-cloud/global/images/family/debian-12"' \
        '"vendor":"azure","region":"westeurope","size":"Standard_B1s","image":"Canonical:ubuntu-24_04-lts:server:latest"'; do
        vendor=$(printf '%s' "$body" | sed -n 's/^"vendor":"\([a-z]*\)".*/\1/p')
        curl -s -o /dev/null -D .dev/demo-headers -X POST "http://$api_addr/v1/orders" \
            -H "$auth" -H 'content-type: application/json' -d "{$body,\"name\":\"demo-$vendor-$suffix\"}"
        location=$(grep -i '^location:' .dev/demo-headers | tr -d '\r' | awk '{print $2}')
        echo "==> demo: ordered a server at $vendor: $(head -n 1 .dev/demo-headers | tr -d '\r'), Location: $location"
        locations+=("$location")
    done
    for location in "${locations[@]}"; do follow "$location"; done
    echo
fi
echo "==> the stack keeps running; Ctrl-C stops it"
wait
