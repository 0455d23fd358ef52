#!/usr/bin/env bash
# Stops the stand-ins scripts/standins/start.sh started in DIR: exactly the processes listed in
# DIR/pids, each sent SIGTERM, then SIGKILL for any still there after 10 seconds.
#
#   scripts/standins/stop.sh DIR
set -uo pipefail

dir=${1:?usage: stop.sh DIR}
[ -f "$dir/pids" ] || exit 0
pids=$(cat "$dir/pids")
for pid in $pids; do
  kill -TERM "$pid" 2>/dev/null
done
end=$((SECONDS + 10))
for pid in $pids; do
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $end ]; then
      kill -KILL "$pid" 2>/dev/null
      break
    fi
    sleep 0.1
  done
done
: >"$dir/pids"
