#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 (the tests' PostgreSQL store): starts the
# local cluster if it is installed and stopped, else says what to start.
set -euo pipefail

reachable() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if reachable; then
    exit 0
fi
if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
    echo "==> PostgreSQL is not running; starting it (pg_ctlcluster ... main start)"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 1 30); do
        reachable && exit 0
        sleep 1
    done
fi
echo "PostgreSQL does not answer on 127.0.0.1:5432. Start it (pg_ctlcluster --skip-systemctl-redirect" >&2
echo "\$(ls /etc/postgresql) main start, or: docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust" >&2
echo "postgres:16) and try again, or point TEST_POSTGRES_URL at one." >&2
exit 1
