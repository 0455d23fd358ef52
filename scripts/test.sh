#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this project's kind: installs what the tests need,
# then runs every test of every crate. `.ci/run` calls this script; so should you.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowctl-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# -- the leak check: nothing the tests start may outlive them.
#
# A process counts as the suite's when it was not running when the suite started (the processes
# matching below before it are recorded first, by pid and start time, and never counted) and it
# carries this run's tag in its environment (everything the tests start inherits it), or an
# attempt's tag (FLOWCTL_ATTEMPT_ID), or runs for a test home, or is one of the programs the tests
# start, named by its command line: the stand-ins, moto_server, the SMTP servers, the databases
# in temporary folders, flowctl and the test binaries of this build, the tests' `sh` guards.
export FLOWCTL_TEST_SUITE="$$.${EPOCHSECONDS:-$(date +%s)}"
leak_before=" "
suite_processes=()

# Fills suite_processes with "pid start ppid tagged command" for each matching process, without
# forking, so it can run often and counts nothing of its own but this shell.
find_suite_processes() {
  suite_processes=()
  local dir pid stat rest cmdline env tagged matched
  local -a fields args environ
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" != "$$" ] || continue
    { read -r stat <"$dir/stat"; } 2>/dev/null || continue
    rest=${stat##*) }
    read -r -a fields <<<"$rest"
    # Zombies are dead already: they only wait for their parent (or init) to reap them.
    [ "${fields[0]}" != Z ] || continue
    { mapfile -d '' args <"$dir/cmdline"; } 2>/dev/null || continue
    [ "${#args[@]}" -gt 0 ] || continue
    cmdline="${args[*]}"
    { mapfile -d '' environ <"$dir/environ"; } 2>/dev/null || environ=()
    tagged=no
    matched=no
    for env in "${environ[@]}"; do
      case "$env" in
        "FLOWCTL_TEST_SUITE=$FLOWCTL_TEST_SUITE") tagged=yes; matched=yes ;;
        FLOWCTL_ATTEMPT_ID=* | FLOWCTL_HOME=/tmp/flowctl-test-*) matched=yes ;;
      esac
    done
    case "$cmdline" in
      *scripts/standins/* | *moto_server* | *smtp_server.py* | *aiosmtpd* \
        | *mariadbd*--datadir=/tmp/* | *postgres*" -D /tmp/"* | *"/flowctl server"* \
        | "$CARGO_TARGET_DIR"/* | *'cat >/dev/null'*'kill -TERM'*) matched=yes ;;
    esac
    [ "$matched" = yes ] || continue
    # fields[1] is the parent's pid, fields[19] the start time (stat's 4th and 22nd fields).
    suite_processes+=("$pid ${fields[19]:-0} ${fields[1]:-0} $tagged $cmdline")
  done
}

find_suite_processes
for entry in "${suite_processes[@]}"; do
  read -r pid start _ <<<"$entry"
  leak_before+="$pid:$start "
done

# The suite's processes still running now, in `leaked`.
find_leaks() {
  leaked=()
  local entry pid start
  find_suite_processes
  for entry in "${suite_processes[@]}"; do
    read -r pid start _ <<<"$entry"
    [[ "$leak_before" == *" $pid:$start "* ]] || leaked+=("$entry")
  done
}

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
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "${CARGO_TARGET_DIR}/test-output.txt"
status=${PIPESTATUS[0]}
set -e

# Nothing may be left: the tests stop what they start, and the servers a test binary shares stop
# as it exits. A process still stopping gets a moment: the check looks again until it is gone,
# for at most 20 seconds, then fails the run naming each process left, and kills those that
# carry this run's tag (certainly the suite's), so they hold nothing, such as the cargo lock an
# orphan inherits.
echo "== processes left by the tests"
leak_deadline=$((SECONDS + 20))
find_leaks
while [ "${#leaked[@]}" -gt 0 ] && [ "$SECONDS" -lt "$leak_deadline" ]; do
  sleep 0.2
  find_leaks
done
if [ "${#leaked[@]}" -eq 0 ]; then
  echo "none"
else
  echo "error: ${#leaked[@]} processes started by the tests are still running:" >&2
  for entry in "${leaked[@]}"; do
    read -r pid start ppid tagged cmdline <<<"$entry"
    echo "  pid $pid (parent $ppid): $cmdline" >&2
    [ "$tagged" = no ] || kill -KILL "$pid" 2>/dev/null || true
  done
  [ "$status" -ne 0 ] || status=1
fi

# One closing line with the totals of every test binary, so a reader sees the whole count.
passed=$(grep -Eo '[0-9]+ passed' "${CARGO_TARGET_DIR}/test-output.txt" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "${CARGO_TARGET_DIR}/test-output.txt" | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
