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

# What the tests need, installed where missing (scripts/install-deps.sh, shared with
# scripts/local-pipeline.sh): the virtualenv with aiosmtpd (the alert tests' SMTP server),
# moto[server] (the AWS tests' API, with boto3 as the independent client) and awscli (the S3
# benchmark's comparison), each pinned; Debian's PostgreSQL and MariaDB server programs, which
# tests/util/databases.rs starts in temporary folders. The tests find the virtualenv's programs
# through FLOWCTL_TEST_PYTHON, FLOWCTL_TEST_MOTO and FLOWCTL_TEST_AWS_CLI, and fail, saying to run
# this script, when something is missing.
export FLOWCTL_VENV="${FLOWCTL_VENV:-$HOME/.cache/flowctl-venv}"
echo "== what the tests need (scripts/install-deps.sh)"
scripts/install-deps.sh python databases
export FLOWCTL_TEST_PYTHON="${FLOWCTL_VENV}/bin/python"
export FLOWCTL_TEST_MOTO="${FLOWCTL_VENV}/bin/moto_server"
export FLOWCTL_TEST_AWS_CLI="${FLOWCTL_VENV}/bin/aws"
"${FLOWCTL_TEST_PYTHON}" -c "import aiosmtpd, boto3, moto; print('aiosmtpd', aiosmtpd.__version__, 'moto', moto.__version__, 'boto3', boto3.__version__)"

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
