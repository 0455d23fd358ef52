#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this project's kind: installs what the tests need,
# then runs every test of every crate. `.ci/run` calls this script; so should you.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowctl-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== toolchain"
cargo --version
rustc --version

# The alert tests talk to a real SMTP server on loopback: Python's aiosmtpd, pinned, in a
# virtualenv kept beside the build cache (so `cargo clean` keeps it). The tests find it through
# FLOWCTL_TEST_PYTHON and fail, saying to run this script, when it is missing.
AIOSMTPD_VERSION=1.4.6
FLOWCTL_VENV="${FLOWCTL_VENV:-$HOME/.cache/flowctl-venv}"
echo "== python test tools (aiosmtpd ${AIOSMTPD_VERSION} in ${FLOWCTL_VENV})"
if ! "${FLOWCTL_VENV}/bin/python" -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '${AIOSMTPD_VERSION}')" 2>/dev/null; then
  python3 -m venv "${FLOWCTL_VENV}"
  "${FLOWCTL_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "aiosmtpd==${AIOSMTPD_VERSION}"
fi
export FLOWCTL_TEST_PYTHON="${FLOWCTL_VENV}/bin/python"
"${FLOWCTL_TEST_PYTHON}" -c "import aiosmtpd; print('aiosmtpd', aiosmtpd.__version__)"

# The S3 tests and benchmark run against moto_server in the same virtualenv: moto[server] pinned
# (5.2.5 is the first whose CompleteMultipartUpload reply the Rust SDK reads), boto3 (which comes
# with it) as the independent client, and the aws CLI, pinned, for the benchmark's comparison.
# The tests find them through FLOWCTL_TEST_MOTO and FLOWCTL_TEST_AWS_CLI.
MOTO_VERSION=5.2.5
AWSCLI_VERSION=1.46.3
echo "== moto ${MOTO_VERSION} and awscli ${AWSCLI_VERSION} in ${FLOWCTL_VENV}"
if ! "${FLOWCTL_VENV}/bin/python" -c "import sys, importlib.metadata as m; sys.exit(m.version('moto') != '${MOTO_VERSION}' or m.version('awscli') != '${AWSCLI_VERSION}' or m.version('flask') is None)" 2>/dev/null; then
  "${FLOWCTL_VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}" "awscli==${AWSCLI_VERSION}"
fi
export FLOWCTL_TEST_MOTO="${FLOWCTL_VENV}/bin/moto_server"
export FLOWCTL_TEST_AWS_CLI="${FLOWCTL_VENV}/bin/aws"
"${FLOWCTL_TEST_PYTHON}" -c "import moto, boto3; print('moto', moto.__version__, 'boto3', boto3.__version__)"

# The SQL tests (tests/sql.rs) and the sql_load benchmark start a real PostgreSQL and a real
# MariaDB of their own in temporary folders (tests/util/databases.rs): they need Debian's server
# binaries (/usr/lib/postgresql/<version>/bin/initdb and postgres; mariadbd and
# mariadb-install-db) and fail, saying to run this script, when they are missing. No service is
# started or configured here.
echo "== database servers for the SQL tests (postgresql, mariadb-server)"
db_packages=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || db_packages+=(postgresql)
{ command -v mariadbd || [ -x /usr/sbin/mariadbd ]; } >/dev/null 2>&1 || db_packages+=(mariadb-server)
if [ "${#db_packages[@]}" -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${db_packages[@]}" >/dev/null
fi
ls /usr/lib/postgresql/*/bin/postgres
{ command -v mariadbd || ls /usr/sbin/mariadbd; } 2>/dev/null

echo "== build"
cargo build --workspace --all-targets --locked

echo "== tests"
# Not under `set -e`: a failure must still reach the closing count below.
set +e
cargo test --workspace --locked 2>&1 | tee "${CARGO_TARGET_DIR}/test-output.txt"
status=${PIPESTATUS[0]}
set -e

# One closing line with the totals of every test binary, so a reader sees the whole count.
passed=$(grep -Eo '[0-9]+ passed' "${CARGO_TARGET_DIR}/test-output.txt" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "${CARGO_TARGET_DIR}/test-output.txt" | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
