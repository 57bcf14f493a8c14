#!/usr/bin/env bash
# A local three-node RabbitMQ cluster for development and tests, from the installed server,
# beside (never instead of) the machine's own broker on 5672.
#
#   scripts/rabbitmq-cluster.sh start    # start the nodes that are not running, join them
#   scripts/rabbitmq-cluster.sh status   # each node: running or not, its ports, the members
#   scripts/rabbitmq-cluster.sh stop     # stop the nodes and remove everything start made
#   scripts/rabbitmq-cluster.sh urls     # the AMQP URLs, comma-separated (for AMQP_URL)
#   scripts/rabbitmq-cluster.sh kill N   # kill -9 node N's Erlang VM (a node's death)
#   scripts/rabbitmq-cluster.sh revive N # start node N again (it rejoins the cluster)
#   scripts/rabbitmq-cluster.sh restart N # stop node N gently and start it again (a rolling restart's step)
#   scripts/rabbitmq-cluster.sh leader Q # the number of the node leading quorum queue Q
#   scripts/rabbitmq-cluster.sh ctl N ARGS... # rabbitmqctl ARGS against node N
#
# Node N (1..3) is `provisioner-cluster-N@localhost`, with AMQP on 127.0.0.1:$((5672+N)) and
# Erlang distribution on $((25672+N)); its data and logs are under the state folder
# (RABBITMQ_CLUSTER_DIR, default target/rabbitmq-cluster), whose home/.erlang.cookie is the
# cluster's own cookie. The nodes run as the calling user, accept guest/guest from
# localhost as a fresh broker does, and enable no plugin (so no port of the machine's broker,
# such as the management UI's, is taken). `start` is idempotent: running nodes are left
# alone, a stopped one is started and rejoins. epmd (port 4369) is shared with the machine's
# broker, as it is meant to be.
set -euo pipefail
cd "$(dirname "$0")/.."

state=${RABBITMQ_CLUSTER_DIR:-$PWD/target/rabbitmq-cluster}
nodes=(1 2 3)

server_bin() {
    # The real scripts, not Debian's wrapper in /usr/sbin (which switches to the rabbitmq
    # user and its home, so its cookie).
    for dir in /usr/lib/rabbitmq/bin "$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /nonexistent)")"; do
        if [[ -x $dir/rabbitmq-server && -x $dir/rabbitmqctl ]]; then
            echo "$dir"
            return
        fi
    done
    echo "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)" >&2
    exit 1
}
bin=$(server_bin)

node_name() { echo "provisioner-cluster-$1@localhost"; }
amqp_port() { echo $((5672 + $1)); }
dist_port() { echo $((25672 + $1)); }

# Runs a RabbitMQ script with node $1's environment.
with_node() {
    local n=$1
    shift
    env HOME="$state/home" \
        RABBITMQ_CONF_ENV_FILE="$state/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$state/rabbitmq.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$state/enabled_plugins" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_MNESIA_BASE="$state/data" \
        RABBITMQ_LOG_BASE="$state/log/$n" \
        RABBITMQ_PID_FILE="$state/pids/$n.pid" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        "$@"
}

ctl() {
    local n=$1
    shift
    with_node "$n" "$bin/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

running() { ctl "$1" -q ping >/dev/null 2>&1; }

prepare() {
    mkdir -p "$state/home" "$state/data" "$state/pids" "$state/log"/{1,2,3}
    if [[ ! -s $state/home/.erlang.cookie ]]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F > "$state/home/.erlang.cookie")
    fi
    chmod 400 "$state/home/.erlang.cookie"
    # The machine's /etc/rabbitmq/rabbitmq-env.conf names the machine's node: not read.
    echo "# scripts/rabbitmq-cluster.sh: every setting comes from the environment" > "$state/rabbitmq-env.conf"
    cat > "$state/rabbitmq.conf" <<'CONF'
# scripts/rabbitmq-cluster.sh: a development cluster on 127.0.0.1 (ports from the environment).
loopback_users.guest = true
# A node that comes back rejoins the others without a person.
cluster_partition_handling = pause_minority
CONF
    echo "[]." > "$state/enabled_plugins"
}

start_node() {
    local n=$1
    if running "$n"; then
        return
    fi
    echo "==> starting $(node_name "$n") (AMQP 127.0.0.1:$(amqp_port "$n"))"
    with_node "$n" "$bin/rabbitmq-server" -detached
    # The node answers pings only once its VM has registered with epmd; then await its boot.
    local waited=0
    until running "$n" || ((waited >= 60)); do
        sleep 1
        waited=$((waited + 1))
    done
    if ! ctl "$n" -q await_startup --timeout 120 >/dev/null 2>&1; then
        echo "$(node_name "$n") did not start; its log: $state/log/$n" >&2
        exit 1
    fi
}

members() {
    ctl "$1" -q cluster_status --formatter json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join(sorted(s.get("running_nodes", []))))'
}

join() {
    local n=$1 first
    first=$(node_name 1)
    if ctl "$n" -q cluster_status --formatter json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sys.argv[1] in s.get("disk_nodes", []) else 1)' "$first"; then
        return
    fi
    echo "==> joining $(node_name "$n") to $first"
    local step output
    for step in stop_app reset "join_cluster $first" start_app; do
        # shellcheck disable=SC2086 # the step's words
        if ! output=$(ctl "$n" -q $step 2>&1); then
            echo "$step on $(node_name "$n") failed: $output" >&2
            exit 1
        fi
    done
}

cmd=${1:-status}
case $cmd in
start)
    prepare
    for n in "${nodes[@]}"; do start_node "$n"; done
    for n in 2 3; do join "$n"; done
    echo "==> cluster running: $(members 1)"
    echo "    AMQP_URL=$("$0" urls)"
    ;;
stop)
    for n in "${nodes[@]}"; do
        if [[ -d $state ]] && running "$n"; then
            echo "==> stopping $(node_name "$n")"
            ctl "$n" -q shutdown >/dev/null 2>&1 || ctl "$n" -q stop >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$state"
    echo "==> cluster stopped; $state removed"
    ;;
status)
    if [[ ! -d $state ]]; then
        echo "no cluster (start it with scripts/rabbitmq-cluster.sh start)"
        exit 3
    fi
    down=0
    for n in "${nodes[@]}"; do
        if running "$n"; then
            echo "$(node_name "$n"): running, AMQP 127.0.0.1:$(amqp_port "$n"), distribution $(dist_port "$n")"
        else
            echo "$(node_name "$n"): not running"
            down=1
        fi
    done
    for n in "${nodes[@]}"; do
        if running "$n"; then
            echo "running members: $(members "$n")"
            break
        fi
    done
    exit $down
    ;;
urls)
    urls=()
    for n in "${nodes[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
    (IFS=,; echo "${urls[*]}")
    ;;
kill)
    n=${2:?usage: $0 kill N}
    pid=$(cat "$state/pids/$n.pid" 2>/dev/null || true)
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        echo "$(node_name "$n") is not running" >&2
        exit 1
    fi
    echo "==> kill -9 $(node_name "$n") (pid $pid)"
    kill -9 "$pid"
    ;;
revive)
    n=${2:?usage: $0 revive N}
    prepare
    start_node "$n"
    ;;
restart)
    n=${2:?usage: $0 restart N}
    echo "==> restarting $(node_name "$n")"
    ctl "$n" -q stop >/dev/null
    # `stop` returns once the VM is gone; wait for epmd to forget the name too.
    waited=0
    while running "$n" && ((waited < 30)); do
        sleep 1
        waited=$((waited + 1))
    done
    prepare
    start_node "$n"
    ;;
leader)
    queue=${2:?usage: $0 leader QUEUE}
    for n in "${nodes[@]}"; do
        if running "$n"; then
            ctl "$n" -q list_queues name leader --formatter json 2>/dev/null |
                python3 -c '
import json, sys
for queue in json.load(sys.stdin):
    if queue["name"] == sys.argv[1] and queue.get("leader"):
        # provisioner-cluster-N@localhost
        print(queue["leader"].split("@")[0].rsplit("-", 1)[1])
        sys.exit(0)
sys.exit(1)' "$queue" && exit 0
            echo "no leader of $queue known to $(node_name "$n")" >&2
            exit 1
        fi
    done
    echo "no node of the cluster is running" >&2
    exit 1
    ;;
ctl)
    n=${2:?usage: $0 ctl N ARGS...}
    shift 2
    ctl "$n" "$@"
    ;;
*)
    echo "usage: $0 start|stop|status|urls|kill N|revive N|restart N|leader QUEUE|ctl N ARGS..." >&2
    exit 2
    ;;
esac
