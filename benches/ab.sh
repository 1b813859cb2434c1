#!/usr/bin/env bash
# A/B of two banyan binaries on the load benchmark's S1 (pass-through), S2 (20 % sticky
# split) and S3 (S1 plus a 100 % shadow with comparison; at saturation most copies are
# dropped, and how many are compared sways its CPU per request, so S3 also runs paced,
# 4 ms between requests per connection, where every copy is compared), in alternating
# rounds on the same host, to tell whether a change costs speed:
#
#   benches/ab.sh <binary A> <binary B> [seconds per run, default 10] [connections, default 32] [rounds, default 6]
#
# Both proxies run with the same config and routes, one data-path thread on core 0 (only
# the one under load is busy); the upstream (one nginx worker) and wrk share core 1, as in
# load.sh. Each round runs A then B, or B then A on even rounds, for each scenario. The
# summary gives B over A as the geometric mean of the per-round ratios with its 95 %
# interval, for throughput and for the proxy's CPU per request. Everything listens on
# 127.0.0.1 only and is stopped on exit; results also go to benches/results/ab-<time>.md.
set -euo pipefail

A_BIN=$(realpath "$1")
B_BIN=$(realpath "$2")
DURATION=${3:-10}
CONNS=${4:-32}
ROUNDS=${5:-6}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=ab
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
need nginx wrk taskset curl

UP_MONO=18481 UP_ORDERS=18482 A_PORT=18480 A_ADMIN=18490 B_PORT=18580 B_ADMIN=18590
DOC='{"id":42,"status":"shipped","total":12.5}'
mkdir -p "$WORK/up"
json_upstreams "$WORK/up" "$UP_MONO" "$DOC" "$UP_ORDERS" "$DOC"

start() { # name binary port admin: a banyan with the load benchmark's orders route
  mkdir -p "$WORK/$1/config" "$WORK/$1/routes"
  banyan_config "$WORK/$1" "$3" "$4" "$UP_MONO" "$UP_ORDERS"
  orders_route "$WORK/$1/routes/orders.toml"
  mirrored_route > "$WORK/$1/routes/mirrored.toml"
  (cd "$WORK/$1" && exec taskset -c 0 "$2" run > /dev/null 2>&1) & PIDS+=($!)
}
start a "$A_BIN" "$A_PORT" "$A_ADMIN"
A_PID=$!
start b "$B_BIN" "$B_PORT" "$B_ADMIN"
B_PID=$!
wait_http "http://127.0.0.1:$UP_MONO/"
for port in $A_PORT $B_PORT; do
  wait_http "http://127.0.0.1:$port/api/orders/42"
  wait_http "http://127.0.0.1:$port/mirrored/42"
done

users_script "$WORK/users.lua"
printf 'function delay() return 4 end\n' > "$WORK/paced.lua"

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  order="a b"
  [ $((r % 2)) -eq 0 ] && order="b a"
  for who in $order; do
    if [ "$who" = a ]; then port=$A_PORT pid=$A_PID admin=$A_ADMIN; else port=$B_PORT pid=$B_PID admin=$B_ADMIN; fi
    run "s1-$who" "http://127.0.0.1:$port/pass/42" "$pid"
    run "s2-$who" "http://127.0.0.1:$port/api/orders/42" "$pid" -s "$WORK/users.lua"
    # At saturation the share of copies compared sways S3's CPU: count it per run.
    BANYAN_ADMIN=$admin COUNT=shadows_completed run "s3-$who" "http://127.0.0.1:$port/mirrored/42" "$pid"
    run "s3paced-$who" "http://127.0.0.1:$port/mirrored/42" "$pid" -s "$WORK/paced.lua"
  done
done

{
  echo "# banyan A/B, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "A: $A_BIN"
  echo "B: $B_BIN"
  echo "Command: benches/ab.sh A B $DURATION $CONNS $ROUNDS ($(nproc) cores)"
  echo
  table_head
  for s in s1 s2 s3 s3paced; do row "$s-a"; row "$s-b"; done
  echo
  for s in s1 s2 s3 s3paced; do
    echo "- ${s^^} throughput B/A: $(ratio_ci "$WORK/$s-b.rounds" "$WORK/$s-a.rounds" 1)"
    echo "- ${s^^} CPU per request B/A: $(ratio_ci "$WORK/$s-b.rounds" "$WORK/$s-a.rounds" 4)"
  done
  echo "- S3 copies compared per request, median: A $(median "$WORK/s3-a.counted" 1), B $(median "$WORK/s3-b.counted" 1)"
} | tee "$ROOT/benches/results/ab-$(date -u +%Y%m%dT%H%M).md"
