#!/usr/bin/env bash
# Instructions per delivery of a seam-access-sync binary under callgrind (BENCHMARKS.md):
# counters zeroed after 300 warm-up deliveries, then DELIVERIES at CONCURRENCY.
# Usage: benches/profile/callgrind.sh BIN DELIVERIES CONCURRENCY   (env: MODE, SEAM_URL)
set -u
BIN=$1; N=$2; C=$3
DB=postgres://postgres@127.0.0.1:5432/sas_cg
psql -q -d postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS sas_cg WITH (FORCE)" -c "CREATE DATABASE sas_cg" >/dev/null 2>&1
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
rm -f /tmp/cg.out.*
env -u RUST_LOG DATABASE_URL=$DB SEAM_WEBHOOK_SECRET=$SECRET SEAM_API_KEY=seam_bench_key_0123456789 SEAM_API_URL=${SEAM_URL:-http://127.0.0.1:9} \
  APP_SERVER__RUN_MODE=${MODE:-server} LISTEN_ADDR=127.0.0.1:18081 APP_LOG__FORMAT=json APP_IMPORT__ON_START=false \
  valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out.%p $BIN serve > /tmp/cg-service.log 2>&1 &
PID=$!
for i in $(seq 600); do curl -sf http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.1; done
node "$(dirname "$0")/load.mjs" http://127.0.0.1:18081/webhooks/seam $SECRET 300 8 >/dev/null
sleep 1
callgrind_control -z $PID >/dev/null
node "$(dirname "$0")/load.mjs" http://127.0.0.1:18081/webhooks/seam $SECRET $N $C
sleep ${DRAIN:-1}
callgrind_control -d $PID >/dev/null
sleep 1
kill $PID; wait $PID 2>/dev/null

f=$(ls -S /tmp/cg.out.$PID* 2>/dev/null | head -1)
ir=$(callgrind_annotate $f 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
echo "file=$f ir_total=$ir ir_per_delivery=$((ir / N))"
