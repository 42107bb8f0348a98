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
cargo build --release -p command-service -p projectors -p query-service -p agent-sdk

pids=()
stop() {
    log "stopping"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

export COMMAND_BIND=${COMMAND_BIND:-127.0.0.1:8080}
export QUERY_BIND=${QUERY_BIND:-127.0.0.1:8081}
export PROJECTORS_BIND=${PROJECTORS_BIND:-127.0.0.1:8082}
# Qdrant Edge (default vector store) lives here, owned by the query service.
export VECTOR_DIR=${VECTOR_DIR:-$DATA_DIR/vectors}

wait_ready() { # name url
    for _ in $(seq 1 150); do
        curl -fsS "$2" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "$1 did not become ready ($2)"; stop; exit 1
}

# The command service migrates the event store and creates the stream first.
./target/release/command-service &
pids+=($!)
wait_ready "command service" "http://$COMMAND_BIND/health/ready"
./target/release/projectors run &
pids+=($!)
wait_ready "projectors" "http://$PROJECTORS_BIND/health/ready"
./target/release/query-service &
pids+=($!)
wait_ready "query service" "http://$QUERY_BIND/health/ready"

# A reference agent, so that submitted tasks run end to end.
mkdir -p "$DATA_DIR"
COMMAND_URL="http://$COMMAND_BIND" QUERY_URL="http://$QUERY_BIND" \
    ./target/release/reference-agent --name reference-agent-1 --id-file "$DATA_DIR/reference-agent.id" &
pids+=($!)

log "command API:   http://$COMMAND_BIND/api/v1      docs http://$COMMAND_BIND/docs"
log "query API:     http://$QUERY_BIND/api/v1      docs http://$QUERY_BIND/docs"
log "live updates:  http://$QUERY_BIND/api/v1/stream (SSE), ws://$QUERY_BIND/ws/tasks/{id}"
log "projectors:    http://$PROJECTORS_BIND/metrics"
log "agent:         reference-agent-1 (echo, sleep, fail, http.fetch; text.summarize with OLLAMA_URL)"
log "events:        NATS $NATS_URL, stream SUTAZAI_EVENTS, subjects sutazai.events.>"
log "press Ctrl-C to stop"
wait "${pids[@]}"
