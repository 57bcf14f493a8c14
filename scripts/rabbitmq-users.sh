#!/usr/bin/env bash
# Gives order-api and the provisioner hosts RabbitMQ users of their own, each allowed only
# what its side of the AMQP topology needs (docs/architecture.md, "Broker users"):
#   order-api  writes provisioner.requests, reads provisioner.results; declares the
#              exchanges, provision.results, provision.dead, the retry delay queues and its
#              replies queues;
#   host       writes provisioner.results (and the retry and dead-letter exchanges), reads
#              its provision.requests.<vendor> / provision.validate.<vendor> queues; declares
#              those and its provision.lease.* lock queues.
# Neither may write the other's exchange, read the other's queues, or use the default
# exchange (which reaches every queue by name).
#
# Idempotent: run it again at will. An existing user keeps its password unless one is given;
# the permissions and tags are set anew each time.
#
# Environment (all optional):
#   RABBITMQCTL               how to run rabbitmqctl (default: rabbitmqctl), e.g.
#                             "rabbitmqctl --node rabbit@rabbitmq"
#   RABBITMQ_VHOST            virtual host (default: /)
#   AMQP_NAME_PREFIX          the programs' AMQP_NAME_PREFIX (default: empty)
#   ORDER_API_AMQP_USER       default: provisioner-order-api
#   HOST_AMQP_USER            default: provisioner-host
#   ORDER_API_AMQP_PASSWORD   the users' passwords; when unset, taken from AMQP_PASSWORDS_FILE
#   HOST_AMQP_PASSWORD        or, failing that, generated (32 hex digits) and written there
#   AMQP_PASSWORDS_FILE       default: .rabbitmq-users.env (mode 600; shell syntax, so
#                             `. FILE` sets both *_AMQP_PASSWORD variables)
#
# Usage: scripts/rabbitmq-users.sh
set -euo pipefail

read -r -a rabbitmqctl <<< "${RABBITMQCTL:-rabbitmqctl}"
vhost=${RABBITMQ_VHOST:-/}
prefix=${AMQP_NAME_PREFIX:-}
api_user=${ORDER_API_AMQP_USER:-provisioner-order-api}
host_user=${HOST_AMQP_USER:-provisioner-host}
passwords_file=${AMQP_PASSWORDS_FILE:-.rabbitmq-users.env}

# The prefix as a regular expression matching exactly itself.
p=$(printf '%s' "$prefix" | sed 's/[][\.*^$+?(){}|/]/\\&/g')

# Permissions: configure, write, read (regular expressions over exchange and queue names).
api_configure="^${p}(provisioner\.(requests|results|dlx|retry)|provision\.(results|dead|retry\..+|replies\..+))\$"
api_write="^${p}(provisioner\.(requests|dlx)|provision\.(results|dead|retry\..+|replies\..+))\$"
api_read="^${p}(provisioner\.(results|dlx|retry)|provision\.(results|dead|retry\..+|replies\..+))\$"
host_configure="^${p}provision\.(requests|validate|lease)\..+\$"
host_write="^${p}(provisioner\.(results|retry|dlx)|provision\.(requests|validate)\..+)\$"
host_read="^${p}(provisioner\.requests|provision\.(requests|validate|lease)\..+)\$"

# Passwords: from the environment, else from the file, else new ones kept in the file.
if [[ -z "${ORDER_API_AMQP_PASSWORD:-}" || -z "${HOST_AMQP_PASSWORD:-}" ]] && [[ -f "$passwords_file" ]]; then
    given_api=${ORDER_API_AMQP_PASSWORD:-}
    given_host=${HOST_AMQP_PASSWORD:-}
    # shellcheck source=/dev/null
    . "$passwords_file"
    ORDER_API_AMQP_PASSWORD=${given_api:-${ORDER_API_AMQP_PASSWORD:-}}
    HOST_AMQP_PASSWORD=${given_host:-${HOST_AMQP_PASSWORD:-}}
fi
new_password() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
generated=0
if [[ -z "${ORDER_API_AMQP_PASSWORD:-}" ]]; then
    ORDER_API_AMQP_PASSWORD=$(new_password)
    generated=1
fi
if [[ -z "${HOST_AMQP_PASSWORD:-}" ]]; then
    HOST_AMQP_PASSWORD=$(new_password)
    generated=1
fi
if [[ $generated == 1 ]]; then
    (umask 077 && printf 'ORDER_API_AMQP_PASSWORD=%q\nHOST_AMQP_PASSWORD=%q\n' \
        "$ORDER_API_AMQP_PASSWORD" "$HOST_AMQP_PASSWORD" > "$passwords_file")
    echo "==> new passwords written to $passwords_file"
fi

# ensure_user NAME PASSWORD CONFIGURE WRITE READ: the user exists with this password, no
# tags (no management or admin rights) and exactly these permissions on the vhost.
ensure_user() {
    local name=$1 password=$2
    # Passwords go through standard input, never the command line (ps would show them).
    if "${rabbitmqctl[@]}" --silent list_users | awk '{print $1}' | grep -qxF -- "$name"; then
        printf '%s\n' "$password" | "${rabbitmqctl[@]}" --quiet change_password -- "$name" >/dev/null
    else
        printf '%s\n' "$password" | "${rabbitmqctl[@]}" --quiet add_user -- "$name" >/dev/null
    fi
    "${rabbitmqctl[@]}" --quiet set_user_tags "$name" >/dev/null
    "${rabbitmqctl[@]}" --quiet set_permissions -p "$vhost" -- "$name" "$3" "$4" "$5" >/dev/null
    echo "==> broker user $name: configure '$3' write '$4' read '$5' on vhost $vhost"
}

ensure_user "$api_user" "$ORDER_API_AMQP_PASSWORD" "$api_configure" "$api_write" "$api_read"
ensure_user "$host_user" "$HOST_AMQP_PASSWORD" "$host_configure" "$host_write" "$host_read"
