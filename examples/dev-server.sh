#!/usr/bin/env bash
# What `make run` runs: an rrdcached for the example's RRD files, then mondemand-server on examples/routes.ini.
# Everything lives under var/ in the repository. Ctrl-C stops the server (it drains and flushes through
# rrdcached), then rrdcached, which writes out what it still holds.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
mkdir -p var/rrd var/run/rrdcached-journal var/journal var/stats var/logs
if [ -f var/run/rrdcached.pid ] && kill -0 "$(cat var/run/rrdcached.pid)" 2>/dev/null; then
  echo "rrdcached already running (var/run/rrdcached.pid)"
else
  rm -f var/run/rrdcached.sock var/run/rrdcached.pid
  # setsid: Ctrl-C reaches the server only, so rrdcached is still there while the server drains.
  setsid rrdcached -l "unix:$PWD/var/run/rrdcached.sock" -p "$PWD/var/run/rrdcached.pid" \
    -j "$PWD/var/run/rrdcached-journal" -b "$PWD/var/rrd" -B -F -w 300 -z 60 -f 3600 </dev/null
  for _ in $(seq 50); do [ -S var/run/rrdcached.sock ] && break; sleep 0.1; done
fi
stop_rrdcached() {  # it writes out what it holds, then exits: wait for that
  local pid
  pid=$(cat var/run/rrdcached.pid 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "rrdcached ($pid) still running after 10 s" >&2
}
trap stop_rrdcached EXIT
# The server runs in the background so that this shell can pass Ctrl-C or SIGTERM on to it and wait
# for it to drain before rrdcached goes.
"$BIN/mondemand-server" -c examples/routes.ini "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true' INT TERM
status=0
wait "$server" || status=$?
if kill -0 "$server" 2>/dev/null; then  # the wait was cut short by a signal: wait for the drain
  status=0
  wait "$server" || status=$?
fi
exit "$status"
