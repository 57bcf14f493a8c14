#!/usr/bin/env bash
# Makes sure RabbitMQ answers on 127.0.0.1:5672: starts the local server if it is installed
# and stopped, else says what to start.
set -euo pipefail

reachable() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if reachable; then
    exit 0
fi
if command -v rabbitmq-server >/dev/null; then
    echo "==> RabbitMQ is not running; starting it (rabbitmq-server -detached)"
    rabbitmq-server -detached
    for _ in $(seq 1 60); do
        reachable && exit 0
        sleep 1
    done
fi
echo "RabbitMQ does not answer on 127.0.0.1:5672. Start it (rabbitmq-server -detached," >&2
echo "or: docker run -d -p 5672:5672 rabbitmq:3-management) and try again." >&2
exit 1
