#!/usr/bin/env bash
# Runs the founding pipeline, dags/loans_quarterly.yaml, for one quarter on local stand-ins of
# every service it uses, and shows what happened. One command, no AWS account:
#
#   scripts/local-pipeline.sh [QUARTER] [--keep]
#
# QUARTER defaults to 2024Q1. It installs what the stand-ins need where it is missing
# (scripts/install-deps.sh, as scripts/test.sh does: the virtualenv with moto and aiosmtpd,
# Debian's MariaDB and PostgreSQL programs), builds flowctl (debug; set FLOWCTL_BIN to use another
# binary), starts the stand-ins in a temporary folder (scripts/standins/start.sh: moto, MariaDB,
# PostgreSQL, the loan site, an SMTP server), points the connections at them
# (dags/profiles/local.env), runs the DAG with `flowctl run`, prints `flowctl status`, what the
# stand-ins were asked to do and the MySQL row counts, and stops the stand-ins on the way out.
# With --keep the folder (flowctl's home, logs, data, the stand-ins' logs) stays for a look.
# docs/pipelines/local.md explains every part.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

quarter=2024Q1
keep=no
for arg in "$@"; do
  case "$arg" in
    --keep) keep=yes ;;
    [12][0-9][0-9][0-9]Q[1-4]) quarter=$arg ;;
    *) echo "usage: scripts/local-pipeline.sh [QUARTER like 2024Q1] [--keep]" >&2; exit 2 ;;
  esac
done

echo "== what the stand-ins need (scripts/install-deps.sh)"
scripts/install-deps.sh python databases

if [ -n "${FLOWCTL_BIN:-}" ]; then
  flowctl=$FLOWCTL_BIN
else
  echo "== building flowctl"
  cargo build --quiet --bin flowctl
  flowctl="${CARGO_TARGET_DIR:-$repo/target}/debug/flowctl"
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/flowctl-local-pipeline.XXXXXX")
cleanup() {
  "$repo/scripts/standins/stop.sh" "$dir"
  if [ "$keep" = yes ]; then
    echo "kept $dir (flowctl's home is $dir/home; stand-in logs are $dir/*.log)"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT

echo "== starting the stand-ins"
scripts/standins/start.sh "$dir"
set -a
. "$dir/standins.env"
. dags/profiles/local.env
set +a
export FLOWCTL_HOME="$dir/home"
# Alert emails go to the local SMTP server; they land in $dir/mail.
cat >"$dir/config.yaml" <<EOF
smtp:
  host: 127.0.0.1
  port: $SMTP_PORT
  tls: none
  from: flowctl <flowctl@localhost>
EOF

echo "== flowctl run dags/loans_quarterly.yaml --param quarter=$quarter"
status=0
"$flowctl" --config "$dir/config.yaml" run dags/loans_quarterly.yaml --param "quarter=$quarter" || status=$?

echo
echo "== flowctl status"
"$flowctl" status
run=$("$flowctl" status loans_quarterly --output json | python3 -c 'import json, sys; print(json.load(sys.stdin)[-1]["run_id"])')
echo
echo "== flowctl status loans_quarterly $run"
"$flowctl" status loans_quarterly "$run"

echo
echo "== what the stand-ins were asked to do"
"${FLOWCTL_VENV:-$HOME/.cache/flowctl-venv}/bin/python" scripts/standins/inspect_aws.py \
  --endpoint "http://127.0.0.1:$MOTO_PORT" --record "$dir/moto-requests.jsonl" summary
echo "MySQL (database loans):"
mariadb --no-defaults -uroot --socket="$MYSQL_SOCKET" -N -e \
  "SELECT CONCAT('  origination: ', COUNT(*), ' rows') FROM loans.origination; SELECT CONCAT('  performance: ', COUNT(*), ' rows') FROM loans.performance" 2>/dev/null \
  || echo "  (no tables: the load did not run)"
exit "$status"
