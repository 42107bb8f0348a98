#!/usr/bin/env bash
# Starts the whole system on this machine: Postgres and NATS (installed and
# started if missing), then the services, and prints their URLs. Ctrl-C stops
# the services (Postgres and NATS keep running).
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/lib.sh

ensure_postgres
ensure_nats
export DATABASE_URL=${DATABASE_URL:-$(ensure_database sutazai)}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:$NATS_PORT}

log "building the services (release; the first build takes several minutes)"
cargo build --release -p command-service

pids=()
stop() {
    log "stopping"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

COMMAND_BIND=${COMMAND_BIND:-127.0.0.1:8080}
export COMMAND_BIND
./target/release/command-service &
pids+=($!)

for _ in $(seq 1 100); do
    curl -fsS "http://$COMMAND_BIND/health/ready" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://$COMMAND_BIND/health/ready" >/dev/null || { log "command service did not become ready"; stop; exit 1; }

log "command API:   http://$COMMAND_BIND/api/v1"
log "API docs:      http://$COMMAND_BIND/docs"
log "readiness:     http://$COMMAND_BIND/health/ready"
log "events:        NATS $NATS_URL, stream SUTAZAI_EVENTS, subjects sutazai.events.>"
log "press Ctrl-C to stop"
wait "${pids[@]}"
