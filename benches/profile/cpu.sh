#!/usr/bin/env bash
# CPU per delivery of a seam-access-sync binary, intake only (BENCHMARKS.md, "All of it").
# Usage: benches/profile/cpu.sh BIN DELIVERIES CONCURRENCY [perf]
#   env: MODE (server|all), DBOPTS (e.g. "?sslmode=disable"), SEAM_URL, APP_* settings.
# With MODE=all and no SEAM_URL it starts seam.mjs (a Seam answering at once) and
# measures end to end: the CPU until the queue has drained, and the Seam calls made.
# Starts BIN on a throwaway database sas_prof (dropped and made again), sends signed
# deliveries with load.mjs (Node), prints the generator's rate and latency, the
# service's utime+stime ÷ deliveries and its threads' context switches ÷ deliveries;
# with "perf", records `perf record -e cpu-clock -g` to /tmp/perf.data meanwhile.
set -u
BIN=$1; N=$2; C=$3; PERF=${4:-}
DB=postgres://postgres@127.0.0.1:5432/sas_prof${DBOPTS:-}
psql -q -d postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS sas_prof WITH (FORCE)" -c "CREATE DATABASE sas_prof" >/dev/null
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
SEAM_PID=
if [ "${MODE:-server}" = all ] && [ -z "${SEAM_URL:-}" ]; then
  node "$(dirname "$0")/seam.mjs" 18090 & SEAM_PID=$!; SEAM_URL=http://127.0.0.1:18090; sleep 0.3
fi
env -u RUST_LOG DATABASE_URL=$DB SEAM_WEBHOOK_SECRET=$SECRET SEAM_API_KEY=seam_bench_key_0123456789 SEAM_API_URL=${SEAM_URL:-http://127.0.0.1:9} \
  APP_SERVER__RUN_MODE=${MODE:-server} LISTEN_ADDR=127.0.0.1:18080 APP_LOG__FORMAT=json APP_IMPORT__ON_START=false $BIN serve > /tmp/prof-service.log 2>&1 &
PID=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:18080/readyz >/dev/null && break; sleep 0.1; done
node "$(dirname "$0")/load.mjs" http://127.0.0.1:18080/webhooks/seam $SECRET 1000 8 >/dev/null
cpu() { awk "{print \$14+\$15}" /proc/$PID/stat; }; ut() { awk "{print \$14, \$15}" /proc/$PID/stat; }
# Context switches, voluntary and not, summed over the process's threads.
switches() { cat /proc/$PID/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
c0=$(cpu); s0=$(switches); echo "utime stime ticks before: $(ut)"
if [ -n "$PERF" ]; then perf record -e cpu-clock -g -p $PID -o /tmp/perf.data 2>/dev/null & PP=$!; sleep 0.5; fi
node "$(dirname "$0")/load.mjs" http://127.0.0.1:18080/webhooks/seam $SECRET $N $C
if [ "${MODE:-server}" = all ]; then
  # End to end: wait for the worker to drain the queue.
  for i in $(seq 600); do
    left=$(psql -tAq -d "${DB%%\?*}" -c "SELECT count(*) FROM access_code_refetches WHERE dead_lettered_at IS NULL")
    [ "$left" = 0 ] && break; sleep 0.1
  done
  [ -n "$SEAM_PID" ] && echo "seam_calls=$(curl -s $SEAM_URL/calls)"
fi
c1=$(cpu); s1=$(switches); echo "utime stime ticks after: $(ut)"
if [ -n "$PERF" ]; then kill -INT $PP; wait $PP; fi
echo "cpu_us_per_delivery=$(( (c1-c0)*10000 / N ))"
echo "context_switches_per_delivery=$(awk "BEGIN {printf \"%.2f\", ($s1-$s0)/$N}")"
kill $PID; wait $PID
[ -n "$SEAM_PID" ] && kill $SEAM_PID
