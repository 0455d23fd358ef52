#!/usr/bin/env bash
# Starts the local stand-ins of the loan pipeline's services in DIR, each on a free port of
# 127.0.0.1, and writes DIR/standins.env with their ports and passwords. Stop them with
# scripts/standins/stop.sh DIR (it kills exactly the processes this script started, listed in
# DIR/pids).
#
#   scripts/standins/start.sh DIR [--no-postgres]
#
# - moto (S3, EMR, Redshift Data, SageMaker): scripts/standins/moto_local.py, with the patches it
#   documents, every request recorded in DIR/moto-requests.jsonl, the bucket `loans-lake` made;
# - MariaDB (RDS): database `loans`, user `loans` (password $LOANS_RDS_PASSWORD), a `payments`
#   table with a few days of sample payments for dags/etl_daily.yaml;
# - PostgreSQL (the warehouse of dags/etl_daily.yaml): database `warehouse`, user `etl`
#   (password $WAREHOUSE_PASSWORD); skipped with --no-postgres;
# - the loan site: scripts/standins/loan_site.py serving DIR/site, generating a quarter's
#   synthetic files on its first request (password $LOANS_SITE_PASSWORD);
# - SMTP: aiosmtpd, keeping every alert email in the maildir DIR/mail.
#
# Needs: python3; the virtualenv $FLOWCTL_VENV (default ~/.cache/flowctl-venv) with
# moto[server]==5.2.5, boto3 and aiosmtpd (made here when missing, by scripts/install-deps.sh);
# mariadbd and mariadb-install-db (Debian: apt-get install mariadb-server); PostgreSQL's initdb
# and postgres under /usr/lib/postgresql/<version>/bin (apt-get install postgresql).
# scripts/install-deps.sh installs them all; scripts/local-pipeline.sh runs it first.
set -euo pipefail

dir=${1:?usage: start.sh DIR [--no-postgres]}
postgres=yes
[ "${2:-}" = "--no-postgres" ] && postgres=no
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
: > "$dir/pids"

venv=${FLOWCTL_VENV:-$HOME/.cache/flowctl-venv}
py="$venv/bin/python"

fail() {
  echo "start.sh: $*" >&2
  exit 1
}

# Polls `$@` until it succeeds, for at most $deadline seconds; then shows the log and fails.
wait_for() {
  local what=$1 log=$2 deadline=$3
  shift 3
  local end=$((SECONDS + deadline))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      echo "start.sh: $what did not start within ${deadline}s; its log ($log):" >&2
      tail -n 30 "$log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

secret() {
  python3 -c 'import secrets; print("local-" + secrets.token_hex(8))'
}

# -- the virtualenv
FLOWCTL_VENV=$venv "$here/../install-deps.sh" python >/dev/null

LOANS_RDS_PASSWORD=${LOANS_RDS_PASSWORD:-$(secret)}
WAREHOUSE_PASSWORD=${WAREHOUSE_PASSWORD:-$(secret)}
LOANS_SITE_PASSWORD=${LOANS_SITE_PASSWORD:-$(secret)}

# -- moto
MOTO_PORT=$(free_port)
"$py" "$here/moto_local.py" --record "$dir/moto-requests.jsonl" --bucket loans-lake -H 127.0.0.1 -p "$MOTO_PORT" \
  </dev/null >"$dir/moto.log" 2>&1 &
echo $! >>"$dir/pids"

# -- the loan site
mkdir -p "$dir/site"
LOANS_SITE_PASSWORD=$LOANS_SITE_PASSWORD python3 "$here/loan_site.py" --data "$dir/site" --generate "${LOANS_SAMPLE_LOANS:-250}" \
  </dev/null >"$dir/site.log" 2>&1 &
echo $! >>"$dir/pids"

# -- SMTP
SMTP_PORT=$(free_port)
mkdir -p "$dir/mail/tmp" "$dir/mail/new" "$dir/mail/cur"
"$py" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$dir/mail" </dev/null >"$dir/smtp.log" 2>&1 &
echo $! >>"$dir/pids"

# -- MariaDB
mariadbd=$(command -v mariadbd || ls /usr/sbin/mariadbd 2>/dev/null || true)
install_db=$(command -v mariadb-install-db || true)
[ -n "$mariadbd" ] && [ -n "$install_db" ] || fail "MariaDB is not installed: run scripts/install-deps.sh databases (or apt-get install mariadb-server)"
MYSQL_PORT=$(free_port)
MYSQL_SOCKET="$dir/mariadb/mysqld.sock"
mkdir -p "$dir/mariadb"
user=$(id -un)
"$install_db" --no-defaults --datadir="$dir/mariadb/data" --user="$user" --auth-root-authentication-method=normal \
  --skip-test-db >"$dir/mariadb.log" 2>&1 || fail "mariadb-install-db failed; see $dir/mariadb.log"
"$mariadbd" --no-defaults --datadir="$dir/mariadb/data" --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
  --socket="$MYSQL_SOCKET" --pid-file="$dir/mariadb/mysqld.pid" --local-infile=1 --skip-log-bin --skip-name-resolve \
  --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=2 --user="$user" </dev/null >>"$dir/mariadb.log" 2>&1 &
echo $! >>"$dir/pids"

# -- PostgreSQL (as nobody when root: postgres refuses to run as root)
if [ "$postgres" = yes ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || fail "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): run scripts/install-deps.sh databases (or apt-get install postgresql)"
  PG_PORT=$(free_port)
  as_pg=()
  mkdir -p "$dir/postgres"
  if [ "$(id -u)" = 0 ]; then
    chown nobody "$dir/postgres"
    chmod o+x "$dir"
    as_pg=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  fi
  "${as_pg[@]}" "$pgbin/initdb" -D "$dir/postgres/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
    --locale=C --no-sync >"$dir/postgres.log" 2>&1 || fail "initdb failed; see $dir/postgres.log"
  "${as_pg[@]}" "$pgbin/postgres" -D "$dir/postgres/data" -p "$PG_PORT" -k "$dir/postgres" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off </dev/null >>"$dir/postgres.log" 2>&1 &
  echo $! >>"$dir/pids"
fi

# -- readiness, then the databases' users and sample data
wait_for "moto" "$dir/moto.log" 60 grep -q "Running on http://127.0.0.1:$MOTO_PORT" "$dir/moto.log"
wait_for "the loan site" "$dir/site.log" 30 grep -q "^listening " "$dir/site.log"
LOANS_SITE_PORT=$(sed -n 's/^listening //p' "$dir/site.log" | head -n 1)
wait_for "the SMTP server" "$dir/smtp.log" 30 port_open "$SMTP_PORT"
mariadb_root() {
  mariadb --no-defaults -uroot --socket="$MYSQL_SOCKET" "$@"
}
wait_for "MariaDB" "$dir/mariadb.log" 60 mariadb_root -e "SELECT 1"
mariadb_root <<SQL
CREATE DATABASE loans;
CREATE USER 'loans'@'%' IDENTIFIED BY '$LOANS_RDS_PASSWORD';
GRANT ALL ON loans.* TO 'loans'@'%';
CREATE TABLE loans.payments (
  loan_sequence_number VARCHAR(12) NOT NULL,
  paid_at DATETIME NOT NULL,
  amount DECIMAL(12,2) NOT NULL
);
INSERT INTO loans.payments VALUES
  ('F24Q10000001', '2024-04-01 09:12:00', 505.12),
  ('F24Q10000002', '2024-04-01 10:40:00', 871.90),
  ('F24Q10000002', '2024-04-01 16:05:00', 100.00),
  ('F24Q10000003', '2024-04-01 23:59:59', 1210.45),
  ('F24Q10000001', '2024-04-02 08:00:00', 505.12),
  ('F24Q10000004', '2024-04-02 12:30:00', 998.00);
SQL
if [ "$postgres" = yes ]; then
  psql_su() {
    "$pgbin/psql" -X -q -h "$dir/postgres" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 "$@"
  }
  wait_for "PostgreSQL" "$dir/postgres.log" 60 psql_su -d postgres -c "SELECT 1"
  psql_su -d postgres -c "CREATE ROLE etl LOGIN PASSWORD '$WAREHOUSE_PASSWORD'" -c "CREATE DATABASE warehouse OWNER etl" >/dev/null
fi

{
  echo "# Written by scripts/standins/start.sh: the stand-ins running in $dir"
  echo "STANDINS_DIR=$dir"
  echo "MOTO_PORT=$MOTO_PORT"
  echo "MYSQL_PORT=$MYSQL_PORT"
  echo "MYSQL_SOCKET=$MYSQL_SOCKET"
  echo "PG_PORT=${PG_PORT:-}"
  echo "PG_SOCKET_DIR=$dir/postgres"
  echo "LOANS_SITE_PORT=$LOANS_SITE_PORT"
  echo "SMTP_PORT=$SMTP_PORT"
  echo "LOANS_RDS_PASSWORD=$LOANS_RDS_PASSWORD"
  echo "WAREHOUSE_PASSWORD=$WAREHOUSE_PASSWORD"
  echo "LOANS_SITE_PASSWORD=$LOANS_SITE_PASSWORD"
} >"$dir/standins.env"
echo "stand-ins up in $dir: moto :$MOTO_PORT, MariaDB :$MYSQL_PORT, ${PG_PORT:+PostgreSQL :$PG_PORT, }loan site :$LOANS_SITE_PORT, SMTP :$SMTP_PORT"
