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

echo "== build"
cargo build --workspace --all-targets --locked

echo "== tests"
cargo test --workspace --locked 2>&1 | tee "${CARGO_TARGET_DIR}/test-output.txt"
status=${PIPESTATUS[0]}

# One closing line with the totals of every test binary, so a reader sees the whole count.
passed=$(grep -Eo '[0-9]+ passed' "${CARGO_TARGET_DIR}/test-output.txt" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "${CARGO_TARGET_DIR}/test-output.txt" | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
