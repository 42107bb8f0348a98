# Shared by run.sh and test.sh: make sure Postgres and NATS (JetStream) are
# reachable on this machine, installing and starting local ones if not.
# Sourced, not executed.

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
NATS_PORT=${NATS_PORT:-4222}
DATA_DIR=${DATA_DIR:-"$(pwd)/data"}

log() { printf '\033[1m[sutazai]\033[0m %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    log "installing $* (Debian packages)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure_postgres() {
    if ! command -v psql >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
        if ! port_open "$PG_HOST" "$PG_PORT"; then apt_install postgresql postgresql-client; fi
    fi
    if ! port_open "$PG_HOST" "$PG_PORT"; then
        log "starting the local PostgreSQL cluster"
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
        for _ in $(seq 1 50); do port_open "$PG_HOST" "$PG_PORT" && break; sleep 0.2; done
    fi
    port_open "$PG_HOST" "$PG_PORT" || { log "PostgreSQL is not reachable on $PG_HOST:$PG_PORT"; exit 1; }
    export PG_ADMIN_URL=${PG_ADMIN_URL:-"postgres://postgres@$PG_HOST:$PG_PORT/postgres"}
    if ! psql "$PG_ADMIN_URL" -qtAc 'SELECT 1' >/dev/null 2>&1; then
        # A fresh Debian cluster refuses password-less TCP logins: give the
        # postgres user a local development password.
        if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null; then
            log "setting a development password for the postgres user"
            runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
            PG_ADMIN_URL="postgres://postgres:postgres@$PG_HOST:$PG_PORT/postgres"
        fi
        psql "$PG_ADMIN_URL" -qtAc 'SELECT 1' >/dev/null || {
            log "cannot log in to PostgreSQL; set PG_ADMIN_URL"; exit 1; }
    fi
    log "PostgreSQL is up at $PG_HOST:$PG_PORT"
}

# Creates database $1 unless it exists; prints its URL.
ensure_database() {
    local name=$1
    if [ "$(psql "$PG_ADMIN_URL" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]; then
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $name" >/dev/null
    fi
    echo "${PG_ADMIN_URL%/*}/$name"
}

ensure_nats_binary() {
    if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
        apt_install nats-server
    fi
}

nats_bin() { command -v nats-server || echo /usr/sbin/nats-server; }

ensure_nats() {
    ensure_nats_binary
    if ! port_open 127.0.0.1 "$NATS_PORT"; then
        log "starting a local nats-server with JetStream on port $NATS_PORT"
        mkdir -p "$DATA_DIR/nats"
        nohup "$(nats_bin)" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$DATA_DIR/nats" \
            -l "$DATA_DIR/nats-server.log" >/dev/null 2>&1 &
        for _ in $(seq 1 50); do port_open 127.0.0.1 "$NATS_PORT" && break; sleep 0.2; done
    fi
    port_open 127.0.0.1 "$NATS_PORT" || { log "NATS is not reachable on port $NATS_PORT"; exit 1; }
    log "NATS is up at 127.0.0.1:$NATS_PORT"
}
