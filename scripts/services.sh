#!/usr/bin/env bash
# The test servers: PostgreSQL and Redis (Debian's packages) and the MongoDB-protocol server
# SecantusDB (PyPI, in a venv of its own), on loopback, on free ports, with their data under
# .services/ in the repo (no system service; nothing is left running after `stop`).
#
#   scripts/services.sh install        install what is missing (Debian packages need root)
#   scripts/services.sh start          start the three servers (each one not yet running)
#   scripts/services.sh stop           stop them and remove their data
#   scripts/services.sh env            print the TIDEFLOW_TEST_* variables the tests read
#   scripts/services.sh status         say which server runs where
#   scripts/services.sh restart NAME   restart one server (postgres|redis|mongo), keeping its data
#   scripts/services.sh with -- CMD    install and start what is missing, run CMD with the
#                                      variables set, and stop what this call started
#
# Servers that cannot be installed (no root, no package) are reported and left out: their tests
# then skip saying so, or fail under CI=true.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SVC="${TIDEFLOW_SERVICES_DIR:-$ROOT/.services}"
SECANTUS_VERSION="0.7.0b3"
PG_USER=tideflow
PG_PASSWORD=tideflow-test-pw
PG_DB=tideflow_test
REDIS_PASSWORD=tideflow-test-pw

say() { echo "services: $*" >&2; }

pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [ -n "$d" ] && [ -x "$d/postgres" ]; then echo "$d"; fi
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

wait_port() { # host port seconds
  python3 - "$1" "$2" "$3" <<'EOF'
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + limit
while True:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        if time.monotonic() > end:
            sys.exit(1)
        time.sleep(0.1)
EOF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- install ---------------------------------------------------------------------------------

install() {
  mkdir -p "$SVC"
  local want=()
  [ -n "$(pg_bin)" ] || want+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
  if [ "${#want[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing ${want[*]} from Debian's packages"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q --no-install-recommends "${want[@]}" >"$SVC/apt.log" 2>&1 || {
        apt-get update -q >>"$SVC/apt.log" 2>&1
        apt-get install -y -q --no-install-recommends "${want[@]}" >>"$SVC/apt.log" 2>&1
      } || say "could not install ${want[*]} (see $SVC/apt.log)"
    else
      say "cannot install ${want[*]}: needs root and apt-get (run as root: scripts/services.sh install)"
    fi
  fi
  # Debian's packages start system services; the tests use servers of their own, so stop them.
  if [ "$(id -u)" = 0 ] && command -v service >/dev/null 2>&1; then
    service redis-server stop >/dev/null 2>&1 || true
    service postgresql stop >/dev/null 2>&1 || true
  fi
  if [ ! -x "$SVC/secantus/bin/secantusd-py" ]; then
    say "installing SecantusDB==$SECANTUS_VERSION into $SVC/secantus"
    rm -rf "$SVC/secantus"
    if python3 -m venv "$SVC/secantus" >"$SVC/secantus-install.log" 2>&1 &&
      "$SVC/secantus/bin/pip" install -q --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION" \
        >>"$SVC/secantus-install.log" 2>&1; then
      :
    else
      say "could not install SecantusDB (see $SVC/secantus-install.log)"
      rm -rf "$SVC/secantus"
    fi
  fi
}

# --- PostgreSQL --------------------------------------------------------------------------------

# PostgreSQL refuses to run as root: as root it runs as the `postgres` user of Debian's package,
# with its data in a directory that user owns (under the repo when that user can reach it).
pg_dir() {
  if [ "$(id -u)" = 0 ]; then
    if runuser -u postgres -- test -x "$SVC" 2>/dev/null; then
      echo "$SVC/postgres"
    else
      echo "${TMPDIR:-/tmp}/tideflow-services-$(echo "$ROOT" | cksum | cut -d' ' -f1)/postgres"
    fi
  else
    echo "$SVC/postgres"
  fi
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin dir port
  bin="$(pg_bin)"
  if [ -z "$bin" ]; then say "PostgreSQL is not installed: skipped"; return 0; fi
  dir="$(pg_dir)"
  if [ -f "$SVC/postgres.port" ] && as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    say "no postgres user to run PostgreSQL as: skipped"
    return 0
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    rm -rf "$dir/data"
    echo "$PG_PASSWORD" >"$dir/pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pwfile"
    as_pg "$bin/initdb" -D "$dir/data" -U "$PG_USER" --pwfile="$dir/pwfile" \
      --auth=scram-sha-256 -E UTF8 --no-instructions >"$SVC/postgres-init.log" 2>&1 || {
      say "initdb failed (see $SVC/postgres-init.log)"
      return 0
    }
  fi
  port="$(cat "$SVC/postgres.port" 2>/dev/null || free_port)"
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
    start >/dev/null || {
    say "PostgreSQL did not start (see $dir/server.log)"
    return 0
  }
  echo "$port" >"$SVC/postgres.port"
  PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres -qAtc \
    "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1 ||
    PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres -qc \
      "CREATE DATABASE $PG_DB" >/dev/null
  say "PostgreSQL on 127.0.0.1:$port ($dir)"
}

stop_postgres() {
  local bin dir
  bin="$(pg_bin)"
  dir="$(pg_dir)"
  if [ -n "$bin" ] && [ -d "$dir/data" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}

# --- Redis -------------------------------------------------------------------------------------

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then say "Redis is not installed: skipped"; return 0; fi
  local dir="$SVC/redis" port
  if alive "$dir/redis.pid"; then return 0; fi
  mkdir -p "$dir"
  port="$(cat "$SVC/redis.port" 2>/dev/null || free_port)"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --appendonly yes \
    --appendfsync everysec --save '' --requirepass "$REDIS_PASSWORD" >/dev/null
  if ! wait_port 127.0.0.1 "$port" 20; then say "Redis did not start (see $dir/redis.log)"; return 0; fi
  echo "$port" >"$SVC/redis.port"
  say "Redis on 127.0.0.1:$port ($dir)"
}

stop_redis() {
  local dir="$SVC/redis"
  if alive "$dir/redis.pid"; then
    local pid
    pid="$(cat "$dir/redis.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

# --- SecantusDB --------------------------------------------------------------------------------

start_mongo() {
  local bin="$SVC/secantus/bin/secantusd-py" dir="$SVC/mongo" port
  if [ ! -x "$bin" ]; then say "SecantusDB is not installed: skipped"; return 0; fi
  if alive "$dir/secantusd.pid"; then return 0; fi
  mkdir -p "$dir"
  port="$(cat "$SVC/mongo.port" 2>/dev/null || free_port)"
  : >"$dir/secantusd.toml" # an empty config: no auto-discovery of one in the working directory
  # setsid execs the daemon in place (a background job is no process group leader), so $! is
  # the daemon itself, the leader of its own group
  setsid nohup "$bin" --config "$dir/secantusd.toml" --host 127.0.0.1 --port "$port" \
    --storage-path :memory: --log-level WARNING >"$dir/secantusd.log" 2>&1 </dev/null &
  echo $! >"$dir/secantusd.pid"
  if ! wait_port 127.0.0.1 "$port" 60; then say "SecantusDB did not start (see $dir/secantusd.log)"; return 0; fi
  echo "$port" >"$SVC/mongo.port"
  say "SecantusDB on 127.0.0.1:$port ($dir)"
}

stop_mongo() {
  local dir="$SVC/mongo"
  if alive "$dir/secantusd.pid"; then
    local pid
    pid="$(cat "$dir/secantusd.pid")"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  fi
  # and any daemon of this checkout's venv that outlived its pid file
  pkill -9 -f "^$SVC/secantus/bin/python[0-9.]* $SVC/secantus/bin/secantusd-py " 2>/dev/null || true
  rm -f "$dir/secantusd.pid"
}

# --- commands ----------------------------------------------------------------------------------

running() { # name -> 0 when it runs
  case "$1" in
    postgres) [ -n "$(pg_bin)" ] && [ -f "$SVC/postgres.port" ] &&
      as_pg "$(pg_bin)/pg_ctl" -D "$(pg_dir)/data" status >/dev/null 2>&1 ;;
    redis) alive "$SVC/redis/redis.pid" ;;
    mongo) alive "$SVC/mongo/secantusd.pid" ;;
  esac
}

env_lines() {
  if running postgres; then
    echo "TIDEFLOW_TEST_POSTGRES_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$(cat "$SVC/postgres.port")/$PG_DB"
  fi
  if running redis; then
    echo "TIDEFLOW_TEST_REDIS_URL=redis://:$REDIS_PASSWORD@127.0.0.1:$(cat "$SVC/redis.port")/0"
  fi
  if running mongo; then
    echo "TIDEFLOW_TEST_MONGODB_URL=mongodb://127.0.0.1:$(cat "$SVC/mongo.port")/tideflow_test"
  fi
  if [ -x "$SVC/secantus/bin/secantusd-py" ]; then
    echo "TIDEFLOW_TEST_SECANTUSD=$SVC/secantus/bin/secantusd-py"
  fi
  echo "TIDEFLOW_TEST_SERVICES=$ROOT/scripts/services.sh"
}

start_all() { start_postgres; start_redis; start_mongo; }

stop_all() {
  stop_postgres
  stop_redis
  stop_mongo
  rm -rf "$SVC/redis" "$SVC/mongo" "$(pg_dir)" "$SVC"/*.port
}

restart() {
  case "${1:-}" in
    postgres)
      as_pg "$(pg_bin)/pg_ctl" -D "$(pg_dir)/data" -m immediate -w stop >/dev/null 2>&1 || true
      start_postgres ;;
    redis) stop_redis; start_redis ;;
    mongo) stop_mongo; start_mongo ;;
    *) say "restart what? postgres, redis or mongo"; exit 2 ;;
  esac
}

case "${1:-}" in
  install) install ;;
  start) start_all ;;
  stop) stop_all ;;
  env) env_lines ;;
  status)
    for s in postgres redis mongo; do
      if running "$s"; then echo "$s: running"; else echo "$s: stopped"; fi
    done ;;
  restart) restart "${2:-}" ;;
  with)
    shift
    [ "${1:-}" = "--" ] && shift
    started=()
    for s in postgres redis mongo; do running "$s" || started+=("$s"); done
    if [ "${#started[@]}" -gt 0 ]; then
      install
      start_all
    fi
    while IFS= read -r line; do export "${line?}"; done < <(env_lines)
    rc=0
    "$@" || rc=$?
    for s in "${started[@]}"; do
      case "$s" in
        postgres) stop_postgres; rm -rf "$(pg_dir)" "$SVC/postgres.port" ;;
        redis) stop_redis; rm -rf "$SVC/redis" "$SVC/redis.port" ;;
        mongo) stop_mongo; rm -rf "$SVC/mongo" "$SVC/mongo.port" ;;
      esac
    done
    exit "$rc" ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
