#!/usr/bin/env bash
# Installs what flowctl's test suite and its local pipeline need, on a Debian or Ubuntu machine,
# where it is missing; when everything is there already it checks, says so in one line per part,
# and changes nothing. scripts/test.sh and scripts/local-pipeline.sh both run it.
#
#   scripts/install-deps.sh [python] [databases]     (no argument: both)
#
# - python: the virtualenv $FLOWCTL_VENV (default ~/.cache/flowctl-venv, outside the checkout,
#   so `cargo clean` or a new clone keeps it) with aiosmtpd, moto[server] (with boto3), the aws
#   CLI, Schemathesis (which fuzzes the server's API from its OpenAPI document) and
#   prometheus_client (whose parser reads /metrics in the tests), each pinned. python3 with venv is needed; Debian's python3-venv is installed when
#   missing.
# - databases: Debian's postgresql and mariadb-server packages, for their server programs only
#   (/usr/lib/postgresql/<version>/bin/initdb and postgres; mariadbd and mariadb-install-db); no
#   service is started or configured. The tests and the stand-ins start their own servers in
#   temporary folders.
#
# Packages come through apt-get, with sudo when not run as root.
set -euo pipefail

# aiosmtpd: the alert tests' SMTP server and the pipeline's. moto 5.2.5 is the first whose
# CompleteMultipartUpload reply the Rust SDK reads; awscli is the S3 benchmark's comparison.
AIOSMTPD_VERSION=1.4.6
MOTO_VERSION=5.2.5
AWSCLI_VERSION=1.46.3
SCHEMATHESIS_VERSION=4.32.5
PROMETHEUS_CLIENT_VERSION=0.26.0
FLOWCTL_VENV="${FLOWCTL_VENV:-$HOME/.cache/flowctl-venv}"

# What is ready goes to stdout; what is being installed, and errors, to stderr, so a caller that
# wants silence when nothing is to be done (scripts/standins/start.sh) drops stdout only.
say() {
  echo "install-deps: $*"
}

note() {
  echo "install-deps: $*" >&2
}

# Runs apt-get install for the packages given, as root (through sudo when needed), quietly.
apt_install() {
  local as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  command -v apt-get >/dev/null || { note "cannot install $* here (no apt-get): install them by hand"; exit 1; }
  note "installing $* (apt-get)"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Whether the virtualenv has every pinned package at its version (and moto's server extra).
venv_ready() {
  "${FLOWCTL_VENV}/bin/python" - "$AIOSMTPD_VERSION" "$MOTO_VERSION" "$AWSCLI_VERSION" "$SCHEMATHESIS_VERSION" "$PROMETHEUS_CLIENT_VERSION" 2>/dev/null <<'PY'
import importlib.metadata as m, sys
want = dict(zip(["aiosmtpd", "moto", "awscli", "schemathesis", "prometheus_client"], sys.argv[1:]))
sys.exit(any(m.version(name) != version for name, version in want.items()) or m.version("flask") is None)
PY
}

install_python() {
  if venv_ready; then
    say "python tools ready in ${FLOWCTL_VENV} (aiosmtpd ${AIOSMTPD_VERSION}, moto ${MOTO_VERSION}, awscli ${AWSCLI_VERSION}, schemathesis ${SCHEMATHESIS_VERSION}, prometheus_client ${PROMETHEUS_CLIENT_VERSION})"
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -c "import ensurepip, venv" 2>/dev/null || apt_install python3-venv
  note "installing aiosmtpd ${AIOSMTPD_VERSION}, moto[server] ${MOTO_VERSION}, awscli ${AWSCLI_VERSION}, schemathesis ${SCHEMATHESIS_VERSION} and prometheus_client ${PROMETHEUS_CLIENT_VERSION} into ${FLOWCTL_VENV}"
  python3 -m venv "${FLOWCTL_VENV}"
  "${FLOWCTL_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "aiosmtpd==${AIOSMTPD_VERSION}" "moto[server]==${MOTO_VERSION}" "awscli==${AWSCLI_VERSION}" \
    "schemathesis==${SCHEMATHESIS_VERSION}" "prometheus_client==${PROMETHEUS_CLIENT_VERSION}"
  venv_ready || { note "the virtualenv ${FLOWCTL_VENV} still lacks a pinned package"; exit 1; }
}

install_databases() {
  local packages=()
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
  { command -v mariadbd || [ -x /usr/sbin/mariadbd ]; } >/dev/null 2>&1 || packages+=(mariadb-server)
  if [ "${#packages[@]}" -gt 0 ]; then
    apt_install "${packages[@]}"
  fi
  local pg mariadbd
  pg=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  [ -x "$pg/postgres" ] && [ -x "$mariadbd" ] || { note "PostgreSQL or MariaDB is still missing after apt-get"; exit 1; }
  say "database servers ready ($pg/postgres, $mariadbd)"
}

parts=("$@")
[ "${#parts[@]}" -gt 0 ] || parts=(python databases)
for part in "${parts[@]}"; do
  case "$part" in
    python) install_python ;;
    databases) install_databases ;;
    *) echo "usage: scripts/install-deps.sh [python] [databases]" >&2; exit 2 ;;
  esac
done
