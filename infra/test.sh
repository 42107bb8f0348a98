#!/usr/bin/env bash
# Runs the whole test suite against real Postgres and NATS. Postgres is
# installed and started if missing; every test makes its own database and
# starts its own private nats-server, so runs never collide.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/lib.sh

ensure_postgres
ensure_nats_binary
export TEST_DATABASE_ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-$PG_ADMIN_URL}
export NATS_SERVER_BIN=${NATS_SERVER_BIN:-$(nats_bin)}

# Databases left behind by killed test runs.
for db in $(psql "$PG_ADMIN_URL" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'sutazai_t_%'"); do
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
done

cargo test --workspace "$@"
